"""STS evaluation: Spearman and Pearson of cosine, dot, euclidean and manhattan similarity.

The primary metric is `"{dataset}/spearman_cosine"`. Both sentences are encoded with the "query"
role (STS is symmetric; with asymmetric prompts both sides get the query prompt, as MTEB does).
Each distinct sentence is encoded once. Values are correlations in [-1, 1] (x100 in printed tables).
With a two-tower encoder (query-side fine-tune, `encode.routed`), both sentences go through the query
tower, and `{dataset}/spearman_cosine_query_document` adds the pairing retrieval uses: sentence1
through the query tower, sentence2 through the document tower.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from textcl.errors import DataError
from textcl.eval.metrics import pearson, spearman
from textcl.types import Encode, ScoredPair

log = logging.getLogger(__name__)


def similarity_scores(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Row-wise similarities of paired embeddings (distances negated so higher = more similar)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dot = np.einsum("ij,ij->i", a, b)
    return {
        "cosine": dot / np.where(norms == 0, 1.0, norms),
        "dot": dot,
        "euclidean": -np.linalg.norm(a - b, axis=1),
        "manhattan": -np.abs(a - b).sum(axis=1),
    }


def evaluate_sts(encode: Encode, pairs: Sequence[ScoredPair], name: str) -> dict[str, float]:
    """`{name}/spearman_{sim}` and `{name}/pearson_{sim}` for each similarity; raise on empty input."""
    if not pairs:
        raise DataError(f"STS set '{name}' has no pairs")
    texts = list(dict.fromkeys([p.sentence1 for p in pairs] + [p.sentence2 for p in pairs]))
    index = {t: i for i, t in enumerate(texts)}
    emb = np.asarray(encode(texts, "query"), dtype=np.float32)
    if emb.shape[0] != len(texts):
        raise ValueError(f"encode returned {emb.shape[0]} rows for {len(texts)} texts")
    a = emb[[index[p.sentence1] for p in pairs]]
    b = emb[[index[p.sentence2] for p in pairs]]
    gold = np.array([p.score for p in pairs], dtype=np.float64)
    out: dict[str, float] = {}
    for sim, scores in similarity_scores(a, b).items():
        out[f"{name}/spearman_{sim}"] = spearman(gold, scores)
        out[f"{name}/pearson_{sim}"] = pearson(gold, scores)
    if getattr(encode, "routed", False):
        docs = np.asarray(encode(texts, "document"), dtype=np.float32)
        cross = similarity_scores(a, docs[[index[p.sentence2] for p in pairs]])["cosine"]
        out[f"{name}/spearman_cosine_query_document"] = spearman(gold, cross)
    log.debug("%s: spearman_cosine %.4f over %d pairs", name, out[f"{name}/spearman_cosine"], len(pairs))
    return out
