"""Corpus-wide negatives at scale: one query-side training step against a synthetic corpus of up to 1M
documents (random unit vectors, dim 384, the cached-corpus layout), peak RSS and step time.

Rows: the exact softmax over the whole corpus (chunked logsumexp, custom backward), the bounded
candidate set (top-K + uniform draws), and the naive loss a user would write first (one [B, N] logits
matrix through autograd), which is the reference for memory. The query tower is all-MiniLM-L6-v2 on
32 NFCorpus-like queries; the corpus is stored in fp16 past 1 GiB (train.corpus_dtype: auto).

    .venv/bin/python bench/bench_corpus_scale.py --mode full     # 1M documents
    .venv/bin/python bench/bench_corpus_scale.py --mode quick    # 100k documents
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from common import ROOT, write_section  # first: sets up sys.path and env

SIZES = {"quick": 100_000, "full": 1_000_000}
ROWS = ("exact", "sampled", "naive")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, n: int, steps: int) -> dict:
    """One process per row, so each peak RSS is its own."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from textcl.config import LossConfig, ModelConfig
    from textcl.data.batching import Batch
    from textcl.losses import KnownPositives
    from textcl.models import load_model
    from textcl.train.components import make_embed
    from textcl.train.corpus import TrainingCorpus, storage_dtype
    from textcl.train.objective import CorpusInfoNCE, CorpusNegatives, forward_backward

    model = load_model("all-MiniLM-L6-v2", device="cpu", max_seq_length=64)
    model.train()
    embed = make_embed(model, model, ModelConfig())
    base_rss = peak_rss_mb()
    g = torch.Generator().manual_seed(0)
    dtype = storage_dtype(n, 384, "auto")
    emb = torch.empty(n, 384, dtype=dtype)
    for s in range(0, n, 65536):  # fill in blocks: no full fp32 copy
        emb[s:s + 65536] = F.normalize(torch.randn(min(65536, n - s), 384, generator=g), dim=1).to(dtype)
    texts = [f"doc {i}" for i in range(n)]
    corpus = TrainingCorpus(texts=texts, ids=[str(i) for i in range(n)])
    corpus.embeddings = emb
    rng = np.random.default_rng(0)
    words = "vitamin d deficiency heart disease risk diet sugar cancer cells sleep coffee brain".split()
    times = []
    for _ in range(steps):
        queries = [" ".join(rng.choice(words, size=6)) for _ in range(32)]
        pos = rng.integers(0, n, size=32)
        batch = Batch(queries=queries, candidates=[texts[p] for p in pos], group_size=1,
                      candidate_ids=[str(p) for p in pos],
                      positive_sets=[KnownPositives(ids=frozenset([str(p)])) for p in pos])
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        if kind == "naive":
            q = embed(queries, "query")
            logits = q @ emb.float().T / 0.05
            loss = F.cross_entropy(logits, torch.from_numpy(pos))
            loss.backward()
        else:
            how = CorpusNegatives(query_side=True, candidates=256 if kind == "sampled" else None,
                                  samples=4096 if kind == "sampled" else 0)
            forward_backward(embed, batch, CorpusInfoNCE(LossConfig().temperature, corpus, how), rng=rng)
        times.append(time.perf_counter() - t0)
    return {"kind": kind, "n": n, "dtype": str(dtype).replace("torch.", ""), "step_s": sorted(times)[len(times) // 2],
            "peak_rss_mb": round(peak_rss_mb(), 1), "rss_before_corpus_mb": round(base_rss, 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["quick", "full"], default="quick")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--child", nargs=2, default=None, metavar=("KIND", "N"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "corpus_scale.md"))
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child[0], int(args.child[1]), args.steps)), flush=True)
        return 0
    n = SIZES[args.mode]
    rows = []
    for kind in ROWS:
        proc = subprocess.run([sys.executable, __file__, "--child", kind, str(n), "--steps", str(args.steps)],
                              capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        rows.append(json.loads(line[7:]) if line else {"kind": kind, "n": n, "error": proc.stderr[-300:]})
    lines = [f"## Corpus-wide negatives at {n:,} documents", "",
             f"Command: `.venv/bin/python bench/bench_corpus_scale.py --mode {args.mode}`. One query-side step "
             "(all-MiniLM-L6-v2 query tower, 32 queries) against a synthetic cached corpus; median of "
             f"{args.steps} steps; peak RSS of the process (model + corpus + step).", "",
             "| loss | corpus storage | step (s) | peak RSS (MB) | RSS before the corpus (MB) |", "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['kind']} | – | failed | – | – |")
            continue
        lines.append(f"| {r['kind']} | {r['dtype']} | {r['step_s']:.2f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['rss_before_corpus_mb']:.0f} |")
    lines += ["", "exact = the whole-corpus softmax, logsumexp in chunks with a custom backward; sampled = top-256 "
              "by the current query embedding + 4,096 uniform draws (log(N/M) correction); naive = one [32, N] "
              "logits matrix through autograd (fp32 copy of the corpus per step)."]
    write_section(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
