"""Negative selection: per-row filters over a query's candidate window, the optional cross-encoder
check, and seeded sampling of the survivors."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import numpy as np

from textcl.config import MiningConfig
from textcl.exclusion import KnownPositives
from textcl.mine.filters import (
    RowFilter,
    Thresholds,
    classify_candidates,
    cross_encoder_reject,
    reference_scores,
)
from textcl.mine.plan import MiningPlan
from textcl.types import normalize_text

log = logging.getLogger(__name__)

# (query, document) pairs -> one relevance score per pair (e.g. CrossEncoder.predict)
PairScorer = Callable[[list[tuple[str, str]]], np.ndarray]


def sample(n_survivors: int, num_negatives: int, sampling: str, rng: np.random.Generator) -> list[int]:
    """Positions (ascending, i.e. rank order) of the survivors to keep: the first `num_negatives`
    ("top") or a uniform sample without replacement ("random", drawn from `rng`)."""
    if n_survivors <= num_negatives:
        return list(range(n_survivors))
    if sampling == "top":
        return list(range(num_negatives))
    if sampling == "random":
        return sorted(int(i) for i in rng.choice(n_survivors, size=num_negatives, replace=False))
    raise ValueError(f"unknown sampling '{sampling}' (expected 'top' or 'random')")


def _row_filters(plan: MiningPlan, ref: np.ndarray) -> list[RowFilter]:
    index = plan.exclusion_index()
    known = [KnownPositives(texts=texts) for texts in plan.query_positive_texts]
    return [RowFilter(excluded=index.exclusions(known[q], plan.queries[q], rows=plan.query_positives[q]),
                      reference_score=float(ref[r]),
                      seen_texts=frozenset(normalize_text(t) for t in plan.rows[r].negatives))
            for r, q in enumerate(plan.row_query.tolist())]


def _apply_cross_encoder(plan: MiningPlan, survivors: list[list[int]], cand_idx: np.ndarray,
                         scorer: PairScorer, cfg: MiningConfig, counts: Counter) -> list[list[int]]:
    """Drop survivors the cross-encoder scores at least as high as max_score (or the row's weakest positive)."""
    pairs, owners = [], []
    for r, keep in enumerate(survivors):
        q = plan.queries[plan.row_query[r]]
        pairs += [(q, plan.corpus[cand_idx[plan.row_query[r], j]]) for j in keep]
        owners += [(r, "cand")] * len(keep)
        if cfg.cross_encoder_max_score is None:
            pairs += [(q, text) for text in plan.rows[r].positives]
            owners += [(r, "pos")] * len(plan.rows[r].positives)
    scores = np.asarray(scorer(pairs), dtype=np.float64) if pairs else np.zeros(0)
    kind = np.array([o[1] for o in owners])
    row = np.array([o[0] for o in owners], dtype=np.int64)
    if cfg.cross_encoder_max_score is not None and scores.size and cfg.cross_encoder_max_score > scores.max():
        log.warning("CROSS-ENCODER FILTER IS A NO-OP: cross_encoder_max_score=%s is above every score it gave "
                    "(max %.4f); lower it or leave it unset to compare against each row's positives",
                    cfg.cross_encoder_max_score, scores.max())
    out = []
    for r, keep in enumerate(survivors):
        mask = row == r
        reject = cross_encoder_reject(scores[mask & (kind == "cand")], scores[mask & (kind == "pos")],
                                      cfg.cross_encoder_max_score)
        counts["cross_encoder"] += int(reject.sum())
        out.append([j for j, bad in zip(keep, reject) if not bad])
    return out


def select_negatives(plan: MiningPlan, cand_scores: np.ndarray, cand_idx: np.ndarray, pair_scores: np.ndarray,
                     cfg: MiningConfig, rng: np.random.Generator,
                     scorer: PairScorer | None = None) -> tuple[list[list[int]], Counter]:
    """Per row, the candidate positions (into the query's rank list) kept as negatives, plus outcome counts.

    Candidates are ranks [skip_top, skip_top + depth) of the row's query; the margin reference is the
    highest (or, `margin_reference="min"`, lowest) score among the row's own positives (`reference_scores`).
    """
    pair_row, _, _ = plan.pairs()
    ref = reference_scores(pair_row, pair_scores, len(plan.rows), cfg.margin_reference)
    limits = Thresholds(cfg.absolute_margin, cfg.relative_margin, cfg.max_score)
    window = range(cfg.skip_top, min(cfg.skip_top + cfg.depth, cand_idx.shape[1]))
    counts: Counter = Counter()
    survivors: list[list[int]] = []
    for r, rf in enumerate(_row_filters(plan, ref)):
        q = plan.row_query[r]
        idx = [int(cand_idx[q, j]) for j in window]
        reasons = classify_candidates(idx, [float(cand_scores[q, j]) for j in window], rf, limits, plan.text_of)
        counts.update(x for x in reasons if x is not None)
        survivors.append([j for j, why in zip(window, reasons) if why is None])
    counts["candidates"] = len(plan.rows) * len(window)
    if scorer is not None:
        survivors = _apply_cross_encoder(plan, survivors, cand_idx, scorer, cfg, counts)
    chosen = []
    for keep in survivors:
        picked = [keep[p] for p in sample(len(keep), cfg.num_negatives, cfg.sampling, rng)]
        counts["selected"] += len(picked)
        counts["unused"] += len(keep) - len(picked)
        chosen.append(picked)
    return chosen, counts
