"""Encoding throughput: textcl's Encoder vs sentence-transformers' `encode` on the NFCorpus corpus.

One run, same documents (title + " " + text), same model (bundled all-MiniLM-L6-v2, max_seq_length 256):
ST fp32 default, ST bf16 autocast, ST bf16 weights, textcl fp32, textcl bf16. Reports docs/s (wall and
per CPU-second, since the machine may be shared), ratios, nDCG@10 of fp32 vs bf16 embeddings, and the
share of a matmul ceiling measured in the same run at the model's shapes (bf16 where the CPU has bf16
instructions, else fp32: the fastest matmul the machine offers).

    python bench/bench_encode.py --mode quick|full --out bench/results/encode.md
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import numpy as np
import torch
from common import (  # first: sets up sys.path and env
    BF16_SKIPPED,
    ROOT,
    bench_precision,
    bf16_rows,
    write_section,
)
from common import NFCORPUS as DATA

from textcl.data.io import load_beir
from textcl.eval.metrics import evaluate_run, mean_metrics
from textcl.knn import exact_search
from textcl.models import Encoder, load_model
from textcl.types import RetrievalSet


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Best wall time and the CPU time of that repeat (process-wide, all threads)."""
    best = (float("inf"), float("inf"), None)
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        if w < best[0]:
            best = (w, c, out)
    return best


def matmul_ceiling(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 3.0) -> tuple[float, float]:
    """Matmul FLOP/s (wall, per CPU-second x threads) at [m,k] @ [k,n] in `dtype`: the compute ceiling."""
    a = torch.randn(m, k, dtype=dtype)
    b = torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    reps, w0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - w0 < seconds:
        a @ b
        reps += 1
    w, c = time.perf_counter() - w0, time.process_time() - c0
    flops = 2.0 * m * k * n * reps
    return flops / w, flops / c * torch.get_num_threads()


def model_flops(lengths: np.ndarray, layers: int, hidden: int, ffn: int) -> float:
    """Useful forward FLOPs for the real (unpadded) token counts: dense layers plus attention."""
    tokens = float(lengths.sum())
    dense = 2.0 * tokens * (4 * hidden * hidden + 2 * hidden * ffn)
    attention = 2.0 * 2.0 * float((lengths.astype(np.float64) ** 2).sum()) * hidden
    return layers * (dense + attention)


def ndcg10(rset: RetrievalSet, doc_ids: list[str], d_emb: np.ndarray, q_emb: np.ndarray, qids: list[str]) -> float:
    scores, idx = exact_search(q_emb, d_emb, 10)
    run = {q: {doc_ids[i]: float(s) for s, i in zip(scores[r], idx[r]) if i >= 0} for r, q in enumerate(qids)}
    return mean_metrics(evaluate_run(rset.qrels, run, [10]))["ndcg@10"]


def subset(rset: RetrievalSet, n_docs: int) -> RetrievalSet:
    keep = dict(list(rset.corpus.items())[:n_docs])
    qrels = {q: {d: g for d, g in docs.items() if d in keep} for q, docs in rset.qrels.items()}
    qrels = {q: docs for q, docs in qrels.items() if any(g > 0 for g in docs.values())}
    return RetrievalSet(rset.name, keep, {q: rset.queries[q] for q in qrels}, qrels, rset.split)


def nfcorpus_test(n_docs: int | None) -> tuple[RetrievalSet, list[str], list[str], list[str], list[str]]:
    """NFCorpus test (the first `n_docs` documents if given): set, doc ids, doc texts, query ids, query texts."""
    rset = load_beir(DATA, "test")
    if n_docs:
        rset = subset(rset, n_docs)
    doc_ids = list(rset.corpus)
    qids = list(rset.qrels)
    return rset, doc_ids, [rset.corpus[d].full_text for d in doc_ids], qids, [rset.queries[q] for q in qids]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["quick", "full"], default="quick")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "encode.md"))
    parser.add_argument("--docs", type=int, default=None, help="override the number of documents")
    parser.add_argument("--repeats", type=int, default=2, help="round-robin repeats (best of)")
    args = parser.parse_args()
    n_docs = args.docs or (1000 if args.mode == "quick" else None)
    repeats = args.repeats
    with_bf16 = bf16_rows(args.mode)

    rset, doc_ids, docs, qids, queries = nfcorpus_test(n_docs)

    model = load_model("all-MiniLM-L6-v2", device="cpu")
    cfg = model[0].auto_model.config
    lengths = np.array([len(x) for x in model.tokenizer(docs, truncation=True, max_length=model.max_seq_length)
                        ["input_ids"]])
    flops = model_flops(lengths, cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size)
    model_bf16 = copy.deepcopy(model).to(torch.bfloat16)
    enc32 = Encoder(model, precision="fp32", show_progress=False)
    enc16 = Encoder(model, precision="bf16", show_progress=False)
    warm = docs[:16]
    for fn in (lambda: model.encode(warm), lambda: enc32(warm)) + (
            (lambda: model_bf16.encode(warm), lambda: enc16(warm)) if with_bf16 else ()):
        fn()

    def st_autocast():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model.encode(docs, normalize_embeddings=True)

    methods = {
        "sentence-transformers fp32 (`encode`, defaults)": lambda: model.encode(docs, normalize_embeddings=True),
        "sentence-transformers bf16 autocast": st_autocast,
        "sentence-transformers bf16 weights (`model.to(bfloat16)`)":
            lambda: model_bf16.encode(docs, normalize_embeddings=True).astype(np.float32),
        "textcl fp32 (`Encoder(precision='fp32')`)": lambda: enc32(docs, "document"),
        "textcl bf16 (`Encoder(precision='bf16')`)": lambda: enc16(docs, "document"),
    }
    if not with_bf16:
        methods = {name: fn for name, fn in methods.items() if "bf16" not in name}
    ceil_name = bench_precision()  # the machine's fast matmul dtype
    ceil_dtype = torch.bfloat16 if ceil_name == "bf16" else torch.float32
    ceil_before = matmul_ceiling(16384, 384, 1536, ceil_dtype)
    results: dict = {}
    # Round-robin repeats, best of each: load from other jobs drifts, interleaving spreads it evenly.
    for _ in range(repeats):
        for name, fn in methods.items():
            wall, cpu, emb = timed(fn, 1)
            if name not in results or wall < results[name][0]:
                results[name] = (wall, cpu, np.asarray(emb, dtype=np.float32))
            print(f"{name}: {len(docs) / wall:.1f} docs/s", flush=True)
    ceil_after = matmul_ceiling(16384, 384, 1536, ceil_dtype)
    ceil_wall = max(ceil_before[0], ceil_after[0])
    ceil_cpu = max(ceil_before[1], ceil_after[1])

    q32 = enc32(queries, "query")
    nd32 = ndcg10(rset, doc_ids, results["textcl fp32 (`Encoder(precision='fp32')`)"][2], q32, qids)
    nd_st = ndcg10(rset, doc_ids, results["sentence-transformers fp32 (`encode`, defaults)"][2], q32, qids)
    nd16 = (ndcg10(rset, doc_ids, results["textcl bf16 (`Encoder(precision='bf16')`)"][2], enc16(queries, "query"),
                   qids) if with_bf16 else None)

    threads = torch.get_num_threads()
    base = results["sentence-transformers fp32 (`encode`, defaults)"]
    best_st16 = min((results[k] for k in results if k.startswith("sentence-transformers bf16")),
                    key=lambda r: r[0], default=None)
    lines = [
        "## Encoding throughput (NFCorpus corpus)", "",
        f"Command: `python bench/bench_encode.py --mode {args.mode}"
        f"{f' --docs {args.docs}' if args.docs else ''}` ({len(docs)} documents, "
        f"{int(lengths.sum())} tokens after truncation to {model.max_seq_length}, mean {lengths.mean():.0f}; "
        f"bundled all-MiniLM-L6-v2; {threads} threads; best of {repeats} round-robin repeats, in one process).", "",
        "CPU docs/s = documents per CPU-second x threads: the machine is shared with other jobs, so wall "
        "numbers are noisy; CPU-normalised numbers are less sensitive to that.", "",
        "| method | docs/s (wall) | x ST fp32 | x best ST bf16 | docs/s (CPU) | x ST fp32 (CPU) | "
        f"share of {ceil_name} matmul ceiling (wall / CPU) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (wall, cpu, _) in results.items():
        lines.append(
            f"| {name} | {len(docs) / wall:.1f} | {base[0] / wall:.2f} | "
            f"{f'{best_st16[0] / wall:.2f}' if best_st16 else 'not run'} | "
            f"{len(docs) / cpu * threads:.1f} | {base[1] / cpu:.2f} | "
            f"{flops / wall / ceil_wall:.0%} / {flops / cpu * threads / ceil_cpu:.0%} |")
    lines += [
        "",
        f"{ceil_name} matmul ceiling (16384x384 @ 384x1536, best of before/after): {ceil_wall / 1e12:.3f} TFLOP/s wall, "
        f"{ceil_cpu / 1e12:.3f} TFLOP/s per CPU-second x threads. Model work counted as useful FLOPs of the "
        f"real token counts ({flops / 1e12:.2f} TFLOP: dense layers + attention, no padding).", "",
        f"nDCG@10 ({'subset: first ' + str(len(docs)) + ' documents, ' if n_docs else ''}{len(qids)} queries): "
        f"textcl fp32 {100 * nd32:.2f}, "
        + (f"textcl bf16 {100 * nd16:.2f} (difference {100 * (nd16 - nd32):+.2f}), " if nd16 is not None else "")
        + f"sentence-transformers fp32 {100 * nd_st:.2f}.", "",
    ]
    if not with_bf16:
        lines += [BF16_SKIPPED, ""]
    write_section(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
