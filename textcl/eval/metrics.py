"""Pure ranking and correlation metrics, computed exactly as trec_eval / pytrec_eval compute them.

Ranking conventions (trec_eval 9.x, checked against pytrec-eval-terrier by property tests):
- a run is ordered by score descending, ties broken by document id in DESCENDING string order;
- relevant means grade > 0 (trec_eval's relevance_level 1 for integer grades); nDCG uses linear
  gain = grade for grade > 0, 0 otherwise, and the ideal ranking of all judged relevant documents;
- MAP@k and Recall@k divide by all relevant documents of the query (not min(k, R)); P@k by k;
- MRR@k is trec_eval's recip_rank on the run cut at k (pytrec_eval has no cut for it; MTEB computes
  it in Python with tied scores in insertion order, so the two differ only on exact score ties);
- a query is evaluated when it has a non-empty qrels entry AND a run entry (an empty run entry
  scores 0 everywhere); queries with judgements but no run entry are absent, as in pytrec_eval.
The mean (`mean_metrics`) is over evaluated queries, as MTEB averages pytrec_eval's output (MTEB
then rounds to 5 decimals; we do not round).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import scipy.stats

PRIMARY_METRIC = {"retrieval": "ndcg@10", "sts": "spearman_cosine"}  # by task


def is_primary(key: str) -> bool:
    """Whether a metric key ("nfcorpus/ndcg@10", "dev/stsb/spearman_cosine") is its set's primary metric:
    the one tables, plots, forgetting flags and checkpoint selection use."""
    return key.rsplit("/", 1)[-1] in PRIMARY_METRIC.values()


def rank_run(run: Mapping[str, float]) -> list[str]:
    """Document ids in trec_eval order: score descending, then doc id descending."""
    return [doc for doc, _ in sorted(run.items(), key=lambda item: (float(item[1]), item[0]), reverse=True)]


def _dcg(gains: Iterable[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains) if g > 0)


def query_metrics(qrels: Mapping[str, int], run: Mapping[str, float], k_values: Iterable[int]) -> dict[str, float]:
    """All metrics at every k for one query: keys "ndcg@10", "mrr@10", "recall@10", "map@10", "precision@10"."""
    ranked = rank_run(run)
    grades = [qrels.get(doc, 0) for doc in ranked]
    relevant = [g > 0 for g in grades]
    n_rel = sum(1 for g in qrels.values() if g > 0)
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)
    out: dict[str, float] = {}
    for k in sorted(set(k_values)):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        top = relevant[:k]
        idcg = _dcg(ideal[:k])
        out[f"ndcg@{k}"] = _dcg(grades[:k]) / idcg if idcg > 0 else 0.0
        first = next((i for i, r in enumerate(top) if r), None)
        out[f"mrr@{k}"] = 1.0 / (first + 1) if first is not None else 0.0
        hits = sum(top)
        out[f"recall@{k}"] = hits / n_rel if n_rel else 0.0
        out[f"precision@{k}"] = hits / k
        ap, seen = 0.0, 0
        for i, r in enumerate(top):
            if r:
                seen += 1
                ap += seen / (i + 1)
        out[f"map@{k}"] = ap / n_rel if n_rel else 0.0
    return out


def evaluate_run(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]],
                 k_values: Iterable[int]) -> dict[str, dict[str, float]]:
    """Per-query metrics for every query pytrec_eval would evaluate (see the module docstring)."""
    k_values = list(k_values)
    return {qid: query_metrics(qrels[qid], docs, k_values) for qid, docs in run.items()
            if qrels.get(qid)}


def mean_metrics(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over the evaluated queries (empty input gives an empty dict)."""
    if not per_query:
        return {}
    keys = next(iter(per_query.values())).keys()
    n = len(per_query)
    return {key: sum(m[key] for m in per_query.values()) / n for key in keys}


# ---------------------------------------------------------------- correlation


def rankdata(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (scipy.stats.rankdata 'average')."""
    return scipy.stats.rankdata(np.asarray(values, dtype=np.float64), method="average")


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either input is constant or has fewer than 2 values."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"pearson: inputs differ in shape {x.shape} vs {y.shape}")
    if len(x) < 2:
        return float("nan")
    if np.all(x == x[0]) or np.all(y == y[0]):  # undefined (scipy warns and returns NaN)
        return float("nan")
    return float(np.clip(scipy.stats.pearsonr(x, y).statistic, -1.0, 1.0))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (Pearson of tie-averaged ranks), as scipy.stats.spearmanr."""
    return pearson(rankdata(x), rankdata(y))


def paired_gain(base: Mapping[str, float], new: Mapping[str, float]) -> dict[str, float]:
    """The per-query paired difference new - base over the queries both score: its mean, standard error (sample
    std / sqrt(n)), n, and t = mean / standard error (0 when nothing differs; +-inf when every query moves
    the same amount)."""
    diffs = [new[q] - base[q] for q in base if q in new]
    n = len(diffs)
    if n == 0:
        return {"mean": 0.0, "se": 0.0, "n": 0, "t": 0.0}
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    se = math.sqrt(var / n)
    t = mean / se if se > 0 else (math.copysign(math.inf, mean) if mean else 0.0)
    return {"mean": mean, "se": se, "n": n, "t": t}


def max_t_threshold(base: Mapping[str, float], candidates: list[Mapping[str, float]], z: float,
                    draws: int = 4000, seed: int = 0) -> float:
    """The t (of `paired_gain`) that the best of `candidates` must reach over `base` for a one-sided test at the level
    z stands for (1 - Phi(z)) when that candidate was CHOSEN among them on the same queries (Westfall and Young's
    max-T): the (1 - level) quantile of max_k t_k under random sign flips of every query's differences, one flip per
    query shared by all candidates (so their correlation is kept). Never below z; z with no candidates."""
    queries = [q for q in base if all(q in c for c in candidates)]
    n = len(queries)
    if not candidates or n < 2:
        return z
    diffs = np.array([[c[q] - base[q] for q in queries] for c in candidates], dtype=np.float64)  # K x n
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(draws, n))
    means = signs @ diffs.T / n  # draws x K; sum of squares is the same under any flip
    var = np.maximum((np.square(diffs).sum(axis=1) - n * np.square(means)) / (n - 1), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(var > 0, means / np.sqrt(var / n), 0.0)
    level = 1.0 - float(scipy.stats.norm.cdf(z))
    return max(z, float(np.quantile(t.max(axis=1), 1.0 - level)))
