"""Distance similarities (euclidean, manhattan) as sentence-transformers scores them, in search (exact and
FAISS), in-batch InfoNCE and the whole-corpus losses: values and gradients against dense references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import util

from textcl.knn import build_faiss_index, exact_search, faiss_search
from textcl.losses import corpus_info_nce, info_nce, sampled_corpus_info_nce
from textcl.scores import SIMILARITIES, paired_scores, pairwise_scores

ST = {"cosine": util.dot_score, "dot": util.dot_score, "euclidean": util.euclidean_sim,
      "manhattan": util.manhattan_sim}
DISTANCES = ["euclidean", "manhattan"]
T = 0.05


def _raw(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sim", SIMILARITIES)
def test_scores_equal_sentence_transformers_similarity_functions(sim):
    q, c = _raw(5, 8, seed=0), _raw(7, 8, seed=1)
    torch.testing.assert_close(pairwise_scores(q, c, sim), ST[sim](q, c), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(paired_scores(q, c[:5], sim), ST[sim](q, c[:5]).diagonal(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sim", DISTANCES)
def test_exact_and_faiss_flat_search_rank_by_minus_the_distance(sim):
    q, c = _raw(6, 8, seed=2).numpy(), _raw(40, 8, seed=3).numpy()
    ref = ST[sim](torch.from_numpy(q), torch.from_numpy(c)).numpy()
    s, i = exact_search(q, c, 5, corpus_chunk_size=16, similarity=sim)  # chunked: merged across chunks
    np.testing.assert_array_equal(i, np.argsort(-ref, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(s, np.take_along_axis(ref, i, 1), atol=1e-5)
    fs, fi = faiss_search(build_faiss_index(c, "Flat", similarity=sim), q, 5)
    np.testing.assert_array_equal(fi, i)
    np.testing.assert_allclose(fs, s, atol=1e-4)


def _dense_corpus_loss(q, pos, corpus, excluded, sim):
    """The corpus InfoNCE written densely: positive against every non-excluded corpus row."""
    logits = pairwise_scores(q, corpus, sim) / T
    logits = logits.masked_fill(excluded, float("-inf"))
    s_pos = paired_scores(q, pos, sim) / T
    return (torch.logaddexp(s_pos, torch.logsumexp(logits, dim=1)) - s_pos).mean()


@pytest.mark.parametrize("sim", DISTANCES)
def test_corpus_info_nce_by_distance_matches_the_dense_loss_in_value_and_gradient(sim):
    corpus = _raw(13, 6, seed=4)
    rows_pos = [2, 5, 5, 9]
    pairs = [(0, 2), (0, 7), (1, 5), (2, 5), (3, 9), (3, 0)]
    excluded = torch.zeros(4, 13, dtype=torch.bool)
    for r, c in pairs:
        excluded[r, c] = True
    q1 = _raw(4, 6, seed=5).requires_grad_(True)
    q2 = q1.detach().clone().requires_grad_(True)
    rows = torch.tensor([r for r, _ in pairs])
    cols = torch.tensor([c for _, c in pairs])
    loss = corpus_info_nce(q1, corpus[rows_pos], corpus, exclude=(rows, cols), temperature=T, chunk_size=4,
                           similarity=sim)
    loss.backward()
    ref = _dense_corpus_loss(q2, corpus[rows_pos], corpus, excluded, sim)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), abs=1e-5)
    torch.testing.assert_close(q1.grad, q2.grad, atol=1e-5, rtol=1e-4)
    # every positive a target: equals the per-positive mean of the dense form with fellow positives excluded
    q3 = q1.detach().clone().requires_grad_(True)
    multi = corpus_info_nce(q3, None, corpus, exclude=(rows, cols), temperature=T, chunk_size=5,
                            positives=(torch.tensor([0, 0, 1, 2, 3]), torch.tensor([2, 7, 5, 5, 9])), similarity=sim)
    multi.backward()
    q4 = q1.detach().clone().requires_grad_(True)
    per = [_dense_corpus_loss(q4[[i]], corpus[[p]], corpus, excluded[[i]], sim) for i, p in
           [(0, 2), (0, 7), (1, 5), (2, 5), (3, 9)]]
    ref_multi = torch.stack([(per[0] + per[1]) / 2, per[2], per[3], per[4]]).mean()
    ref_multi.backward()
    assert multi.item() == pytest.approx(ref_multi.item(), abs=1e-5)
    torch.testing.assert_close(q3.grad, q4.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("sim", DISTANCES)
def test_sampled_estimator_by_distance_is_exact_when_the_top_k_covers_the_corpus(sim):
    corpus, q = _raw(9, 6, seed=6), _raw(3, 6, seed=7)
    pos_rows = torch.tensor([1, 4, 8])
    exclude = (torch.tensor([0, 1, 2]), pos_rows)
    exact = corpus_info_nce(q, corpus[pos_rows], corpus, exclude=exclude, temperature=T, similarity=sim)
    top = torch.arange(9).expand(3, -1)
    valid = torch.ones(3, 9, dtype=torch.bool)
    valid[torch.arange(3), pos_rows] = False
    sampled = sampled_corpus_info_nce(q, corpus[pos_rows], corpus[top], valid, corpus[:0],
                                      torch.zeros(3, 0, dtype=torch.bool), corpus_size=9, temperature=T,
                                      similarity=sim)
    assert sampled.item() == pytest.approx(exact.item(), abs=1e-5)


@pytest.mark.parametrize("sim", DISTANCES)
def test_in_batch_info_nce_scores_by_minus_the_distance(sim):
    q, c = _raw(4, 6, seed=8), _raw(8, 6, seed=9)  # group size 2: row 2i is query i's positive
    logits = ST[sim](q, c) / T
    ref = F.cross_entropy(logits, torch.arange(4) * 2)
    got = info_nce(q, c, temperature=T, group_size=2, similarity=sim)
    assert got.item() == pytest.approx(ref.item(), abs=1e-5)
