"""Hard-negative mining on NFCorpus train: textcl `mine` vs sentence-transformers' `mine_hard_negatives`.

Same model (bundled all-MiniLM-L6-v2, max_seq_length 256, one precision for both: bf16 where the CPU has
bf16 instructions, else fp32), same queries, positives
(all train qrels, grade > 0) and candidate corpus (every NFCorpus document), in ONE run:
- cold: model load + encoding + search + selection, empty embedding caches;
- warm: the same again with the embedding caches filled (textcl `Encoder(cache_dir=...)`, ST
  `cache_folder=...`);
- ST is run with its documented defaults and, for the rows-lost comparison, with its recommended
  NV-Retriever settings (relative_margin=0.05, cache warm). textcl runs with its defaults.
False negatives by id: a mined negative whose text belongs to a document that is a train-qrels
positive of that query. Rows lost: ST input rows are (query, positive) pairs; textcl rows are queries.

    .venv/bin/python bench/bench_mine.py --mode full --out bench/results/mine.md
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections import defaultdict

from common import NFCORPUS, ROOT, append_record, bench_precision, write_section  # first: sys.path, env

from textcl.config import MiningConfig
from textcl.data.io import load_beir
from textcl.mine import mine
from textcl.models import Encoder, load_model, resolve_model_path
from textcl.types import RetrievalSet

SEQ, SEED = 256, 42
PRECISION = bench_precision()
QUICK_CORPUS = " (quick mode: every document these queries judge, then the corpus's first others)"
log = logging.getLogger("bench_mine")


def subset(rset: RetrievalSet, n_queries: int | None, n_docs: int | None = None) -> RetrievalSet:
    """The first `n_queries` queries; with `n_docs`, a corpus of every document they judge, topped up
    with the corpus's first other documents to `n_docs` (encoding the corpus dominates the run)."""
    if n_queries is None:
        return rset
    keep = list(rset.queries)[:n_queries]
    corpus = rset.corpus
    if n_docs is not None:
        judged = {d for q in keep for d in rset.qrels[q]}
        others = set([d for d in rset.corpus if d not in judged][:max(0, n_docs - len(judged))])
        corpus = {d: doc for d, doc in rset.corpus.items() if d in judged or d in others}
    return RetrievalSet(rset.name, corpus, {q: rset.queries[q] for q in keep},
                        {q: rset.qrels[q] for q in keep}, rset.split, rset.meta)


def textcl_run(rset: RetrievalSet, cache: str, precision: str = PRECISION) -> tuple[float, dict]:
    """Cold when `cache` is empty; at int8 that includes the one-time export, quantization and guard."""
    t0 = time.perf_counter()
    model = load_model(resolve_model_path("all-MiniLM-L6-v2"), device="cpu", max_seq_length=SEQ)
    enc = Encoder(model, precision=precision, batch_size=64, cache_dir=cache, show_progress=False)
    examples, stats = mine(rset, enc, MiningConfig(), seed=SEED, progress=False)
    wall = time.perf_counter() - t0
    fn = sum(1 for ex in examples for d in ex.negative_ids if rset.qrels[ex.query_id].get(d, 0) > 0)
    return wall, {"rows_in": len(examples), "rows_out": len(examples), "with_neg": stats.rows - stats.rows_without_negatives,
                  "negatives": stats.negatives, "false_neg": fn}


def st_run(rset: RetrievalSet, cache: str, precision: str = PRECISION, **kwargs) -> tuple[float, dict]:
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    t0 = time.perf_counter()
    model = SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"), device="cpu",
                                model_kwargs={"dtype": torch.bfloat16 if precision == "bf16" else torch.float32})
    model.max_seq_length = SEQ
    pairs = [(rset.queries[q], rset.corpus[d].full_text) for q in rset.queries for d in rset.positives(q)]
    ds = Dataset.from_dict({"query": [p[0] for p in pairs], "positive": [p[1] for p in pairs]})
    corpus = [doc.full_text for doc in rset.corpus.values()]
    out = mine_hard_negatives(ds, model, corpus=corpus, cache_folder=cache, verbose=False, **kwargs)
    wall = time.perf_counter() - t0
    ids_of: dict[str, set[str]] = defaultdict(set)
    for d, doc in rset.corpus.items():
        ids_of[doc.full_text].add(d)
    qid_of = {text: q for q, text in rset.queries.items()}
    fn = sum(1 for row in out if any(rset.qrels[qid_of[row["query"]]].get(d, 0) > 0 for d in ids_of[row["negative"]]))
    kept_pairs = {(row["query"], row["positive"]) for row in out}
    return wall, {"rows_in": len(pairs), "rows_out": len(kept_pairs), "with_neg": len(kept_pairs),
                  "negatives": len(out), "false_neg": fn}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["quick", "full"], default="quick")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "mine.md"))
    parser.add_argument("--textcl-precision", default=PRECISION, choices=["fp32", "bf16", "int8"],
                        help=f"textcl's encoding precision (default {PRECISION}, ST's); int8 needs textcl[int8]")
    args = parser.parse_args()
    tc_prec = args.textcl_precision
    # Against textcl int8, ST runs its default fp32 (faster than its bf16 on CPUs without AMX).
    st_prec = "fp32" if tc_prec == "int8" else PRECISION
    logging.basicConfig(level=logging.WARNING)
    quick = args.mode == "quick"
    rset = subset(load_beir(NFCORPUS, "train"), 100 if quick else None, 2000 if quick else None)
    res = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tc, tempfile.TemporaryDirectory() as ts:
        res["textcl cold"] = textcl_run(rset, tc, tc_prec)
        res["ST defaults cold"] = st_run(rset, ts, st_prec)
        res["textcl warm"] = textcl_run(rset, tc, tc_prec)
        res["ST defaults warm"] = st_run(rset, ts, st_prec)
        res["ST relative_margin=0.05 warm"] = st_run(rset, ts, st_prec, relative_margin=0.05)
    for name, (wall, r) in res.items():
        print(f"{name}: {wall:.1f}s {r}", flush=True)
    n_docs = len(rset.corpus)
    append_record(ROOT / "bench" / "records" / "mine.jsonl", {"bench": "mine", "mode": args.mode, "textcl_precision": tc_prec,
                  "st_precision": st_prec, "queries": len(rset.queries), "documents": n_docs, "load_before": load_before,
                  "rows": [{"run": n, "wall_s": w, **r} for n, (w, r) in res.items()]})  # issue 29: tables from records
    prec_text = (f"{PRECISION} for both" if tc_prec == st_prec else
                 f"textcl {tc_prec} (its cold run includes the one-time export and quality guard), ST {st_prec}")
    lines = [
        "## Hard-negative mining (NFCorpus train)", "",
        f"{len(rset.queries)} queries, {sum(len(rset.positives(q)) for q in rset.queries)} (query, positive) "
        f"pairs, {n_docs} candidate documents{QUICK_CORPUS if quick else ''}; all-MiniLM-L6-v2 {prec_text}, max_seq_length {SEQ}, CPU; mode "
        f"`{args.mode}`. textcl: defaults (exact search, depth 50, 3 negatives, relative margin 0.05 vs the "
        "row's best positive, one row per query with all its positives). ST: `mine_hard_negatives` with its "
        "documented defaults (triplets, 3 negatives, no margin) and, last row, its recommended "
        "`relative_margin=0.05`. Wall time includes model loading. The machine was shared with other jobs: "
        "absolute times are noisy, ratios come from the same run.", "",
        "| run | wall s | input rows | rows kept | rows lost | rows with >=1 negative | negatives | "
        "false negatives (by id) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (wall, r) in res.items():
        lines.append(f"| {name} | {wall:.1f} | {r['rows_in']} | {r['rows_out']} | {r['rows_in'] - r['rows_out']} "
                     f"({100 * (r['rows_in'] - r['rows_out']) / r['rows_in']:.0f}%) | {r['with_neg']} | "
                     f"{r['negatives']} | {r['false_neg']} |")
    st_cold, st_warm = res["ST defaults cold"][0], res["ST defaults warm"][0]
    tc_cold, tc_warm = res["textcl cold"][0], res["textcl warm"][0]
    lines += ["", f"- cold: textcl is **{st_cold / tc_cold:.2f}x** faster than ST (goal >= 1.5x).",
              f"- warm (caches filled): textcl warm is **{st_cold / tc_warm:.1f}x** faster than an ST cold run "
              f"(goal >= 10x) and **{st_warm / tc_warm:.1f}x** faster than ST warm with its own cache_folder.",
              "- textcl never drops a row: queries whose candidates are all filtered keep their positives "
              "(in-batch negatives only) and are counted.", "",
              f"Command: `.venv/bin/python bench/bench_mine.py --mode {args.mode}"
              f"{'' if tc_prec == PRECISION else f' --textcl-precision {tc_prec}'} --out {args.out}`", ""]
    write_section(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
