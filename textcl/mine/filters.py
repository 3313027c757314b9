"""Pure pieces of hard-negative selection: text normalisation, per-candidate filter reasons, the
positive-aware margin, and seeded sampling. No I/O, no encoding, no logging.

Every candidate in a row's rank window gets exactly one outcome, so the per-filter counts always
add up to the number of candidates looked at.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from textcl.exclusion import REASONS

# Outcomes in the order they are tested; the first that applies is the one counted.
FILTERS = ("no_result", *REASONS, "duplicate_text", "max_score", "margin", "cross_encoder")
OUTCOMES = (*FILTERS, "selected", "unused")


def margin_threshold(positive_score: float, absolute_margin: float | None,
                     relative_margin: float | None) -> float:
    """Highest score a negative may reach (exclusive) given the positive's score.

    absolute: neg < pos - absolute_margin. relative (NV-Retriever TopK-PercPos): neg < pos - |pos| * m,
    i.e. pos * (1 - m) for a positive score. Both given: both must hold. Neither: +inf.
    """
    limit = np.inf
    if absolute_margin is not None:
        limit = min(limit, positive_score - absolute_margin)
    if relative_margin is not None:
        limit = min(limit, positive_score - abs(positive_score) * relative_margin)
    return float(limit)


def reference_scores(pair_row: np.ndarray, pair_score: np.ndarray, n_rows: int, how: str = "max") -> np.ndarray:
    """Per row, the margin reference: the highest ("max") or lowest ("min") score among its OWN positives.

    `pair_row[j]` says which row pair j belongs to (rows may hold uneven numbers of positives).
    "max" calibrates "how high does a relevant document score for this query" by the best known
    positive, as NV-Retriever does with its single positive; "min" demands a negative sit below every
    positive the trainer could sample, which on NFCorpus (median 18 positives per query, many weak)
    leaves 95% of queries without any negative. A row with one positive gives the same either way.
    """
    if how not in ("max", "min"):
        raise ValueError(f"margin reference must be 'max' or 'min', got {how!r}")
    out = np.full(n_rows, -np.inf if how == "max" else np.inf, dtype=np.float64)
    (np.maximum if how == "max" else np.minimum).at(out, pair_row, pair_score.astype(np.float64))
    return out


@dataclass(frozen=True)
class RowFilter:
    """What one row knows: the corpus indices its query excludes and why (`ExclusionIndex.exclusions`:
    known positives by id and by text, documents with the query's text), texts it already holds as
    negatives, and its margin reference score."""

    excluded: Mapping[int, str]
    reference_score: float
    seen_texts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Thresholds:
    absolute_margin: float | None = None
    relative_margin: float | None = None
    max_score: float | None = None


def classify_candidates(cand_idx: Sequence[int], cand_scores: Sequence[float], row: RowFilter,
                        limits: Thresholds, text_of: Callable[[int], str]) -> list[str | None]:
    """Reason each candidate is rejected (an entry of FILTERS) or None when it survives.

    `text_of(i)` returns the normalised text of corpus item i. Candidates come in rank order; a
    later candidate with the same normalised text as an earlier survivor is a `duplicate_text`.
    """
    margin = margin_threshold(row.reference_score, limits.absolute_margin, limits.relative_margin)
    seen = set(row.seen_texts)
    out: list[str | None] = []
    for idx, score in zip(cand_idx, cand_scores):
        idx = int(idx)
        if idx < 0:  # an approximate index returned fewer than k results
            out.append("no_result")
            continue
        excluded = row.excluded.get(idx)
        if excluded is not None:
            out.append(excluded)
            continue
        text = text_of(idx)
        if text in seen:
            reason = "duplicate_text"
        elif limits.max_score is not None and score > limits.max_score:
            reason = "max_score"
        elif not score < margin:
            reason = "margin"
        else:
            reason = None
            seen.add(text)
        out.append(reason)
    return out


def cross_encoder_reject(candidate_scores: np.ndarray, positive_scores: np.ndarray,
                         max_score: float | None) -> np.ndarray:
    """Mask of candidates the cross-encoder rejects: score >= max_score, or, without a max_score,
    score >= the lowest cross-encoder score of the row's own positives."""
    limit = max_score if max_score is not None else (positive_scores.min() if positive_scores.size else np.inf)
    return candidate_scores >= limit
