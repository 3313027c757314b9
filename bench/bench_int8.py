"""int8 encoding end to end on NFCorpus test, as a user sees it: sentence-transformers fp32 (the baseline),
textcl fp32 and textcl int8 (and sentence-transformers' ONNX int8 backend where it installs), in ONE process,
interleaved (A B C A B C ...), >= 3 repeats, same threads; wall time median and spread per method.

End to end = encode every document (title + " " + text) and every test query, then exact top-10 search.
The one-time int8 export (ONNX export + quantization + quality guard, cached per model fingerprint and
calibration sample) runs once before timing, in a fresh cache, and is its own column. CPU-seconds are a
secondary column (process_time also counts OpenMP threads spinning). The ceilings compared against are
measured in the same run, before and after the timed rows: an NNCF-quantized int8 MatMul in OpenVINO (the
runtime textcl's int8 uses) and a torch fp32 matmul, both at the model's FFN shape.

    .venv/bin/python bench/bench_int8.py --docs 1000 --repeats 5     # one record in bench/records/int8.jsonl
    .venv/bin/python bench/bench_int8.py --table                      # from the records alone
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_encode import matmul_ceiling, model_flops, ndcg10, nfcorpus_test
from common import ROOT, append_record, provenance  # first: sets up sys.path and env

from textcl import int8
from textcl.knn import exact_search
from textcl.models import Encoder, load_model, resolve_model_path
from textcl.types import plan_encoding

ST_FP32 = "sentence-transformers fp32 (`encode`)"
TC_FP32 = "textcl fp32 (`Encoder(precision='fp32')`)"
TC_BF16 = "textcl bf16 (`Encoder(precision='bf16')`)"
TC_INT8 = "textcl int8 (`Encoder(precision='int8')`)"
ST_ONNX = "sentence-transformers ONNX int8 backend"
RECORDS = ROOT / "bench" / "records" / "int8.jsonl"
# How textcl's int8 was chosen (OpenVINO + NNCF static int8 against ONNX Runtime dynamic/static int8) was
# measured by probes outside this script; they are not printed here (this script prints only what it measures).


def cpu_flags() -> str:
    """The CPU's int8 / bf16 relevant instruction-set flags, as /proc/cpuinfo spells them."""
    wanted = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    have = [f for f in wanted if f in flags]
    missing = [f for f in wanted if f not in flags]
    return f"{' '.join(have) or 'none'} (absent: {' '.join(missing) or 'none'})"


def int8_matmul_ceiling(m: int, k: int, n: int, seconds: float = 3.0) -> tuple[float, float]:
    """int8 matmul ops/s (wall, per CPU-second x threads) in OpenVINO, the runtime textcl's int8 uses:
    an [m,k] fp32 input quantized to int8 (FakeQuantize) times an int8 [k,n] weight, as NNCF builds it."""
    import nncf
    import openvino as ov
    from openvino import opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([m, k], np.float32, name="x")
    w = ops.constant(rng.standard_normal((n, k)).astype(np.float32))
    fp32 = ov.Model([ops.matmul(x, w, False, True)], [x], "mm")
    calib = nncf.Dataset([rng.standard_normal((m, k)).astype(np.float32)])
    with contextlib.redirect_stdout(io.StringIO()):
        quantized = nncf.quantize(fp32, calib, subset_size=1)
    compiled = ov.Core().compile_model(quantized, "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads(),
                                                          "PERFORMANCE_HINT": "LATENCY"})
    a = rng.standard_normal((m, k)).astype(np.float32)
    for _ in range(3):
        compiled(a)
    reps, w0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - w0 < seconds:
        compiled(a)
        reps += 1
    w, c = time.perf_counter() - w0, time.process_time() - c0
    ops = 2.0 * m * k * n * reps
    return ops / w, ops / c * torch.get_num_threads()


def st_onnx_int8(model_path: str):
    """sentence-transformers' ONNX backend with its int8 export, or the reason it cannot run here."""
    try:
        import optimum.onnxruntime  # noqa: F401  (optional: only to see whether ST's ONNX backend can load)
        from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model
    except ImportError as exc:
        return None, (f"not run: its ONNX backend needs `optimum` ({exc.name} missing); `pip install --dry-run "
                      "optimum[onnxruntime]` on this stack would install transformers 4.57.6 over 5.24 "
                      "(optimum-onnx pins transformers<4.58), so it is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        model = SentenceTransformer(model_path, backend="onnx", device="cpu")
        model.save(tmp)
        export_dynamic_quantized_onnx_model(model, "avx512_vnni", tmp)
        quantized = SentenceTransformer(tmp, backend="onnx", device="cpu",
                                        model_kwargs={"file_name": "onnx/model_qint8_avx512_vnni.onnx"})
    return quantized, ""


def end_to_end(encode_docs, encode_queries, n_docs: int) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Wall and CPU seconds of encode(docs) + encode(queries) + exact top-10, and both embedding sets."""
    w0, c0 = time.perf_counter(), time.process_time()
    d = np.asarray(encode_docs(), dtype=np.float32)
    q = np.asarray(encode_queries(), dtype=np.float32)
    exact_search(q, d, 10)
    assert len(d) == n_docs
    return time.perf_counter() - w0, time.process_time() - c0, d, q


def _methods(model, docs, queries, enc32, enc16, enc8, st_onnx) -> dict:
    methods = {
        ST_FP32: (lambda: model.encode(docs, normalize_embeddings=True),
                  lambda: model.encode(queries, normalize_embeddings=True)),
        TC_FP32: (lambda: enc32(docs, "document"), lambda: enc32(queries, "query")),
        TC_BF16: (lambda: enc16(docs, "document"), lambda: enc16(queries, "query")),
        TC_INT8: (lambda: enc8(docs, "document"), lambda: enc8(queries, "query")),
    }
    if st_onnx is not None:
        methods[ST_ONNX] = (lambda: st_onnx.encode(docs, normalize_embeddings=True),
                            lambda: st_onnx.encode(queries, normalize_embeddings=True))
    model.encode(docs[:16])  # warm-up: thread pools, first-call allocations (int8: the compiled model)
    enc32(docs[:16])
    enc16(docs[:16])
    enc8(docs[:16])
    if st_onnx is not None:
        st_onnx.encode(docs[:16])
    return methods


def _ceilings() -> dict:
    return {"int8_ops_s": int8_matmul_ceiling(16384, 384, 1536)[0],
            "fp32_flops_s": matmul_ceiling(16384, 384, 1536, torch.float32)[0],
            "bf16_flops_s": matmul_ceiling(16384, 384, 1536, torch.bfloat16)[0]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["quick", "full"], default="full", help="bench/run_all.py: quick = 300 "
                        "documents, full = 1000 (unless --docs)")
    parser.add_argument("--out", default=None, help="also write the table here (bench/run_all.py)")
    parser.add_argument("--docs", type=int, default=None, help="documents encoded per repeat (0 = all 3,633)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (>= 3)")
    parser.add_argument("--table", action="store_true", help="print the table from the records and exit")
    parser.add_argument("--records", default=str(RECORDS), help="the record file appended to")
    args = parser.parse_args()
    if args.table:
        print("\n".join(table([json.loads(x) for x in Path(args.records).read_text().splitlines() if x.strip()])))
        return 0
    int8.require()
    load_before = os.getloadavg()[0]
    n_docs = args.docs if args.docs is not None else (300 if args.mode == "quick" else 1000)
    rset, doc_ids, docs, qids, queries = nfcorpus_test(n_docs or None)
    path = resolve_model_path("all-MiniLM-L6-v2")
    model = load_model(path, device="cpu")
    cfg = model[0].auto_model.config
    lengths = np.array([len(x) for x in model.tokenizer(docs, truncation=True, max_length=model.max_seq_length)
                        ["input_ids"]])
    flops = model_flops(lengths, cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size)
    # No embedding cache (every row encodes); the export goes to a fresh default cache root, so it is cold.
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="textcl-int8-bench-")
    enc32 = Encoder(model, precision="fp32", show_progress=False)
    enc16 = Encoder(model, precision="bf16", show_progress=False)
    enc8 = Encoder(model, precision="int8", show_progress=False)
    # The one-time export + quantization + guard, as the CLI's evaluation gets it: the run says what it will
    # encode (documents and queries), then encodes the queries first, as eval and mining do.
    t0 = time.perf_counter()
    plan_encoding(enc8, {"document": docs, "query": queries})
    enc8(queries[:1], "query")
    export_s = time.perf_counter() - t0
    st_onnx, st_onnx_note = st_onnx_int8(path)
    methods = _methods(model, docs, queries, enc32, enc16, enc8, st_onnx)
    ceilings = [_ceilings()]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    emb: dict = {}
    for rep in range(args.repeats):  # interleaved: every method once per round, the same order each round
        for name, (encode_docs, encode_queries) in methods.items():
            wall, cpu, d, q = end_to_end(encode_docs, encode_queries, len(docs))
            times[name].append((wall, cpu))
            emb[name] = (d, q)
            print(f"round {rep + 1}: {name}: {len(docs) / wall:.1f} docs/s end to end ({wall:.1f} s)", flush=True)
    ceilings.append(_ceilings())
    ref = emb[TC_FP32][0]
    rows = {name: {"wall_s": [w for w, _ in times[name]], "cpu_s": [c for _, c in times[name]],
                   "ndcg10": ndcg10(rset, doc_ids, *emb[name], qids),
                   "cosine_to_fp32": [float(np.sum(emb[name][0] * ref, axis=1).mean()),
                                      float(np.sum(emb[name][0] * ref, axis=1).min())]} for name in methods}
    guard = {k: v for k, v in enc8.int8_report.items() if k != "folder"}
    record = append_record(args.records, {
        "docs": len(docs), "queries": len(queries), "doc_tokens": int(lengths.sum()), "max_seq_length": model.max_seq_length,
        "threads": torch.get_num_threads(), "repeats": args.repeats, "rows": rows, "export_s": export_s,
        "st_onnx": st_onnx_note or "run", "guard": guard, "model_flops": flops, "ceilings": ceilings,
        "method": int8.METHOD, "cpu_flags": cpu_flags(), "load_before": load_before,
        "load_after": os.getloadavg()[0]})
    lines = table([record])
    print("\n".join(lines))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


def _median_spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"


def table(records: list[dict]) -> list[str]:
    """Markdown from the last record: per method, wall seconds and docs/s (median, min-max over interleaved
    repeats), the ratio of medians to sentence-transformers fp32, CPU docs/s, nDCG@10, cosine to textcl fp32 and
    the share of each ceiling; the one-time export in its own line."""
    r = records[-1]
    n, base = r["docs"], statistics.median(r["rows"][ST_FP32]["wall_s"])
    int8_ceil = max(c["int8_ops_s"] for c in r["ceilings"])
    fp32_ceil = max(c["fp32_flops_s"] for c in r["ceilings"])
    bf16_ceil = max((c.get("bf16_flops_s", 0.0) for c in r["ceilings"]), default=0.0)
    ceiling = {ST_FP32: fp32_ceil, TC_FP32: fp32_ceil, TC_BF16: bf16_ceil}  # int8: no ceiling (see below)
    lines = ["## int8 encoding end to end (NFCorpus test)", "",
             f"{n} documents + {r['queries']} queries per repeat (encode both + exact top-10; {r['doc_tokens']} document "
             f"tokens after truncation to {r['max_seq_length']}), bundled all-MiniLM-L6-v2, {r['threads']} threads, "
             f"{r['repeats']} interleaved repeats in one process. Command: `{r['command']}`.", "",
             "| method | wall s, median (min-max) | docs/s (wall, median) | x ST fp32 (wall) | docs/s per CPU-s | "
             "nDCG@10 | cosine to textcl fp32 (mean / min) | model TFLOP/s (share of its precision's matmul) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in r["rows"].items():
        wall = statistics.median(row["wall_s"])
        cpu = statistics.median(row["cpu_s"])
        achieved = r["model_flops"] / wall
        share = f" ({achieved / ceiling[name]:.0%})" if ceiling.get(name) else ""
        lines.append(f"| {name} | {_median_spread(row['wall_s'])} | {n / wall:.1f} | {base / wall:.2f} | "
                     f"{n / cpu * r['threads']:.1f} | {100 * row['ndcg10']:.2f} | {row['cosine_to_fp32'][0]:.4f} / "
                     f"{row['cosine_to_fp32'][1]:.4f} | {achieved / 1e12:.3f}{share} |")
    if r["st_onnx"] != "run":
        lines.append(f"| {ST_ONNX} | {r['st_onnx']} | | | | | | |")
    g = r["guard"]
    lines += ["", f"One-time int8 export + quantization + quality guard (cold cache, before the timed rows): "
                  f"{r['export_s']:.1f} s; cached per model fingerprint and calibration sample afterwards. Guard on "
                  f"{g.get('texts')} documents and queries: cosine to fp32 mean {g.get('mean_cosine', float('nan')):.4f}, "
                  f"min {g.get('min_cosine', float('nan')):.4f} ({'passed' if g.get('passed') else 'FAILED'}).",
              "", f"Matmul throughput at the model's FFN shape (16384x384 @ 384x1536), measured in the same run before and "
                  f"after the timed rows (best of the two): fp32 {fp32_ceil / 1e12:.3f} and bf16 "
                  f"{bf16_ceil / 1e12:.3f} TFLOP/s (torch), the ceiling of the float rows of that precision; int8 "
                  f"{int8_ceil / 1e12:.3f} TOP/s (an NNCF-quantized MatMul in OpenVINO). The int8 micro-benchmark runs "
                  "slower than the model's own int8 path, so it is no ceiling and no share is claimed for int8. Model "
                  f"work = the real document tokens' FLOPs ({r['model_flops'] / 1e12:.2f} T). CPU flags: {r['cpu_flags']}. "
                  f"int8 method: {r['method']}.", "",
              provenance([r])]
    return lines


if __name__ == "__main__":
    sys.exit(main())
