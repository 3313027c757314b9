"""textcl.adapter on hand-made vectors: the forms start at the identity with the expected parameter counts, the loss
and its gradients equal a hand-written loop, training is deterministic and keeps the adapter best on dev."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numeric import finite_differences

from textcl.adapter import AdapterSettings, LinearAdapter, QueryTargets, fit_adapter
from textcl.adapter_files import apply_adapter
from textcl.errors import ConfigError, DataError
from textcl.losses import corpus_info_nce


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


@pytest.mark.parametrize("rank, bias, expected", [(None, False, 8 * 8), (None, True, 8 * 8 + 8), (2, False, 2 * 8 * 2),
                                                  (3, True, 2 * 8 * 3 + 8)])
def test_forms_start_at_identity_with_their_parameter_count(rank, bias, expected):
    adapter = LinearAdapter(8, rank=rank, bias=bias, generator=torch.Generator().manual_seed(0))
    assert sum(p.numel() for p in adapter.parameters()) == expected
    assert torch.equal(adapter.weight(), torch.eye(8))
    q = _unit(torch.randn(5, 8))
    assert torch.allclose(adapter(q), q, atol=1e-6)
    if rank is not None:  # both factors would get a gradient: U is random, V zero
        assert adapter.u.abs().sum() > 0 and adapter.v.abs().sum() == 0
    weight, b = adapter.export()
    assert np.array_equal(weight, np.eye(8, dtype=np.float32)) and not b.any()


def _hand_loss(qa: torch.Tensor, corpus: torch.Tensor, positives: dict[int, list[int]], excluded: dict[int, set[int]],
               t: float) -> torch.Tensor:
    """Mean over queries of the mean over their positives of -s_p + log(e^s_p + sum_{j not excluded} e^s_j)."""
    total = 0.0
    for i, pos in positives.items():
        per = 0.0
        for p in pos:
            s_p = (qa[i] * corpus[p]).sum() / t
            denom = torch.exp(s_p) + sum(torch.exp((qa[i] * corpus[j]).sum() / t) for j in range(len(corpus))
                                         if j not in excluded[i])
            per = per + (-s_p + torch.log(denom))
        total = total + per / len(pos)
    return total / len(positives)


def test_loss_and_gradients_equal_a_hand_written_loop():
    g = torch.Generator().manual_seed(1)
    q, corpus = _unit(torch.randn(4, 6, generator=g)), _unit(torch.randn(10, 6, generator=g))
    positives = {0: [1], 1: [2, 3], 2: [4, 5, 6], 3: [0]}
    excluded = {0: {1, 7}, 1: {2, 3}, 2: {4, 5, 6, 9}, 3: {0}}  # positives plus same-text documents
    targets = QueryTargets(4, tuple(torch.tensor(x) for x in zip(*[(i, c) for i, cs in positives.items() for c in cs])),
                           tuple(torch.tensor(x) for x in zip(*[(i, c) for i, cs in excluded.items() for c in sorted(cs)])))
    adapter = LinearAdapter(6, bias=True)
    with torch.no_grad():
        adapter.delta.copy_(0.3 * torch.randn(6, 6, generator=g))
        adapter.bias.copy_(0.1 * torch.randn(6, generator=g))
    t = 0.1
    idx = torch.tensor([2, 0, 3, 1])  # a shuffled batch: rows renumbered to their positions
    pos, exc = targets.batch(idx)
    loss = corpus_info_nce(adapter(q[idx]), None, corpus, exclude=exc, temperature=t, positives=pos)
    loss.backward()

    def hand(delta: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        qa = _unit(q.double() @ (torch.eye(6, dtype=torch.float64) + delta).T + bias)
        return _hand_loss(qa, corpus.double(), positives, excluded, t)

    d0, b0 = adapter.delta.detach().double(), adapter.bias.detach().double()
    assert loss.item() == pytest.approx(hand(d0, b0).item(), abs=1e-5)
    grad_delta = finite_differences(lambda d: hand(d, b0), d0)
    grad_bias = finite_differences(lambda b: hand(d0, b[0]), b0[None])[0]
    assert torch.allclose(adapter.delta.grad.double(), grad_delta, atol=1e-4)
    assert torch.allclose(adapter.bias.grad.double(), grad_bias, atol=1e-4)


def _toy(seed: int = 0, n: int = 40, docs: int = 30, dim: int = 8):
    """Queries that are a fixed rotation of their positive document: the identity is far from the best W."""
    g = torch.Generator().manual_seed(seed)
    corpus = _unit(torch.randn(docs, dim, generator=g))
    rot = torch.linalg.qr(torch.randn(dim, dim, generator=g)).Q
    pos = torch.randint(0, docs, (n,), generator=g)
    q = _unit(corpus[pos] @ rot.T + 0.05 * torch.randn(n, dim, generator=g))
    rows = torch.arange(n)
    return q, corpus, QueryTargets(n, (rows, pos), (rows, pos)), pos


def _accuracy(q: torch.Tensor, corpus: torch.Tensor, pos: torch.Tensor):
    def evaluate(adapter: LinearAdapter) -> dict[str, float]:
        top = (adapter(q) @ corpus.T).argmax(dim=1)
        return {"toy/ndcg@10": float((top == pos).float().mean())}
    return evaluate


def test_training_is_deterministic_evaluates_each_quarter_epoch_and_keeps_the_best():
    q, corpus, targets, pos = _toy()
    settings = AdapterSettings(lr=0.05, batch_size=8, epochs=3, temperature=0.1, seed=3)
    runs = [fit_adapter(q, corpus, targets, settings, _accuracy(q, corpus, pos)) for _ in range(2)]
    assert np.array_equal(runs[0].weight, runs[1].weight) and runs[0].history == runs[1].history
    fit = runs[0]
    evals = [h for h in fit.history if "eval" in h]
    assert fit.steps_per_epoch == 5 and fit.eval_every == 1  # 5 steps per epoch: a quarter epoch rounds to 1 step
    assert [h["step"] for h in evals] == list(range(16))
    best = max(evals, key=lambda h: (h["eval"]["dev"]["toy/ndcg@10"], -h["step"]))
    assert fit.best_step == best["step"] and fit.best == best["eval"]["dev"]
    assert fit.best["toy/ndcg@10"] > fit.base["toy/ndcg@10"]
    # the kept W scores what the history says it scored
    kept = apply_adapter(q.numpy(), fit.weight, None, True) @ corpus.numpy().T
    assert float((kept.argmax(1) == pos.numpy()).mean()) == pytest.approx(fit.best["toy/ndcg@10"])


def test_early_stopping_and_low_rank_and_weight_decay_towards_identity():
    q, corpus, targets, pos = _toy(1)
    fit = fit_adapter(q, corpus, targets, AdapterSettings(lr=0.05, batch_size=8, epochs=20, rank=2, patience=3,
                                                          temperature=0.1), _accuracy(q, corpus, pos))
    assert fit.stopped_early and fit.history[-1]["early_stopped"] and fit.steps < 100
    assert fit.parameters == 2 * 8 * 2 and np.linalg.matrix_rank(fit.weight - np.eye(8), tol=1e-5) <= 2
    # decay acts on W - I: with a huge decay W stays near the identity, never near 0
    strong = fit_adapter(q, corpus, targets, AdapterSettings(lr=0.05, batch_size=8, epochs=2, weight_decay=19.0,
                                                             temperature=0.1))
    weak = fit_adapter(q, corpus, targets, AdapterSettings(lr=0.05, batch_size=8, epochs=2, temperature=0.1))
    off = [np.abs(f.weight - np.eye(8)).mean() for f in (strong, weak)]
    assert off[0] < 0.5 * off[1] and np.abs(np.diag(strong.weight)).mean() > 0.5


def test_targets_batches_and_bad_settings():
    rows, cols = torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([5, 1, 3, 0, 2, 4])
    targets = QueryTargets(3, (rows, cols), (rows, cols))
    (r, c), _ = targets.batch(torch.tensor([2, 0]))
    assert sorted(zip(r.tolist(), c.tolist())) == [(0, 0), (0, 2), (0, 4), (1, 1), (1, 5)]
    with pytest.raises(DataError, match="1 training queries have no positive in the corpus"):
        QueryTargets(4, (rows, cols), (rows, cols))
    with pytest.raises(ConfigError, match="adapter rank must be a positive integer, got 0"):
        AdapterSettings(rank=0)
    with pytest.raises(ConfigError, match="scheduler must be one of constant, linear, cosine"):
        AdapterSettings(scheduler="step")
    assert math.isclose(AdapterSettings().lr, 1e-3)
