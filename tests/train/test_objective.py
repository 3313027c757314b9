"""Losses as objects: the lookup by loss.name, a Sum embeds each (texts, role) once for all its parts, and the
local / shared terms are combined by forward_backward (one process: scale 1)."""

from __future__ import annotations

import pytest
import torch

from textcl.config import LossConfig, RunConfig
from textcl.data.batching import Batch
from textcl.errors import ConfigError
from textcl.train.objective import (
    CoSENT,
    InBatchInfoNCE,
    Sum,
    Terms,
    build_loss,
    forward_backward,
    in_batch_loss,
)


class Constant:
    """A loss whose terms are fixed multiples of the sum of the query embeddings."""

    gather, needs_texts = False, False

    def __init__(self, local: float, shared: float) -> None:
        self.local, self.shared = local, shared

    def __call__(self, embed, batch, step) -> Terms:
        q = embed(list(batch.queries), "query").sum()
        return Terms(local=self.local * q, shared=self.shared * q)


def counting_embed(weight: torch.Tensor, calls: list):
    def embed(texts, role):
        calls.append((tuple(texts), role))
        return weight.expand(len(texts), 2) * 1.0
    return embed


def test_in_batch_losses_by_name_and_an_unknown_name_says_which_exist():
    assert isinstance(in_batch_loss(LossConfig(name="simcse")), InBatchInfoNCE)
    assert isinstance(in_batch_loss(LossConfig(name="cosent")), CoSENT)
    assert isinstance(build_loss(RunConfig(loss=LossConfig(name="infonce")), None, None), InBatchInfoNCE)
    with pytest.raises(ConfigError, match="loss.name: unknown loss 'hinge'; use infonce, simcse or cosent"):
        in_batch_loss(LossConfig(name="hinge"))


def test_a_sum_embeds_once_and_forward_backward_adds_local_and_shared_terms():
    weight = torch.ones(1, 2, requires_grad=True)
    calls: list = []
    batch = Batch(queries=["a", "b"], candidates=["x", "y"], group_size=1)
    value = forward_backward(counting_embed(weight, calls), batch, Sum((Constant(1.0, 0.0), Constant(0.0, 2.0))))
    assert calls == [(("a", "b"), "query")]  # one forward for both parts
    assert value == pytest.approx(3.0 * 4)  # (1 + 2) * sum of a 2x2 matrix of ones
    assert weight.grad.tolist() == [[6.0, 6.0]]


def test_no_step_copies_the_corpus():
    """The cached corpus lives on the training device, moved once (TrainingCorpus.to): steps of the exact and
    the sampled corpus loss never call .to / .cpu / .clone on it (on a GPU each would copy the whole corpus)."""
    import numpy as np

    from textcl.train.corpus import TrainingCorpus
    from textcl.train.objective import CorpusInfoNCE, CorpusNegatives

    moves: list[str] = []

    class Watched(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in ("to", "cpu", "cuda", "clone") and args and isinstance(args[0], Watched):
                moves.append(func.__name__)
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **(kwargs or {}))

    texts = [f"doc {i}" for i in range(12)]
    corpus = TrainingCorpus(texts=texts, ids=[f"d{i}" for i in range(12)])
    corpus.embeddings = torch.nn.functional.normalize(torch.randn(12, 4, generator=torch.Generator().manual_seed(0)),
                                                      dim=1)
    corpus.to("cpu")
    corpus.embeddings = corpus.embeddings.as_subclass(Watched)
    pointer = corpus.embeddings.data_ptr()
    batch = Batch(queries=["q0", "q1"], candidates=["doc 0", "doc 1"], group_size=1, candidate_ids=["d0", "d1"])
    weight = torch.nn.Parameter(torch.randn(2, 4, generator=torch.Generator().manual_seed(1)))

    def embed(texts, role):
        return weight[: len(texts)] * 1.0

    for how in (CorpusNegatives(query_side=True), CorpusNegatives(query_side=True, candidates=3, samples=2)):
        for _ in range(3):
            forward_backward(embed, batch, CorpusInfoNCE(0.05, corpus, how), rng=np.random.default_rng(0))
    assert moves == [] and corpus.embeddings.data_ptr() == pointer
