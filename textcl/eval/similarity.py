"""Similarity of queries to their positives vs negatives (for the report's histograms), and training
pairs viewed as a small retrieval set. Pure given an `encode`: no I/O.
"""

from __future__ import annotations

import numpy as np
import torch

from textcl.scores import pairwise_scores
from textcl.types import Document, Encode, Example, RetrievalSet, ScoredPair, similarity_of

SIM_QUERIES, SIM_CORPUS, SIM_RANDOM_NEGATIVES = 300, 3000, 3


def examples_as_retrieval(examples: list[Example], limit: int = SIM_QUERIES) -> RetrievalSet:
    """Training pairs as a tiny retrieval set (queries -> their positives) for similarity histograms."""
    corpus: dict[str, Document] = {}
    ids: dict[str, str] = {}
    queries, qrels = {}, {}
    for i, ex in enumerate(examples[:limit]):
        for pos in ex.positives[:1]:
            ids.setdefault(pos, f"p{len(ids)}")
            corpus[ids[pos]] = Document("", pos)
            queries[f"q{i}"] = ex.query
            qrels[f"q{i}"] = {ids[pos]: 1}
    return RetrievalSet("train-sample", corpus, queries, qrels, split="train")


def similarity_samples(encode: Encode, rset: RetrievalSet, seed: int) -> dict[str, list[float]]:
    """Cosine of each query to its positives, to its hardest non-relevant doc and to random ones."""
    rng = np.random.default_rng(seed)
    qids = sorted(rset.qrels)
    if len(qids) > SIM_QUERIES:
        qids = sorted(rng.choice(qids, SIM_QUERIES, replace=False).tolist())
    relevant = {d for q in qids for d in rset.positives(q)}
    others = sorted(set(rset.corpus) - relevant)
    if len(others) > SIM_CORPUS:
        others = sorted(rng.choice(others, SIM_CORPUS, replace=False).tolist())
    doc_ids = sorted(relevant & set(rset.corpus)) + others
    if not doc_ids or not qids:
        return {}
    d_emb = encode([rset.corpus[d].full_text for d in doc_ids], "document")
    q_emb = encode([rset.queries[q] for q in qids], "query")
    sims = pairwise_scores(torch.from_numpy(np.asarray(q_emb, dtype=np.float32)),
                           torch.from_numpy(np.asarray(d_emb, dtype=np.float32)), similarity_of(encode)).numpy()
    col = {d: j for j, d in enumerate(doc_ids)}
    out: dict[str, list[float]] = {"positive": [], "hardest negative": [], "random negative": []}
    for i, q in enumerate(qids):
        pos = [col[d] for d in rset.positives(q) if d in col]
        out["positive"] += [float(sims[i, j]) for j in pos]
        neg = np.setdiff1d(np.arange(len(doc_ids)), pos)
        if len(neg):
            out["hardest negative"].append(float(sims[i, neg].max()))
            pick = rng.choice(neg, min(SIM_RANDOM_NEGATIVES, len(neg)), replace=False)
            out["random negative"] += [float(sims[i, j]) for j in pick]
    return out


def scored_pair_samples(encode: Encode, pairs: list[ScoredPair], limit: int = 1000,
                        seed: int = 0) -> dict[str, list[float]]:
    """Cosine of STS pairs in the top quarter of gold scores ("similar") vs the bottom quarter ("dissimilar")."""
    if len(pairs) > limit:
        pick = np.random.default_rng(seed).choice(len(pairs), limit, replace=False)
        pairs = [pairs[i] for i in sorted(pick)]
    if not pairs:
        return {}
    scores = np.array([p.score for p in pairs])
    low, high = np.quantile(scores, [0.25, 0.75])
    a = encode([p.sentence1 for p in pairs], "query")
    b = encode([p.sentence2 for p in pairs], "query")
    cos = np.sum(a * b, axis=1)
    return {"similar pairs (top 25% gold)": cos[scores >= high].tolist(),
            "dissimilar pairs (bottom 25% gold)": cos[scores <= low].tolist()}
