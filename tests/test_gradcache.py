"""GradCache parity on the tiny BERT: parameter gradients of the cached loss equal the plain loss
(fp32, atol 1e-5) for every loss combination, and dropout masks are replayed exactly."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from textcl.config import LossConfig
from textcl.data.batching import make_batches, make_scored_batches, make_text_batches
from textcl.gradcache import GradCache
from textcl.losses import info_nce
from textcl.train.objective import forward_backward
from textcl.types import Example, ScoredPair

WORDS = "cancer diet vitamin heart risk health study food sugar fat cell blood brain sleep coffee tea".split()


def st_embed(model):
    def embed(texts, role):
        return model(model.preprocess(texts))["sentence_embedding"]
    return embed


def chunked(embed, size):
    """Plain (with-grad) embedding in the same chunks GradCache uses: the dropout reference."""
    def run(texts, role):
        return torch.cat([embed(texts[s:s + size], role) for s in range(0, len(texts), size)])
    return run


def text(i):
    # lengths vary too: the session fixture's tokenizer may map every word to [UNK]
    rng = np.random.default_rng(i)
    return " ".join(rng.choice(WORDS, size=2 + i % 7))


def examples(n=5, negs=2):
    return [Example(text(i), (text(100 + i),), tuple(text(200 + 10 * i + j) for j in range(negs)),
                    query_id=f"q{i}", positive_ids=(f"d{i}",)) for i in range(n)]


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return SentenceTransformer(str(tiny_model_path), device="cpu")


def grads_after(model, fn):
    model.zero_grad(set_to_none=True)
    value = fn()
    return value, {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a, b, atol=1e-5):
    assert a.keys() == b.keys() and a
    for n in a:
        assert torch.allclose(a[n], b[n], atol=atol), (n, (a[n] - b[n]).abs().max().item())


def _batches():
    exs = examples(5, negs=2)
    # a false negative: query 3's positive text is also listed (under another id) as query 1's positive
    exs[1] = Example(exs[1].query, (exs[1].positives[0], exs[3].positives[0]), exs[1].negatives,
                     query_id="q1", positive_ids=("d1", "d3"))
    return {
        "infonce_pairs": (make_batches(exs, 5, num_negatives=0, rng=np.random.default_rng(0))[0], {}),
        "infonce_negatives": (make_batches(exs, 5, num_negatives=2, rng=np.random.default_rng(0))[0],
                              {"mask_false_negatives": False}),
        "infonce_masked": (make_batches(exs, 5, num_negatives=2, rng=np.random.default_rng(1))[0], {}),
        "infonce_symmetric": (make_batches(exs, 5, num_negatives=1, rng=np.random.default_rng(2))[0],
                              {"symmetric": True}),
        "cosent": (make_scored_batches([ScoredPair(text(i), text(50 + i), float(i % 3)) for i in range(6)],
                                       6, rng=np.random.default_rng(0))[0], {"name": "cosent"}),
        "simcse": (make_text_batches([text(i) for i in range(6)], 6, rng=np.random.default_rng(0))[0],
                   {"name": "simcse", "temperature": 0.1}),
    }


@pytest.mark.parametrize("case", list(_batches()))
def test_gradcache_parity_dropout_off(model, case):
    batch, over = _batches()[case]
    cfg = LossConfig(**over)
    model.eval()
    embed = st_embed(model)
    v_plain, g_plain = grads_after(model, lambda: forward_backward(embed, batch, cfg))
    v_cached, g_cached = grads_after(model, lambda: forward_backward(embed, batch, cfg, chunk_size=2))
    assert v_cached == pytest.approx(v_plain, abs=1e-5)
    assert_same(g_plain, g_cached)


@pytest.mark.parametrize("case", ["simcse", "infonce_masked"])
def test_gradcache_replays_dropout(model, case):
    batch, over = _batches()[case]
    cfg = LossConfig(**over)
    model.train()
    embed = st_embed(model)
    try:
        torch.manual_seed(123)
        v_ref, g_ref = grads_after(model, lambda: forward_backward(chunked(embed, 3), batch, cfg))
        torch.manual_seed(123)
        v_gc, g_gc = grads_after(model, lambda: forward_backward(embed, batch, cfg, chunk_size=3))
        torch.manual_seed(999)
        v_other, _ = grads_after(model, lambda: forward_backward(embed, batch, cfg, chunk_size=3))
    finally:
        model.eval()
    assert v_gc == pytest.approx(v_ref, abs=1e-5)
    assert v_other != pytest.approx(v_ref, abs=1e-4)  # dropout really is on
    assert_same(g_ref, g_gc)


def test_without_rng_restore_gradients_differ(model):
    """The RNG restore is what makes dropout parity hold (guards the test above against vacuity)."""
    batch, _ = _batches()["simcse"]
    model.train()
    embed = st_embed(model)

    def step(restore):
        cache = GradCache(embed, 3, restore_rng=restore)
        a = cache.embed(batch.queries, "document")
        b = cache.embed(batch.candidates, "document")
        loss = info_nce(a, b, temperature=0.1, group_size=1)
        cache.backward(loss)
        return loss

    try:
        torch.manual_seed(5)
        _, g_on = grads_after(model, lambda: step(True))
        torch.manual_seed(5)
        _, g_off = grads_after(model, lambda: step(False))
        torch.manual_seed(5)
        _, g_ref = grads_after(model, lambda: forward_backward(
            chunked(embed, 3), batch, LossConfig(name="simcse", temperature=0.1, mask_false_negatives=False)))
    finally:
        model.eval()
    assert_same(g_ref, g_on)
    assert max((g_on[n] - g_off[n]).abs().max().item() for n in g_on) > 1e-4


def test_no_sync_wraps_all_but_last_chunk(model):
    batch, _ = _batches()["infonce_negatives"]
    n_chunks = -(-len(batch.queries) // 4) + -(-len(batch.candidates) // 4)
    entered = []

    @contextlib.contextmanager
    def no_sync():
        entered.append(1)
        yield

    model.eval()
    forward_backward(st_embed(model), batch, LossConfig(), chunk_size=4, no_sync=no_sync)
    assert n_chunks >= 3 and len(entered) == n_chunks - 1


def test_rng_stream_after_step_is_as_without_replay(model):
    """A cached step leaves the global RNG exactly where pass 1 left it (resume determinism)."""
    batch, over = _batches()["simcse"]
    model.train()
    embed = st_embed(model)
    try:
        torch.manual_seed(0)
        with torch.no_grad():
            chunked(embed, 2)(batch.queries, "document")
            chunked(embed, 2)(batch.candidates, "document")
        expected = torch.rand(3)
        torch.manual_seed(0)
        forward_backward(embed, batch, LossConfig(**over), chunk_size=2)
        assert torch.equal(torch.rand(3), expected)
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)


def test_bad_chunk_size():
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        GradCache(lambda t, r: torch.zeros(len(t), 2), 0)
