"""Corpus-wide negatives: the chunked whole-corpus InfoNCE (values AND gradients against a hand-written
loop, fp16 storage, fully excluded rows) and the sampled-candidate estimator (exact when the top-K
covers the corpus, unbiased denominator otherwise)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from numeric import finite_differences

from textcl.losses import corpus_info_nce, sampled_corpus_info_nce

T = 0.05


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _loop_loss(q, pos, corpus, excluded, temperature):
    """-log( e^{s_ip} / (e^{s_ip} + sum_{j not excluded} e^{s_ij}) ), python loops, mean over rows."""
    total = 0.0
    for i in range(q.shape[0]):
        s_pos = float(q[i] @ pos[i]) / temperature
        terms = [math.exp(s_pos)] + [math.exp(float(q[i] @ corpus[j]) / temperature)
                                     for j in range(corpus.shape[0]) if (i, j) not in excluded]
        total += -(s_pos - math.log(sum(terms)))
    return total / q.shape[0]


def _exclusions(pairs):
    rows = torch.tensor([r for r, _ in pairs], dtype=torch.long)
    cols = torch.tensor([c for _, c in pairs], dtype=torch.long)
    return rows, cols


def test_corpus_info_nce_value_and_gradient_match_a_loop():
    q = _unit(4, 8, seed=0).float().requires_grad_(True)
    corpus = _unit(11, 8, seed=1).float()
    positive_rows = [2, 5, 5, 9]
    pos = corpus[positive_rows]
    # each query's own positive is excluded (it enters once, as the positive); q1 and q2 share d5 and
    # q0 has a second known positive d7
    pairs = [(0, 2), (0, 7), (1, 5), (2, 5), (3, 9), (3, 0)]
    loss = corpus_info_nce(q, pos, corpus, exclude=_exclusions(pairs), temperature=T, chunk_size=3)
    loss.backward()
    expect = _loop_loss(q.detach().double(), pos.double(), corpus.double(), set(pairs), T)
    assert abs(loss.item() - expect) < 1e-5

    # gradient: finite differences of the loop, per coordinate
    num = finite_differences(lambda x: _loop_loss(x, pos.double(), corpus.double(), set(pairs), T), q)
    assert torch.allclose(q.grad.double(), num, atol=1e-4)


def test_chunking_does_not_change_the_result_and_gradient_flows_to_a_live_positive():
    q1 = _unit(5, 16, seed=2).float().requires_grad_(True)
    q2 = q1.detach().clone().requires_grad_(True)
    corpus = _unit(50, 16, seed=3).float()
    pos1 = _unit(5, 16, seed=4).float().requires_grad_(True)
    pos2 = pos1.detach().clone().requires_grad_(True)
    ex = _exclusions([(0, 1), (4, 49), (4, 48)])
    a = corpus_info_nce(q1, pos1, corpus, exclude=ex, temperature=T, chunk_size=7)
    b = corpus_info_nce(q2, pos2, corpus, exclude=ex, temperature=T, chunk_size=1000)
    a.backward()
    b.backward()
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(q1.grad, q2.grad, atol=1e-6)
    assert torch.allclose(pos1.grad, pos2.grad, atol=1e-6) and pos1.grad.abs().sum() > 0


def test_fp16_storage_is_within_a_bound_of_fp32():
    q = _unit(8, 384, seed=5).float()
    corpus = _unit(3000, 384, seed=6).float()
    pos = corpus[:8]
    ex = _exclusions([(i, i) for i in range(8)])
    exact = corpus_info_nce(q, pos, corpus, exclude=ex, temperature=T)
    half = corpus_info_nce(q, pos.half(), corpus.half(), exclude=ex, temperature=T)
    assert abs(exact.item() - half.item()) < 2e-3


def test_a_query_with_every_document_excluded_has_zero_loss_and_finite_gradient():
    q = _unit(2, 8, seed=7).float().requires_grad_(True)
    corpus = _unit(3, 8, seed=8).float()
    ex = _exclusions([(0, 0), (0, 1), (0, 2), (1, 0)])
    loss = corpus_info_nce(q, corpus[[0, 0]], corpus, exclude=ex, temperature=T, chunk_size=2)
    loss.backward()
    assert torch.isfinite(q.grad).all()
    alone = corpus_info_nce(q[1:].detach(), corpus[[0]], corpus, exclude=_exclusions([(0, 0)]), temperature=T)
    assert abs(loss.item() - alone.item() / 2) < 1e-6  # row 0 contributes log(1) = 0


def test_sampled_estimator_is_exact_when_the_top_k_covers_the_corpus():
    q = _unit(3, 8, seed=9).float().requires_grad_(True)
    corpus = _unit(6, 8, seed=10).float()
    pos = corpus[[0, 1, 2]]
    pairs = [(0, 0), (1, 1), (2, 2), (2, 3)]
    exact = corpus_info_nce(q, pos, corpus, exclude=_exclusions(pairs), temperature=T)
    top = torch.arange(6).repeat(3, 1)
    valid = torch.ones(3, 6, dtype=torch.bool)
    for r, c in pairs:
        valid[r, c] = False
    empty = torch.zeros(0, 8)
    approx = sampled_corpus_info_nce(q, pos, corpus[top], valid, empty, torch.zeros(3, 0, dtype=torch.bool),
                                     corpus_size=6, temperature=T)
    assert abs(exact.item() - approx.item()) < 1e-5


def test_sampled_denominator_is_unbiased():
    """E[e^{loss + s_p}] - e^{s_p} = E[Z_hat] must equal the exact sum over non-top-K, non-excluded docs."""
    n, k, m, draws = 40, 5, 4, 4000
    q = _unit(1, 8, seed=11).float()
    corpus = _unit(n, 8, seed=12).float()
    pos = corpus[[0]]
    s = (q @ corpus.T / T)[0]
    excluded = {0, 17}
    order = [j for j in torch.argsort(s, descending=True).tolist() if j not in excluded]
    top = torch.tensor([order[:k]])
    z_exact = float(torch.exp(s[order]).sum())  # top-K exactly + the rest
    s_pos = float(s[0])
    rng = np.random.default_rng(0)
    estimates = []
    for _ in range(draws):
        idx = torch.from_numpy(rng.integers(0, n, size=m))
        valid = torch.tensor([[j not in excluded and j not in order[:k] for j in idx.tolist()]])
        loss = sampled_corpus_info_nce(q, pos, corpus[top], torch.ones(1, k, dtype=torch.bool), corpus[idx], valid,
                                       corpus_size=n, temperature=T)
        estimates.append(math.exp(loss.item() + s_pos) - math.exp(s_pos))
    mean, sem = float(np.mean(estimates)), float(np.std(estimates) / math.sqrt(draws))
    assert abs(mean - z_exact) < 4 * sem + 1e-3 * z_exact


def _loop_multi(q, corpus, positives, excluded, temperature):
    """Every positive p of query i against the non-excluded documents, python loops: the mean over p of
    -log(e^{s_ip} / (e^{s_ip} + sum_neg e^{s_ij})), then the mean over queries."""
    total = 0.0
    for i in range(q.shape[0]):
        neg = sum(math.exp(float(q[i] @ corpus[j]) / temperature)
                  for j in range(corpus.shape[0]) if (i, j) not in excluded)
        terms = []
        for p in positives[i]:
            s_pos = float(q[i] @ corpus[p]) / temperature
            terms.append(-(s_pos - math.log(math.exp(s_pos) + neg)))
        total += sum(terms) / len(terms)
    return total / q.shape[0]


def test_every_positive_as_a_target_matches_a_loop_in_value_and_gradient():
    q = _unit(3, 8, seed=20).float().requires_grad_(True)
    corpus = _unit(12, 8, seed=21).float()
    positives = {0: [1, 4, 7], 1: [2], 2: [4, 5]}  # q0 has three positives, q2 shares d4 with q0
    pairs = [(i, p) for i, ps in positives.items() for p in ps] + [(1, 11)]  # d11 has q1's text
    pos_pairs = _exclusions([(i, p) for i, ps in positives.items() for p in ps])
    loss = corpus_info_nce(q, None, corpus, exclude=_exclusions(pairs), temperature=T, chunk_size=5,
                           positives=pos_pairs)
    loss.backward()
    expect = _loop_multi(q.detach().double(), corpus.double(), positives, set(pairs), T)
    assert abs(loss.item() - expect) < 1e-5
    num = finite_differences(lambda x: _loop_multi(x, corpus.double(), positives, set(pairs), T), q)
    assert torch.allclose(q.grad.double(), num, atol=1e-4)


def test_one_positive_per_query_given_as_pairs_equals_the_single_positive_form():
    q = _unit(4, 8, seed=22).float()
    corpus = _unit(9, 8, seed=23).float()
    rows = [3, 0, 8, 3]
    ex = _exclusions([(i, r) for i, r in enumerate(rows)])
    single = corpus_info_nce(q, corpus[rows], corpus, exclude=ex, temperature=T)
    pairs = corpus_info_nce(q, None, corpus, exclude=ex, temperature=T, positives=ex)
    assert abs(single.item() - pairs.item()) < 1e-6


def test_sampled_estimator_with_every_positive_is_exact_when_the_top_k_covers_the_corpus():
    q = _unit(2, 8, seed=24).float()
    corpus = _unit(7, 8, seed=25).float()
    positives = {0: [0, 3], 1: [1]}
    pairs = [(i, p) for i, ps in positives.items() for p in ps]
    exact = corpus_info_nce(q, None, corpus, exclude=_exclusions(pairs), temperature=T,
                            positives=_exclusions(pairs))
    valid = torch.ones(2, 7, dtype=torch.bool)
    for r, c in pairs:
        valid[r, c] = False
    top = torch.arange(7).repeat(2, 1)
    approx = sampled_corpus_info_nce(q, None, corpus[top], valid, torch.zeros(0, 8),
                                     torch.zeros(2, 0, dtype=torch.bool), corpus_size=7, temperature=T,
                                     corpus=corpus, positives=_exclusions(pairs))
    assert abs(exact.item() - approx.item()) < 1e-5
    assert abs(exact.item() - _loop_multi(q.double(), corpus.double(), positives, set(pairs), T)) < 1e-5
