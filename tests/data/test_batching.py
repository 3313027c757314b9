"""Batch layout, negative-count rule, duplicate-aware sampling, determinism and resume slicing."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from textcl.data.batching import Batch, make_batches, make_scored_batches, make_text_batches
from textcl.errors import DataError
from textcl.types import Example, ScoredPair


def _examples(n=20, negs=lambda i: 4):
    return [Example(query=f"query {i}", positives=(f"pos {i}a", f"pos {i}b"),
                    negatives=tuple(f"neg {i}.{j}" for j in range(negs(i))), query_id=f"q{i}",
                    positive_ids=(f"d{i}a", f"d{i}b"), negative_ids=tuple(f"n{i}.{j}" for j in range(negs(i))))
            for i in range(n)]


def test_layout_and_exact_negative_count():
    exs = _examples()
    by_query = {e.query: e for e in exs}
    batches = make_batches(exs, 6, num_negatives=3, rng=np.random.default_rng(0))
    assert sum(len(b) for b in batches) == 20
    assert sorted(q for b in batches for q in b.queries) == sorted(by_query)
    for b in batches:
        assert b.group_size == 4 and len(b.candidates) == 4 * len(b)
        for i, q in enumerate(b.queries):
            ex = by_query[q]
            group = b.candidates[i * 4:(i + 1) * 4]
            assert group[0] in ex.positives
            assert b.candidate_ids[i * 4] == ex.positive_ids[ex.positives.index(group[0])]
            assert len(set(group[1:])) == 3 and set(group[1:]) <= set(ex.negatives)
            assert b.positive_sets[i].ids == frozenset(ex.positive_ids)


def test_few_negatives_cycle_and_none_borrow_from_pool():
    exs = _examples(6, negs=lambda i: [0, 1, 2, 5, 5, 5][i])
    batches = make_batches(exs, 6, num_negatives=3, rng=np.random.default_rng(1))
    (b,) = batches
    for i, q in enumerate(b.queries):
        k = int(q.split()[1])
        negs = b.candidates[i * 4 + 1:(i + 1) * 4]
        if k == 1:
            assert negs == ["neg 1.0"] * 3
        elif k == 2:
            assert Counter(negs).keys() == {"neg 2.0", "neg 2.1"} and negs[0] == negs[2]
        elif k == 0:  # borrowed from the other examples' negatives
            assert all(n.startswith("neg ") for n in negs)


def test_zero_negatives_gives_pairs():
    b = make_batches(_examples(4), 4, num_negatives=0, rng=np.random.default_rng(0))[0]
    assert b.group_size == 1 and len(b.candidates) == 4


def test_batches_are_deterministic_for_the_rng_state():
    exs = _examples(30)
    a = make_batches(exs, 4, num_negatives=2, rng=np.random.default_rng(7))
    b = make_batches(exs, 4, num_negatives=2, rng=np.random.default_rng(7))
    c = make_batches(exs, 4, num_negatives=2, rng=np.random.default_rng(8))
    assert a == b and a != c


def test_positive_is_resampled_per_epoch():
    exs = _examples(1)
    seen = {make_batches(exs, 1, num_negatives=0, rng=np.random.default_rng(s))[0].candidates[0]
            for s in range(20)}
    assert seen == {"pos 0a", "pos 0b"}


def test_duplicate_aware_sampler_separates_shared_queries_and_positives():
    # one-pair-per-row data: query q0 appears 3 times; q1 and q2 share positive d-shared
    exs = [Example("q0", (f"p{j}",), query_id="q0", positive_ids=(f"d{j}",)) for j in range(3)]
    exs += [Example("q1", ("shared",), query_id="q1", positive_ids=("d-shared",)),
            Example("q2", ("shared text",), query_id="q2", positive_ids=("d-shared",))]
    exs += [Example(f"other {i}", (f"o{i}",), query_id=f"o{i}", positive_ids=(f"do{i}",)) for i in range(7)]
    for seed in range(10):
        batches = make_batches(exs, 4, num_negatives=0, rng=np.random.default_rng(seed))
        assert sum(len(b) for b in batches) == len(exs)
        for b in batches:
            assert len(set(b.query_ids)) == len(b.query_ids)
            assert not {"q1", "q2"} <= set(b.query_ids)
    # all positives of q0 across its rows are known to the mask of each q0 row
    b = next(b for b in batches if "q0" in b.query_ids)
    assert b.positive_sets[b.query_ids.index("q0")].ids == {"d0", "d1", "d2"}


def test_queries_sharing_only_unsampled_positives_fill_batches():
    """Real qrels (NFCorpus): many queries share some positive. Only the sampled positive separates
    queries; the other shared positives stay in positive_sets so the loss masks them."""
    shared = tuple(f"common doc {j}" for j in range(5))
    exs = [Example(f"query {i}", (f"own doc {i}", *shared), query_id=f"q{i}",
                   positive_ids=(f"own{i}", *[f"c{j}" for j in range(5)])) for i in range(32)]
    batches = make_batches(exs, 8, num_negatives=0, rng=np.random.default_rng(0))
    assert sum(len(b) for b in batches) == 32
    assert sum(len(b) for b in batches[:3]) >= 12  # not one query per batch
    for b in batches:
        picked = [c for c in b.candidates]
        assert len(set(picked)) == len(picked)  # never the same sampled positive twice in a batch
        for ks in b.positive_sets:
            assert {f"c{j}" for j in range(5)} <= set(ks.ids)


def test_length_grouping_puts_similar_lengths_together():
    exs = [Example(f"q{i} " + "w " * (i % 17), (f"p{i} " + "x " * (i % 17),), query_id=str(i))
           for i in range(200)]
    full = make_batches(exs, 16, num_negatives=0, rng=np.random.default_rng(0))
    assert [len(b) for b in full] == [16] * (200 // 16) + [200 % 16]
    grouped = make_batches(exs, 16, num_negatives=0, rng=np.random.default_rng(0), length_grouped=True)

    def spread(batches):
        return np.mean([np.ptp([len(q) for q in b.queries]) for b in batches])

    assert spread(grouped) < spread(full) / 3
    assert sorted(q for b in grouped for q in b.query_ids) == sorted(e.query_id for e in exs)


def test_scored_and_text_batches():
    pairs = [ScoredPair(f"a{i}", f"b{i}", float(i)) for i in range(5)]
    sb = make_scored_batches(pairs, 2, rng=np.random.default_rng(0))
    assert [len(b) for b in sb] == [2, 2, 1]
    for b in sb:
        assert b.group_size == 1 and [float(q[1:]) for q in b.queries] == b.scores
        assert [c.replace("b", "a") for c in b.candidates] == b.queries
    tb = make_text_batches(["x", "y", "z"], 2, rng=np.random.default_rng(0))
    assert [len(b) for b in tb] == [2, 1] and tb[0].candidates == tb[0].queries
    assert tb[0].positive_sets[0].texts == {tb[0].queries[0]}


def test_errors_name_the_problem():
    with pytest.raises(DataError, match="example 1 .*has no positive"):
        make_batches([Example("a", ("b",)), Example("c", ())], 2, num_negatives=0, rng=np.random.default_rng(0))
    with pytest.raises(DataError, match="does not match group_size=2"):
        Batch(queries=["a"], candidates=["b"], group_size=2)
    with pytest.raises(DataError, match="batch_size must be >= 1"):
        make_batches([Example("a", ("b",))], 0, num_negatives=1, rng=np.random.default_rng(0))
    assert make_batches([], 2, num_negatives=1, rng=np.random.default_rng(0)) == []
