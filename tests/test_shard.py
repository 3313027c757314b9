"""train.corpus_shard: 2 gloo processes, each holding its rows of a 23-row corpus (12 + 11: uneven), give the loss
and the gradients of one process holding the whole corpus (1e-6): the exact form with one or every positive,
live positives (tune: both), the sampled-candidate form, and the adapter (weights after 3 optimizer steps).
One spawn runs every case; the references run in this process."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
from gloo_workers import run_workers

from textcl.adapter import AdapterSettings, QueryTargets, fit_adapter
from textcl.data.batching import Batch
from textcl.losses import KnownPositives
from textcl.shard import CorpusShard, distributed_logsumexp, shard_bounds
from textcl.train.corpus import TrainingCorpus
from textcl.train.objective import CorpusInfoNCE, CorpusNegatives, forward_backward
from textcl.train.sharded import shard_loss

WORLD, N_DOCS, DIM, TIMEOUT_S = 2, 23, 8, 120
CASES = {  # name -> (CorpusNegatives, per-rank query counts)
    "exact_one_positive": (CorpusNegatives(query_side=True), [3, 2]),
    "exact_every_positive": (CorpusNegatives(query_side=True, all_positives=True), [2, 3]),
    "exact_live_positive": (CorpusNegatives(query_side=False), [3, 2]),
    "sampled_every_positive": (CorpusNegatives(query_side=True, candidates=4, samples=6, all_positives=True), [3, 2]),
    "sampled_one_positive": (CorpusNegatives(query_side=True, candidates=30, samples=3), [2, 3]),  # K > corpus
}


def corpus() -> TrainingCorpus:
    out = TrainingCorpus(texts=[f"document {i}" for i in range(N_DOCS)], ids=[f"d{i}" for i in range(N_DOCS)])
    g = torch.Generator().manual_seed(0)
    out.embeddings = torch.nn.functional.normalize(torch.randn(N_DOCS, DIM, generator=g), dim=1)
    return out


def batch() -> Batch:
    """5 queries; each has 1-3 known positives spread over both shards (rows 0-11 | 12-22)."""
    known = [[0, 13], [12], [5, 20, 7], [22], [11, 12]]
    return Batch(queries=[f"query {i}" for i in range(5)], candidates=[f"document {k[0]}" for k in known],
                 group_size=1, query_ids=[f"q{i}" for i in range(5)], candidate_ids=[f"d{k[0]}" for k in known],
                 positive_sets=[KnownPositives(ids=frozenset(f"d{j}" for j in k)) for k in known])


def part(b: Batch, sizes: list[int], rank: int) -> Batch:
    s = sum(sizes[:rank])
    n = sizes[rank]
    return Batch(queries=b.queries[s:s + n], candidates=b.candidates[s:s + n], group_size=1,
                 query_ids=b.query_ids[s:s + n], candidate_ids=b.candidate_ids[s:s + n],
                 positive_sets=b.positive_sets[s:s + n])


def tower() -> torch.nn.Linear:
    torch.manual_seed(1)
    return torch.nn.Linear(DIM, DIM)


def embedder(model: torch.nn.Module):
    def embed(texts: list[str], role: str) -> torch.Tensor:
        x = torch.stack([torch.from_numpy(np.random.default_rng(sum(t.encode())).standard_normal(DIM)).float()
                         for t in texts])
        return model(x)
    return embed


def run_case(name: str, rank: int | None) -> tuple[float, dict]:
    """(loss, gradients) of `name`: the whole batch and corpus (rank None), or rank's part of both (DDP-averaged)."""
    how, sizes = CASES[name]
    model, c = tower(), corpus()
    loss = CorpusInfoNCE(0.2, c, how)
    b = batch()
    if rank is not None:
        c.keep_shard(rank, WORLD)
        loss, b = shard_loss(loss), part(b, sizes, rank)
    value = forward_backward(embedder(model), b, loss, rng=np.random.default_rng(7))
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    if rank is not None:
        for g in grads.values():
            dist.all_reduce(g)
            g /= WORLD
        value = torch.tensor([value / WORLD])  # forward_backward's scaled values average to the full-batch loss
        dist.all_reduce(value)
        value = float(value)
    return value, grads


def adapter_inputs() -> tuple[torch.Tensor, QueryTargets, AdapterSettings]:
    b = batch()
    c = corpus()
    rows, cols = c.positive_pairs(b)
    queries = torch.nn.functional.normalize(torch.randn(5, DIM, generator=torch.Generator().manual_seed(3)), dim=1)
    settings = AdapterSettings(lr=0.05, batch_size=4, epochs=1, max_steps=3, temperature=0.1, seed=0, eval_every=100)
    return queries, QueryTargets(n=5, positives=(rows, cols), exclude=c.targets(b)[1]), settings


def run_adapter(rank: int | None) -> np.ndarray:
    queries, targets, settings = adapter_inputs()
    emb = corpus().embeddings
    if rank is not None:
        start, stop = shard_bounds(N_DOCS, WORLD, rank)
        emb = CorpusShard(emb[start:stop], start, N_DOCS)
    return fit_adapter(queries, emb, targets, settings).weight


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        local = torch.tensor([0.0, -torch.inf, 1.0 + rank]).requires_grad_(True)  # row 1: excluded on every rank
        lse = distributed_logsumexp(local)
        (lse[0] + lse[2] * (rank + 1)).backward()
        results = {"lse": (lse.detach(), local.grad), "adapter": run_adapter(rank),
                   **{name: run_case(name, rank) for name in CASES}}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    out = tmp_path_factory.mktemp("shard")
    run_workers(_worker, (str(out / "init"), str(out)), WORLD, TIMEOUT_S)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_distributed_logsumexp_and_its_gradient(sharded):
    expected = torch.tensor([float(np.log(2.0)), -float("inf"), float(torch.logsumexp(torch.tensor([1.0, 2.0]), 0))])
    for rank, r in enumerate(sharded):
        lse, grad = r["lse"]
        torch.testing.assert_close(lse, expected)
        # upstream gradients summed over ranks (1 + 1 on row 0, 1 + 2 on row 2), times this rank's softmax weight
        weight_2 = float(torch.softmax(torch.tensor([1.0, 2.0]), 0)[rank])
        torch.testing.assert_close(grad, torch.tensor([2 * 0.5, 0.0, 3 * weight_2]))


@pytest.mark.parametrize("name", list(CASES))
def test_sharded_loss_and_gradients_equal_one_process(sharded, name):
    value, grads = run_case(name, None)
    for r in sharded:
        assert r[name][0] == pytest.approx(value, abs=1e-6)
        for n, g in grads.items():
            torch.testing.assert_close(r[name][1][n], g, rtol=1e-6, atol=1e-6)  # fp32 sums in another order


def test_sharded_adapter_equals_one_process(sharded):
    weight = run_adapter(None)
    for r in sharded:
        np.testing.assert_allclose(r["adapter"], weight, rtol=0, atol=1e-6)


def test_shard_bounds_cover_the_corpus_unevenly():
    assert [shard_bounds(23, 2, r) for r in range(2)] == [(0, 12), (12, 23)]
    assert [shard_bounds(2, 3, r) for r in range(3)] == [(0, 1), (1, 2), (2, 2)]  # a rank may hold nothing
