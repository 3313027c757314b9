"""Search parity: exact chunked search vs brute force, FAISS factory indexes vs exact (tie-tolerant)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from textcl.errors import ConfigError
from textcl.knn import (
    _chunk_topk,
    build_faiss_index,
    exact_search,
    faiss_search,
    merge_topk,
    parse_index_spec,
    recall_at_k,
    search,
)


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    """OpenMP spinning on a busy 2-core machine makes small PQ trainings take seconds; one thread is faster."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute(q: np.ndarray, c: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = q @ c.T
    idx = np.stack([np.lexsort((np.arange(c.shape[0]), -row))[:k] for row in sims])
    return np.take_along_axis(sims, idx, 1), idx


@pytest.mark.parametrize("qc,cc", [(7, 13), (1000, 100000), (3, 1)])
def test_exact_matches_brute_force_for_any_chunking(qc, cc):
    rng = np.random.default_rng(0)
    q, c = _unit(rng, 20, 16), _unit(rng, 57, 16)
    s, i = exact_search(q, c, 10, query_chunk_size=qc, corpus_chunk_size=cc)
    bs, bi = _brute(q, c, 10)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(s, bs, atol=1e-6)


def test_ties_inside_one_chunk_go_to_the_lowest_index():
    # 30 identical documents: whatever torch.topk picks, the answer must be indices 0..4.
    c = np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (30, 1))
    c[7] = [0.0, 1.0]  # one worse document in the middle
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    for cc in (30, 8, 1):
        _, i = exact_search(q, c, 5, corpus_chunk_size=cc)
        assert i[0].tolist() == [0, 1, 2, 3, 4]
    s, i = _chunk_topk(torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.9, 0.5]]), 3)
    assert sorted(i[0].tolist()) == [0, 1, 4]


def test_padding_when_corpus_smaller_than_k():
    q = np.eye(2, dtype=np.float32)
    s, i = exact_search(q, np.eye(2, dtype=np.float32), 4)
    assert i.tolist() == [[0, 1, -1, -1], [1, 0, -1, -1]]
    assert np.isneginf(s[:, 2:]).all()


def test_merge_is_order_independent_and_keeps_padding_last():
    a = (torch.tensor([[0.9, 0.5, -float("inf")]]), torch.tensor([[4, 2, -1]]))
    b = (torch.tensor([[0.5, 0.7]]), torch.tensor([[1, 3]]))
    ab = merge_topk(*a, *b, 4)
    ba = merge_topk(*b, *a, 4)
    assert ab[1].tolist() == ba[1].tolist() == [[4, 3, 1, 2]]


def _tie_tolerant_equal(s1, i1, s2, i2, atol=1e-5):
    """Same scores; same indices wherever a score is not tied (faiss.contrib.evaluation style)."""
    np.testing.assert_allclose(s1, s2, atol=atol)
    for r in range(len(i1)):
        tied = (np.abs(s1[r][:, None] - s1[r][None, :]) < atol).sum(1) > 1
        above_kth = s1[r] > s1[r][-1] + atol  # a tie at the k-th place may be cut differently
        keep = ~tied & above_kth
        assert i1[r][keep].tolist() == i2[r][keep].tolist()
        assert set(i1[r][above_kth].tolist()) == set(i2[r][above_kth].tolist())


def test_faiss_flat_equals_exact_search_tie_tolerant():
    rng = np.random.default_rng(1)
    q, c = _unit(rng, 50, 32), _unit(rng, 300, 32)
    c[10] = c[20]  # an exact tie
    es, ei = exact_search(q, c, 15, corpus_chunk_size=64)
    fs, fi = search(q, c, 15, factory="Flat")
    _tie_tolerant_equal(es, ei, fs, fi)
    assert recall_at_k(fi, ei, 15, es, fs) == 1.0


@pytest.mark.parametrize("spec", ["IVF16,Flat|nprobe=16", "HNSW16", "IVF8,PQ4x4|nprobe=8"])
def test_factory_strings_share_the_layout_and_report_recall(spec):
    rng = np.random.default_rng(2)
    q, c = _unit(rng, 40, 32), _unit(rng, 1000, 32)
    es, ei = exact_search(q, c, 10)
    fs, fi = search(q, c, 10, factory=spec)
    assert fs.shape == (40, 10) and fi.dtype == np.int64 and fs.dtype == np.float32
    assert (np.diff(fs, axis=1) <= 1e-6).all()  # descending
    r = recall_at_k(fi, ei, 10)
    assert r == pytest.approx(np.mean([len(set(fi[i]) & set(ei[i])) / 10 for i in range(40)]))
    if spec.startswith(("IVF16,Flat", "HNSW")):
        assert r > 0.95  # full probing / a graph this small is essentially exact


def test_ivf_is_deterministic_for_a_seed():
    rng = np.random.default_rng(3)
    q, c = _unit(rng, 30, 16), _unit(rng, 1000, 16)
    a = faiss_search(build_faiss_index(c, "IVF32,Flat|nprobe=2", seed=5), q, 5)
    b = faiss_search(build_faiss_index(c, "IVF32,Flat|nprobe=2", seed=5), q, 5)
    np.testing.assert_array_equal(a[1], b[1])


def test_bad_index_specs_say_what_is_wrong():
    c = np.eye(4, dtype=np.float32)
    with pytest.raises(ConfigError, match="invalid FAISS factory string 'Nope12'"):
        build_faiss_index(c, "Nope12")
    with pytest.raises(ConfigError, match="64 IVF lists need at least 64 corpus vectors, got 4"):
        build_faiss_index(c, "IVF64,Flat")
    with pytest.raises(ConfigError, match="must look like name=number"):
        parse_index_spec("Flat|nprobe")
    assert parse_index_spec("IVF8,Flat|nprobe=4, efSearch=2") == ("IVF8,Flat", {"nprobe": 4.0, "efSearch": 2.0})


def test_recall_counts_tied_alternatives_as_found():
    exact_i, exact_s = np.array([[0, 1]]), np.array([[0.9, 0.5]], dtype=np.float32)
    approx_i, approx_s = np.array([[0, 2]]), np.array([[0.9, 0.5]], dtype=np.float32)
    assert recall_at_k(approx_i, exact_i) == 0.5
    assert recall_at_k(approx_i, exact_i, 2, exact_s, approx_s) == 1.0
