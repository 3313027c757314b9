"""Hard-negative mining: candidates (search) -> filters (pure) -> sampling (seeded) -> records.

`mine(source, encode, cfg, seed=...)` takes a BEIR `RetrievalSet` or a list of `Example`s and
returns `(examples, MiningStats)`. No row is ever dropped: a row whose candidates are all filtered
keeps its positives and trains with in-batch negatives only (counted in `rows_without_negatives`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np
from sentence_transformers import CrossEncoder

from textcl.config import MiningConfig
from textcl.data.io import write_examples
from textcl.errors import ConfigError
from textcl.mine.filters import OUTCOMES
from textcl.mine.plan import MiningPlan, plan_from_examples, plan_from_retrieval
from textcl.mine.sample import PairScorer, select_negatives
from textcl.mine.search import find_candidates
from textcl.types import Encode, Example, RetrievalSet, encoder_identity

log = logging.getLogger(__name__)


@dataclass
class MiningStats:
    rows: int = 0
    rows_without_negatives: int = 0
    queries_without_positives: int = 0  # retrieval queries with no grade>0 doc: not training rows
    candidates: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    negatives: int = 0
    recall: float | None = None
    factory: str = "exact"
    provenance: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # never part of provenance (not deterministic)

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("provenance", "timings")}


def validate(cfg: MiningConfig) -> None:
    if cfg.num_negatives < 1:
        raise ConfigError(f"mining.num_negatives must be >= 1, got {cfg.num_negatives}")
    if cfg.skip_top < 0 or cfg.depth < 1:
        raise ConfigError(f"mining: need skip_top >= 0 and depth >= 1, got {cfg.skip_top}, {cfg.depth}")
    if cfg.depth < cfg.num_negatives:
        raise ConfigError(f"mining.depth ({cfg.depth}) must be >= num_negatives ({cfg.num_negatives})")
    if cfg.sampling not in ("top", "random"):
        raise ConfigError(f"mining.sampling must be 'top' or 'random', got {cfg.sampling!r}")
    if cfg.relative_margin is not None and not 0 <= cfg.relative_margin < 1:
        raise ConfigError(f"mining.relative_margin must be in [0, 1), got {cfg.relative_margin}")


def _to_examples(plan: MiningPlan, chosen: list[list[int]], cand_scores: np.ndarray,
                 cand_idx: np.ndarray) -> list[Example]:
    out = []
    for r, picked in enumerate(chosen):
        q, row = plan.row_query[r], plan.rows[r]
        docs = [int(cand_idx[q, j]) for j in picked]
        neg_ids: tuple[str, ...] = ()
        if plan.corpus_ids is not None and (row.negative_ids or not row.negatives):
            neg_ids = row.negative_ids + tuple(plan.corpus_ids[d] for d in docs)
        scores = row.scores + tuple(round(float(cand_scores[q, j]), 6) for j in picked) \
            if len(row.scores) == len(row.negatives) else ()
        out.append(dataclasses.replace(row, negatives=row.negatives + tuple(plan.corpus[d] for d in docs),
                                       negative_ids=neg_ids, scores=scores))
    return out


def encoder_fingerprint(encode: Encode) -> str:
    """The encoder's `.fingerprint` (weights + settings) or, for plain callables, its qualified name."""
    fp = getattr(encode, "fingerprint", None)
    if fp:
        return str(fp)
    name = f"{type(encode).__module__}.{type(encode).__qualname__}"
    return "callable:" + hashlib.sha256(name.encode()).hexdigest()[:16]


def mine(source: RetrievalSet | list[Example], encode: Encode, cfg: MiningConfig, *, seed: int,
         extra_corpus: list[str] | None = None, scorer: PairScorer | None = None,
         progress: bool = True) -> tuple[list[Example], MiningStats]:
    """Mine hard negatives for every row of `source`; deterministic for the same inputs and seed."""
    validate(cfg)
    if cfg.cross_encoder and scorer is None:
        scorer = load_cross_encoder(cfg.cross_encoder)
    if scorer is None and cfg.cross_encoder_max_score is not None:
        log.warning("CROSS-ENCODER FILTER IS A NO-OP: cross_encoder_max_score=%s is set but no cross_encoder "
                    "is given", cfg.cross_encoder_max_score)
    plan = plan_from_retrieval(source, extra_corpus, cfg.rows) if isinstance(source, RetrievalSet) \
        else plan_from_examples(list(source), extra_corpus)
    log.info("mining %d rows (%d unique queries) against %d corpus texts, factory=%s", len(plan.rows),
             len(plan.queries), len(plan.corpus), cfg.factory)
    cands = find_candidates(plan, encode, cfg, seed=seed, progress=progress)
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])
    chosen, counts = select_negatives(plan, cands.scores, cands.indices, cands.pair_scores, cfg, rng, scorer)
    examples = _to_examples(plan, chosen, cands.scores, cands.indices)
    stats = MiningStats(rows=len(examples), rows_without_negatives=sum(1 for c in chosen if not c),
                        queries_without_positives=plan.queries_without_positives,
                        candidates=counts.pop("candidates"), outcomes={k: counts[k] for k in OUTCOMES},
                        negatives=counts["selected"], recall=cands.recall, factory=cfg.factory, timings=cands.timings)
    stats.provenance = {"encoder": encoder_fingerprint(encode), **encoder_identity(encode), "factory": cfg.factory,
                        "seed": seed,
                        "data": plan.content_hash(), "config": dataclasses.asdict(cfg), "stats": stats.to_dict()}
    _log_stats(stats)
    return examples, stats


def _log_stats(stats: MiningStats) -> None:
    filtered = {k: v for k, v in stats.outcomes.items() if v}
    log.info("mined %d negatives for %d rows from %d candidates: %s", stats.negatives, stats.rows,
             stats.candidates, filtered)
    if stats.rows_without_negatives:
        log.warning("%d of %d rows kept without a mined negative (they train with in-batch negatives only); "
                    "raise depth or lower the margins to find more", stats.rows_without_negatives, stats.rows)


def write_mined(examples: list[Example], path: str, provenance: dict) -> None:
    """Write rows with `io.write_examples` (JSONL/Parquet by suffix, provenance alongside; same bytes)."""
    write_examples(examples, path, provenance)


def load_cross_encoder(name_or_path: str) -> PairScorer:
    """A sentence-transformers CrossEncoder as a PairScorer (sigmoid scores in [0, 1] for 1-label models)."""
    model = CrossEncoder(name_or_path)

    def score(pairs: list[tuple[str, str]]) -> np.ndarray:
        return np.asarray(model.predict(pairs, batch_size=64, show_progress_bar=False), dtype=np.float64)

    return score
