"""Compressed document vectors: each form's search equals an exact search over its dequantised vectors, the
sizes are what is stored, binary scoring is float query x sign bits, and rescoring re-ranks with float vectors."""

from __future__ import annotations

import numpy as np
import pytest

from textcl.compress import compress, parse, rescore
from textcl.errors import ConfigError
from textcl.knn import exact_search


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


DOCS = _unit(np.random.default_rng(0).standard_normal((600, 32)))
QUERIES = _unit(np.random.default_rng(1).standard_normal((25, 32)))


@pytest.mark.parametrize("spec", ["none", "int8", "binary", "pq:8"])
def test_search_equals_exact_search_over_the_dequantised_vectors(spec):
    comp = compress(DOCS, spec)
    scores, rows = comp.search(QUERIES, 10, block=128)  # several binary blocks: the merge is exercised
    ref_scores, ref_rows = exact_search(QUERIES, comp.dequantised, 10)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-4)
    untied = np.abs(np.diff(ref_scores, axis=1)).min(axis=1) > 1e-4  # rows whose top 10 has no near-tie
    assert untied.sum() >= 20
    np.testing.assert_array_equal(rows[untied], ref_rows[untied])


def test_sizes_and_forms():
    n, d = DOCS.shape
    assert compress(DOCS, "none").nbytes == n * d * 4
    binary = compress(DOCS, "binary")
    assert binary.nbytes == n * d // 8 and binary.codes.dtype == np.uint8
    np.testing.assert_allclose(binary.dequantised, np.where(DOCS > 0, 1.0, -1.0) / np.sqrt(d), atol=1e-7)
    int8 = compress(DOCS, "int8")
    assert int8.codes.shape == (n, d) and int8.nbytes == n * d + 2 * d * 4
    assert np.abs(int8.dequantised - DOCS).max() < 0.02  # 256 levels over each dimension's range
    pq = compress(DOCS, "pq:8")
    assert pq.codes.shape == (n, 8) and pq.nbytes == n * 8 + 8 * 256 * 4 * 4


def test_rescore_reranks_candidates_with_float_vectors():
    comp = compress(DOCS, "binary")
    _, rows = comp.search(QUERIES, 50)
    scores, reranked = rescore(QUERIES, rows, DOCS)
    np.testing.assert_allclose(scores, np.take_along_axis(QUERIES @ DOCS.T, reranked, axis=1), atol=1e-6)
    assert (np.diff(scores, axis=1) <= 1e-7).all()
    assert {tuple(sorted(r)) for r in reranked} == {tuple(sorted(r)) for r in rows}


def test_bad_spec_names_the_forms():
    assert parse("PQ:48") == ("pq", 48) and parse(None) == ("none", None)
    for bad in ("int4", "pq:", "pq:0"):
        with pytest.raises(ConfigError, match="none, int8, binary or pq:M"):
            parse(bad)
    with pytest.raises(ConfigError, match="multiple of M"):
        compress(DOCS, "pq:5")
