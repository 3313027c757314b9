"""A small synthetic BEIR folder shared by the mining and CLI tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WORDS = "cat dog car tree house river music book play run eat drink man woman child good bad new old big".split()
def write_beir(folder: Path, n_docs: int = 90, n_queries: int = 24, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    docs = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) for _ in range(n_docs)]
    docs[5] = docs[4].upper()  # a case variant of a positive
    with open(folder / "corpus.jsonl", "w") as fh:
        for i, d in enumerate(docs):
            fh.write(json.dumps({"_id": f"d{i}", "title": "", "text": d}) + "\n")
    with open(folder / "queries.jsonl", "w") as fh:
        for q in range(n_queries):
            fh.write(json.dumps({"_id": f"q{q}", "text": " ".join(rng.choice(WORDS, size=3))}) + "\n")
    with open(folder / "qrels" / "train.tsv", "w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q in range(n_queries):
            positives = {4} if q == 0 else set()  # q0's positive d4 has an upper-case twin d5
            positives |= {int(d) for d in rng.choice(n_docs, size=int(rng.integers(1, 5)), replace=False)}
            for d in sorted(positives - {5}):  # uneven numbers of positives
                fh.write(f"q{q}\td{d}\t1\n")
    return folder
