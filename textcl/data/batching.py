"""Batches for contrastive training: the `Batch` layout, a duplicate-aware seeded sampler for
examples (one positive + exactly `num_negatives` negatives per query), scored pairs and raw text.

Layout: `candidates` has B * group_size rows; the positive of query i is row i * group_size, its
negatives follow it. `group_size = 1 + num_negatives` and is uniform within (and across) batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from textcl.errors import DataError
from textcl.losses import KnownPositives, normalize_text  # re-exported for callers
from textcl.types import Example, ScoredPair

LENGTH_WINDOW_BATCHES = 64  # length grouping sorts within windows of this many batches


@dataclass(frozen=True)
class Batch:
    """One training batch. candidates[i * group_size] is the positive of queries[i].

    `scores` (one per query) is set for scored pairs (CoSENT); `positive_sets` (one per query) feeds
    the false-negative mask; when empty, only each query's own positive is known.
    """

    queries: list[str]
    candidates: list[str]
    group_size: int
    query_ids: list[str | None] = field(default_factory=list)
    candidate_ids: list[str | None] = field(default_factory=list)
    scores: list[float] | None = None
    positive_sets: list[KnownPositives] = field(default_factory=list)

    def __post_init__(self) -> None:
        b = len(self.queries)
        if self.group_size < 1 or len(self.candidates) != b * self.group_size:
            raise DataError(f"Batch: {len(self.candidates)} candidates for {b} queries does not match "
                            f"group_size={self.group_size} (need queries * group_size)")
        if self.query_ids and len(self.query_ids) != b:
            raise DataError(f"Batch: {len(self.query_ids)} query_ids for {b} queries")
        if self.candidate_ids and len(self.candidate_ids) != len(self.candidates):
            raise DataError(f"Batch: {len(self.candidate_ids)} candidate_ids for {len(self.candidates)} candidates")
        if self.scores is not None and len(self.scores) != b:
            raise DataError(f"Batch: {len(self.scores)} scores for {b} queries")
        if self.positive_sets and len(self.positive_sets) != b:
            raise DataError(f"Batch: {len(self.positive_sets)} positive_sets for {b} queries")

    def __len__(self) -> int:
        return len(self.queries)


def _query_key(ex: Example) -> str:
    return f"qid:{ex.query_id}" if ex.query_id is not None else f"text:{normalize_text(ex.query)}"


def _known_positives(examples: Sequence[Example]) -> dict[str, KnownPositives]:
    """Union of positives per query across all examples (one-pair-per-row data repeats the query)."""
    ids: dict[str, set[str]] = {}
    texts: dict[str, set[str]] = {}
    for ex in examples:
        key = _query_key(ex)
        ids.setdefault(key, set()).update(ex.positive_ids)
        texts.setdefault(key, set()).update(normalize_text(p) for p in ex.positives)
    return {k: KnownPositives(frozenset(ids[k]), frozenset(texts[k])) for k in ids}


def _pick_negatives(ex: Example, k: int, rng: np.random.Generator,
                    pool: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """Exactly k negatives. Enough: k distinct, sampled without replacement. Fewer (but some): all of
    them in random order, repeated cyclically. None: k drawn uniformly from `pool` (every example's
    negatives, or every positive when no example has negatives; never empty since each example has a
    positive); known positives of the query among them are masked by the loss."""
    own = [(n, ex.negative_ids[j] if len(ex.negative_ids) == len(ex.negatives) else None)
           for j, n in enumerate(ex.negatives)]
    if k == 0:
        return []
    if len(own) >= k:
        return [own[j] for j in rng.choice(len(own), size=k, replace=False)]
    if own:
        order = rng.permutation(len(own))
        return [own[order[j % len(own)]] for j in range(k)]
    return [pool[j] for j in rng.integers(0, len(pool), size=k)]


def _conflict_keys(ex: Example, picked: tuple[str, str | None]) -> set[str]:
    """Keys that must not repeat within a batch: the query and its *sampled* positive.

    Only the sampled positive counts: separating queries that share ANY known positive starves
    batches on real qrels (NFCorpus: 198 of 263 batches under half full), while the loss already
    masks every in-batch candidate that is a known positive of the anchor (by id or text)."""
    keys = {_query_key(ex), "text:" + normalize_text(ex.query), "text:" + normalize_text(picked[0])}
    if picked[1] is not None:
        keys.add("pid:" + picked[1])
    return keys


def _duplicate_aware(order: Sequence[int], keys: list[set[str]], batch_size: int) -> list[list[int]]:
    """Fill batches in `order`; an item sharing a query/positive key with the batch is deferred to the
    next batch (tried first there). An item always fits an empty batch, so this terminates."""
    batches: list[list[int]] = []
    deferred: list[int] = []
    ptr = 0
    while ptr < len(order) or deferred:
        batch: list[int] = []
        used: set[str] = set()
        still: list[int] = []
        candidates = iter(deferred)
        while len(batch) < batch_size:
            i = next(candidates, None)
            if i is None:
                if ptr >= len(order):
                    break
                i, ptr = order[ptr], ptr + 1
            if keys[i] & used:
                still.append(i)
            else:
                batch.append(i)
                used.update(keys[i])
        still.extend(candidates)  # deferred items not looked at because the batch filled up
        deferred = still
        batches.append(batch)
    return batches


def _epoch_order(lengths: Sequence[int], batch_size: int, rng: np.random.Generator,
                 length_grouped: bool) -> np.ndarray:
    order = rng.permutation(len(lengths))
    if not length_grouped:
        return order
    window = batch_size * LENGTH_WINDOW_BATCHES
    parts = [sorted(order[s:s + window], key=lambda i: -lengths[i]) for s in range(0, len(order), window)]
    return np.array([i for p in parts for i in p], dtype=np.int64)


def make_batches(examples: Sequence[Example], batch_size: int, *, num_negatives: int,
                 rng: np.random.Generator, length_grouped: bool = False) -> list[Batch]:
    """One epoch of batches, deterministic for the state of `rng` (use e.g. default_rng([seed, epoch])).

    Per query: one positive drawn uniformly when it has several, and exactly `num_negatives`
    negatives (rule in `_pick_negatives`), so group_size = 1 + num_negatives everywhere. Queries that
    share a query or a sampled positive are kept out of the same batch where possible (other known
    positives are masked by the loss via `positive_sets`). With
    `length_grouped`, items of similar length share a batch and batch order is shuffled.
    """
    if batch_size < 1 or num_negatives < 0:
        raise DataError(f"make_batches: batch_size must be >= 1 and num_negatives >= 0, got "
                        f"{batch_size} and {num_negatives}")
    for n, ex in enumerate(examples):
        if not ex.positives:
            raise DataError(f"example {n} (query {ex.query!r:.60}) has no positive", field="positives")
    known = _known_positives(examples)
    pool = [(t, ex.negative_ids[j] if len(ex.negative_ids) == len(ex.negatives) else None)
            for ex in examples for j, t in enumerate(ex.negatives)]
    if not pool:
        pool = [(t, ex.positive_ids[j] if len(ex.positive_ids) == len(ex.positives) else None)
                for ex in examples for j, t in enumerate(ex.positives)]
    picks = []
    for ex in examples:
        j = int(rng.integers(len(ex.positives))) if len(ex.positives) > 1 else 0
        pos_id = ex.positive_ids[j] if len(ex.positive_ids) == len(ex.positives) else None
        picks.append(((ex.positives[j], pos_id), _pick_negatives(ex, num_negatives, rng, pool)))
    lengths = [len(ex.query) + len(p[0][0]) for ex, p in zip(examples, picks)]
    order = _epoch_order(lengths, batch_size, rng, length_grouped)
    keys = [_conflict_keys(ex, p[0]) for ex, p in zip(examples, picks)]
    groups = _duplicate_aware(order, keys, batch_size)
    if length_grouped:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    out = []
    for g in groups:
        cands = [c for i in g for c in [picks[i][0], *picks[i][1]]]
        out.append(Batch(queries=[examples[i].query for i in g], candidates=[c[0] for c in cands],
                         group_size=1 + num_negatives, query_ids=[examples[i].query_id for i in g],
                         candidate_ids=[c[1] for c in cands],
                         positive_sets=[known[_query_key(examples[i])] for i in g]))
    return out


def whole_batch(examples: Sequence[Example]) -> Batch:
    """Every example in one batch, in order, with its first positive and no negative (group_size 1) and the
    known positives `make_batches` gives it (the union over every row of the same query): the batch of a
    trainer that computes every query's targets once (train.tune: adapter)."""
    known = _known_positives(examples)
    ids = [ex.positive_ids[0] if len(ex.positive_ids) == len(ex.positives) else None for ex in examples]
    return Batch(queries=[ex.query for ex in examples], candidates=[ex.positives[0] for ex in examples],
                 group_size=1, query_ids=[ex.query_id for ex in examples], candidate_ids=ids,
                 positive_sets=[known[_query_key(ex)] for ex in examples])


def _simple_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[s:s + batch_size] for s in range(0, n, batch_size)]


def make_scored_batches(pairs: Sequence[ScoredPair], batch_size: int, *, rng: np.random.Generator) -> list[Batch]:
    """CoSENT batches: queries = sentence1, candidates = sentence2 (group_size 1), scores = gold."""
    return [Batch(queries=[pairs[i].sentence1 for i in p], candidates=[pairs[i].sentence2 for i in p],
                  group_size=1, scores=[float(pairs[i].score) for i in p])
            for p in _simple_batches(len(pairs), batch_size, rng)]


def make_text_batches(texts: Sequence[str], batch_size: int, *, rng: np.random.Generator) -> list[Batch]:
    """Unsupervised SimCSE batches: each text is its own positive (two dropout views), group_size 1.

    Repeated texts in a batch are masked as false negatives via their normalized text."""
    out = []
    for p in _simple_batches(len(texts), batch_size, rng):
        batch_texts = [texts[i] for i in p]
        out.append(Batch(queries=batch_texts, candidates=list(batch_texts), group_size=1,
                         positive_sets=[KnownPositives(texts=frozenset([normalize_text(t)]))
                                        for t in batch_texts]))
    return out
