"""Semantic search over stored embeddings: textcl's SearchIndex (exact, Flat, HNSW32) vs
sentence-transformers' `util.semantic_search` (its recommended API for search over embeddings).

One run, the same float32 L2-normalised vectors for both: a clustered synthetic corpus (1,000 topic
centroids + noise, dim 384, like MiniLM embeddings), queries drawn the same way. Reports query
throughput (wall and per CPU-second, since the machine may be shared), recall@10 against exact
search, agreement of the exact top-10 with sentence-transformers, and index build time. Encoding is
not timed (the same model encodes for both; see bench_encode).

    python bench/bench_search.py --mode quick|full --out bench/results/search.md
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT, append_record, write_section  # first: sets up sys.path and env

from textcl.index import SearchIndex
from textcl.knn import exact_search, recall_at_k
from textcl.types import Document

SIZES = {"quick": (50_000, 1_000), "full": (300_000, 5_000)}
DIM, TOPICS, K = 384, 1000, 10


def clustered(n: int, rng: np.random.Generator, centroids: np.ndarray) -> np.ndarray:
    x = centroids[rng.integers(0, len(centroids), n)] + rng.normal(0, 0.6 / np.sqrt(DIM), (n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


class Precomputed:
    """An Encode that returns stored vectors (so both sides search the very same embeddings)."""

    def __init__(self, docs: np.ndarray, queries: np.ndarray):
        self.docs, self.queries, self.fingerprint = docs, queries, "bench-vectors"

    def __call__(self, texts: list[str], role: str = "document") -> np.ndarray:
        src = self.queries if role == "query" else self.docs
        return src[[int(t) for t in texts]]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["quick", "full"], default="quick")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "search.md"))
    args = parser.parse_args()
    n_docs, n_queries = SIZES[args.mode]
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(TOPICS, DIM))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    docs, queries = clustered(n_docs, rng, centroids), clustered(n_queries, rng, centroids)
    encode = Precomputed(docs, queries)
    corpus = {str(i): Document("", str(i)) for i in range(n_docs)}
    qtexts = [str(i) for i in range(n_queries)]

    from sentence_transformers import util
    st_hits, st_wall, st_cpu = timed(lambda: util.semantic_search(
        torch.from_numpy(queries), torch.from_numpy(docs), top_k=K))
    st_idx = np.array([[h["corpus_id"] for h in row] for row in st_hits])
    (e_s, e_i), ex_wall, ex_cpu = timed(lambda: exact_search(queries, docs, K))
    agree = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(st_idx, e_i)]))

    rows = [("sentence-transformers `util.semantic_search`", "-", st_wall, st_cpu, agree),
            ("textcl `exact_search` (chunked)", "-", ex_wall, ex_cpu, 1.0)]
    with tempfile.TemporaryDirectory() as tmp:
        for factory in ("exact", "Flat", "HNSW32"):
            index, b_wall, _ = timed(lambda f=factory: SearchIndex.build(
                encode, corpus, Path(tmp) / f, factory=f, recall_queries=qtexts[:200]))
            (s, i), wall, cpu = timed(lambda ix=index: ix.search_embeddings(queries, K))
            rows.append((f"textcl `SearchIndex` {factory}", f"{b_wall:.1f} s", wall, cpu,
                         recall_at_k(i, e_i, K, exact_scores=e_s, approx_scores=s)))

    append_record(ROOT / "bench" / "records" / "search.jsonl", {  # what this run measured (issue 29: tables from records)
        "bench": "search", "mode": args.mode, "n_docs": n_docs, "n_queries": n_queries, "dim": DIM, "k": K,
        "threads": torch.get_num_threads(), "load_before": load_before,
        "rows": [{"method": n, "build": b, "wall_s": w, "cpu_s": c, "recall": r} for n, b, w, c, r in rows]})
    lines = [f"## Semantic search over stored embeddings ({args.mode})", "",
             f"{n_docs:,} documents x {n_queries:,} queries, dim {DIM}, top-{K}, clustered synthetic vectors "
             f"(seed 0), {torch.get_num_threads()} threads. Same vectors for every row; recall is against "
             "textcl exact search (tie-tolerant; for sentence-transformers: plain top-10 overlap). "
             "Build = encode (table lookup here) + index + recall check + write to disk.", "",
             "| method | build | search wall (s) | search CPU (s) | queries/s (wall) | speed-up vs ST (wall / CPU) "
             "| recall@10 |", "|---|---|---|---|---|---|---|"]
    for name, build, wall, cpu, recall in rows:
        lines.append(f"| {name} | {build} | {wall:.3f} | {cpu:.3f} | {n_queries / wall:,.0f} | "
                     f"{st_wall / wall:.2f}x / {st_cpu / cpu:.2f}x | {recall:.4f} |")
    lines += ["", f"Command: `python bench/bench_search.py --mode {args.mode}`. The machine was shared with other "
              "jobs while this ran: compare rows of this table, not absolute numbers across runs.", ""]
    write_section(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
