"""Training data for the loop: load what a recipe names, cut one epoch into global batches (seeded
by (seed, epoch) so a resumed run rebuilds the same order), and give each rank its shard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from textcl.config import RunConfig
from textcl.data.batching import Batch, make_batches, make_scored_batches, make_text_batches
from textcl.data.training import load_training_rows
from textcl.distributed import world_size
from textcl.errors import ConfigError, DataError
from textcl.types import Example, ScoredPair

log = logging.getLogger(__name__)

_KIND = {"infonce": Example, "cosent": ScoredPair, "simcse": str}


def num_negatives(config: RunConfig, examples: Sequence[Example]) -> int:
    """`train.num_negatives`, or else as many as the data has (capped by mining.num_negatives); 0 with
    corpus-wide negatives (every corpus document already is one)."""
    if config.train.uses_corpus_negatives:
        return 0
    if config.train.num_negatives is not None:
        return config.train.num_negatives
    most = max((len(ex.negatives) for ex in examples), default=0)
    return min(most, config.mining.num_negatives)


def epoch_batch_maker(config: RunConfig, items: Sequence) -> Callable[[int], list[Batch]]:
    """`make(epoch) -> list[Batch]`: the global batches of one epoch, identical on every rank.

    Batches with fewer queries than processes are dropped (every rank drops the same ones), and
    the number of examples dropped that way is logged.
    """
    loss = config.loss.name
    kind = _KIND[loss]
    if not items:
        raise DataError("no training examples")
    bad = next((i for i, x in enumerate(items) if not isinstance(x, kind)), None)
    if bad is not None:
        raise ConfigError(f"loss.name={loss} trains on {kind.__name__} items, but item {bad} is "
                          f"{type(items[bad]).__name__}")
    tc = config.train
    negatives = num_negatives(config, items) if loss == "infonce" else 0
    cache: dict[int, list[Batch]] = {}

    def make(epoch: int) -> list[Batch]:
        if epoch in cache:
            return cache[epoch]
        rng = np.random.default_rng([config.seed, epoch])
        if loss == "infonce":
            batches = make_batches(items, tc.batch_size, num_negatives=negatives, rng=rng,
                                   length_grouped=tc.length_grouped)
        elif loss == "cosent":
            batches = make_scored_batches(items, tc.batch_size, rng=rng)
        else:
            batches = make_text_batches(items, tc.batch_size, rng=rng)
        world = world_size()
        # A batch needs a query per process, and something to contrast: with one query and no
        # negative (or one scored pair) the loss is identically zero, so such a step is wasted.
        smallest = world if loss == "infonce" and negatives > 0 else max(world, 2)
        kept = [b for b in batches if len(b) >= smallest]
        dropped = sum(len(b) for b in batches) - sum(len(b) for b in kept)
        if dropped:
            log.warning("epoch %d: dropped %d examples in %d batches smaller than %d queries", epoch, dropped,
                        len(batches) - len(kept), smallest)
        small = sum(1 for b in kept if len(b) < tc.batch_size / 2)
        if len(items) % tc.batch_size and small:
            small -= 1  # the epoch's last, partial batch is no sign of repeated rows
        if small > 0.1 * len(kept):
            log.warning("epoch %d: %d of %d batches (besides the last, partial one) hold less than half of "
                        "batch_size=%d: the duplicate-aware sampler keeps rows with the same query text or the "
                        "same sampled positive apart, and many rows repeat one (check the data report for "
                        "duplicates, or lower batch_size)", epoch, small, len(kept), tc.batch_size)
        cache.clear()
        cache[epoch] = kept
        return kept

    return make


def shard_batch(batch: Batch, rank: int, world: int) -> Batch:
    """Rank `rank`'s contiguous slice of a global batch (sizes differ by at most one query)."""
    if world == 1:
        return batch
    bounds = np.linspace(0, len(batch), world + 1).round().astype(int)
    lo, hi = int(bounds[rank]), int(bounds[rank + 1])
    g = batch.group_size
    return Batch(queries=batch.queries[lo:hi], candidates=batch.candidates[lo * g:hi * g], group_size=g,
                 query_ids=batch.query_ids[lo:hi] if batch.query_ids else [],
                 candidate_ids=batch.candidate_ids[lo * g:hi * g] if batch.candidate_ids else [],
                 scores=batch.scores[lo:hi] if batch.scores is not None else None,
                 positive_sets=batch.positive_sets[lo:hi] if batch.positive_sets else [])


def load_training_data(config: RunConfig) -> tuple[list, dict]:
    """Load the items `config.loss.name` trains on, plus provenance for the model card.

    InfoNCE uses the mined file (`mining.output`) when it exists, else `data.train`.
    """
    dc = config.data
    mined = Path(config.mining.output) if config.mining.output else None
    provenance: dict = {"data": {"train": dc.train, "format": dc.format, "split": dc.split}}
    if config.loss.name == "infonce" and mined is not None and mined.exists():
        path, fmt = mined, "auto"
    elif dc.train is None:
        raise ConfigError("data.train is not set (and no mined file at mining.output)")
    else:
        path, fmt = Path(dc.train), dc.format
    items, report = load_training_rows(dc, config.loss.name, path=path, fmt=fmt)
    if report is not None:
        provenance["load_report"] = {"kept": report.kept, "skipped": report.n_skipped}
        if path == mined:  # what write_examples stored with the mined file (encoder, factory, seed, ...)
            provenance["mining"] = {"file": str(mined), "provenance": getattr(report, "provenance", None)}
    provenance["n_items"] = len(items)
    provenance["source"] = str(path)
    log.info("training on %d %s items from %s", len(items), config.loss.name, path)
    return items, provenance

