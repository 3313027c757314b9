"""Two gloo processes on CPU, each with part of a batch: DDP-style averaged parameter gradients equal
the single-process full-batch gradients (atol 1e-5), with and without GradCache, for an uneven
split, through a real DistributedDataParallel wrapper, with corpus-wide negatives (query tower,
both towers, sampled candidates, the similarity anchor), and an empty rank raises instead of hanging."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.distributed as dist
from gloo_workers import run_workers

from textcl import distributed as D
from textcl.config import LossConfig
from textcl.data.batching import Batch, make_batches, make_scored_batches, make_text_batches
from textcl.errors import TrainingError
from textcl.train.corpus import TrainingCorpus
from textcl.train.objective import CorpusInfoNCE, CorpusNegatives, SimilarityAnchor, Sum, forward_backward
from textcl.types import Example, ScoredPair

WORDS = "cancer diet vitamin heart risk health study food sugar fat cell blood brain sleep coffee tea".split()
WORLD = 2
TIMEOUT_S = 240


def text(i):
    rng = np.random.default_rng(i)
    return " ".join(rng.choice(WORDS, size=2 + i % 7))


def split_batch(batch: Batch, sizes: list[int]) -> list[Batch]:
    """Consecutive shards of `batch` (rank r gets the next sizes[r] queries with their groups)."""
    out, s, g = [], 0, batch.group_size
    for n in sizes:
        ids = batch.candidate_ids[s * g:(s + n) * g] if batch.candidate_ids else []
        out.append(Batch(queries=batch.queries[s:s + n], candidates=batch.candidates[s * g:(s + n) * g],
                         group_size=g, query_ids=batch.query_ids[s:s + n] if batch.query_ids else [],
                         candidate_ids=ids, scores=batch.scores[s:s + n] if batch.scores else None,
                         positive_sets=batch.positive_sets[s:s + n] if batch.positive_sets else []))
        s += n
    return out


def scenarios() -> dict[str, tuple[Batch, list[int], dict, int | None, bool]]:
    """name -> (full batch, per-rank query counts, LossConfig overrides, chunk_size, wrap in DDP)."""
    exs = [Example(text(i), (text(100 + i),), tuple(text(200 + 10 * i + j) for j in range(3)),
                   query_id=f"q{i}", positive_ids=(f"d{i}",)) for i in range(6)]
    # a false negative across ranks: q4's positive is also a known positive of q0
    exs[0] = replace(exs[0], positives=(exs[0].positives[0], exs[4].positives[0]), positive_ids=("d0", "d4"))
    rng = np.random.default_rng
    # the duplicate-aware sampler keeps q0 and q4 apart; join its batches so the mask has work to do
    parts = make_batches(exs, 6, num_negatives=2, rng=rng(0))
    neg6 = Batch(queries=[q for b in parts for q in b.queries], candidates=[c for b in parts for c in b.candidates],
                 group_size=3, query_ids=[q for b in parts for q in b.query_ids],
                 candidate_ids=[c for b in parts for c in b.candidate_ids],
                 positive_sets=[p for b in parts for p in b.positive_sets])
    neg5 = make_batches(exs[1:], 5, num_negatives=1, rng=rng(1))[0]
    pairs = make_scored_batches([ScoredPair(text(i), text(50 + i), float(i % 4)) for i in range(7)], 7,
                                rng=rng(0))[0]
    texts = make_text_batches([text(300 + i) for i in range(6)], 6, rng=rng(0))[0]
    assert len(neg6) == 6, "sampler split the batch; scenario needs all six queries"
    return {
        "infonce_masked": (neg6, [3, 3], {}, None, False),
        "infonce_masked_gradcache": (neg6, [3, 3], {}, 2, False),
        "uneven_symmetric": (neg5, [3, 2], {"symmetric": True}, None, False),
        "uneven_symmetric_gradcache": (neg5, [3, 2], {"symmetric": True}, 2, False),
        "cosent_uneven": (pairs, [4, 3], {"name": "cosent"}, 3, False),
        "simcse": (texts, [3, 3], {"name": "simcse"}, None, False),
        "ddp_uneven": (neg5, [2, 3], {}, None, True),
        "ddp_uneven_gradcache": (neg5, [2, 3], {"symmetric": True}, 2, True),
        "empty_rank": (neg5, [5, 0], {}, None, False),
        # corpus-wide negatives (the corpus is replicated, nothing gathered): query tower only, both
        # towers with live positives on an uneven split, and the sampled-candidate estimator
        "corpus_query_side": (neg6, [3, 3], {"_corpus": "query"}, None, False),
        "corpus_both_uneven": (neg5, [3, 2], {"_corpus": "both"}, None, False),
        "corpus_sampled": (neg6, [3, 3], {"_corpus": "sampled"}, None, False),
        "corpus_all_positives": (neg6, [4, 2], {"_corpus": "all"}, None, False),
        "corpus_sampled_all_positives": (neg6, [3, 3], {"_corpus": "sampled_all"}, None, False),
        # query-side with the similarity anchor: a term over the whole batch's query pairs
        "corpus_all_positives_anchor": (neg6, [4, 2], {"_corpus": "all", "_anchor": 3.0}, None, False),
    }


def corpus() -> TrainingCorpus:
    """Every text of the scenarios' examples, with ids, and fixed (seeded) document embeddings."""
    texts = [text(100 + i) for i in range(6)] + [text(200 + 10 * i + j) for i in range(6) for j in range(3)]
    ids = [f"d{i}" for i in range(6)] + [f"n{i}{j}" for i in range(6) for j in range(3)]
    out = TrainingCorpus(texts=texts, ids=ids)
    g = torch.Generator().manual_seed(0)
    out.embeddings = torch.nn.functional.normalize(torch.randn(len(texts), 32, generator=g), dim=1)
    return out


def base_encode(texts: list[str], role: str) -> np.ndarray:
    """A stand-in for the frozen base tower: a fixed embedding per text."""
    return np.stack([np.random.default_rng(sum(t.encode())).standard_normal(16) for t in texts]).astype(np.float32)


def run_loss(embed, batch: Batch, over: dict, chunk, no_sync=None) -> float:
    mode = over.get("_corpus")
    if mode is None:
        return forward_backward(embed, batch, LossConfig(**over), chunk_size=chunk, no_sync=no_sync)
    sampled = mode.startswith("sampled")
    how = CorpusNegatives(query_side=mode != "both", candidates=4 if sampled else None,
                          samples=6 if sampled else 0, all_positives=mode.endswith("all"))
    loss = CorpusInfoNCE(LossConfig().temperature, corpus(), how)
    if "_anchor" in over:
        loss = Sum((loss, SimilarityAnchor(over["_anchor"], base_encode)))
    # the same uniform draws on every rank and in the full batch: estimates per query then agree
    return forward_backward(embed, batch, loss, rng=np.random.default_rng(0))


def st_embed(module, model):
    def embed(texts, role):
        return module(model.preprocess(texts))["sentence_embedding"]
    return embed


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _run_case(model, case, rank, model_path):
    batch, sizes, over, chunk, use_ddp = case
    shard = split_batch(batch, sizes)[rank]
    model.zero_grad(set_to_none=True)
    if use_ddp:  # DDP averages the gradients itself; no_sync keeps GradCache to one all-reduce
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer(model_path, device="cpu").eval()  # fresh: no hooks of an earlier DDP
        # BERT's pooler is unused by mean pooling: DDP would silently never finish its reduction
        frozen = D.freeze_unused_parameters(model, lambda: st_embed(model, model)(["probe"], "query"))
        assert frozen == ["0.model.pooler.dense.weight", "0.model.pooler.dense.bias"]
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        value = run_loss(st_embed(ddp, model), shard, over, chunk, no_sync=ddp.no_sync)
        return value, _grads(model)
    value = run_loss(st_embed(model, model), shard, over, chunk)
    grads = _grads(model)
    for g in grads.values():  # what DDP does: average over ranks
        dist.all_reduce(g)
        g /= WORLD
    return value, grads


def _worker(rank: int, init_file: str, model_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    from sentence_transformers import SentenceTransformer
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        model = SentenceTransformer(model_path, device="cpu").eval()
        results: dict = {"rank": D.rank(), "world": D.world_size()}
        t = torch.arange(rank + 1, dtype=torch.float32).requires_grad_(True)  # ranks hold 1 and 2 rows
        gathered = D.gather_with_grad(t)
        (gathered * torch.arange(1, 4) * (rank + 1)).sum().backward()
        results["gather"] = (gathered.detach().tolist(), t.grad.tolist())
        results["objects"] = D.all_gather_object({"r": rank})
        for name, case in scenarios().items():
            try:
                results[name] = _run_case(model, case, rank, model_path)
            except TrainingError as exc:
                results[name] = str(exc)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def dist_results(tiny_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    run_workers(_worker, (str(out / "init"), str(tiny_model_path), str(out)), WORLD, TIMEOUT_S)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def full_batch_reference(tiny_model_path):
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(tiny_model_path), device="cpu").eval()
    out = {}
    for name, (batch, _, over, _, _) in scenarios().items():
        if name == "empty_rank":
            continue
        model.zero_grad(set_to_none=True)
        value = run_loss(st_embed(model, model), batch, over, None)
        out[name] = (value, _grads(model))
    return out


def test_helpers_across_ranks(dist_results):
    assert [r["rank"] for r in dist_results] == [0, 1] and dist_results[0]["world"] == 2
    assert dist_results[0]["objects"] == [{"r": 0}, {"r": 1}]
    # gathered [0 | 0, 1]; loss_r = (r+1) * sum(gathered * [1, 2, 3]); grads summed over both ranks
    assert dist_results[0]["gather"] == ([0.0, 0.0, 1.0], [3.0])
    assert dist_results[1]["gather"] == ([0.0, 0.0, 1.0], [6.0, 9.0])


@pytest.mark.parametrize("name", [n for n in scenarios() if n != "empty_rank"])
def test_two_process_gradients_equal_full_batch(dist_results, full_batch_reference, name):
    full_value, full_grads = full_batch_reference[name]
    values = [r[name][0] for r in dist_results]
    assert np.mean(values) == pytest.approx(full_value, abs=1e-5)
    for r in dist_results:
        grads = r[name][1]
        assert grads.keys() == full_grads.keys() and grads
        for n, g in grads.items():
            assert torch.allclose(g, full_grads[n], atol=1e-5), (name, n, (g - full_grads[n]).abs().max().item())


def test_empty_rank_raises_on_every_rank(dist_results):
    for r in dist_results:
        assert "rank(s) [1] got an empty batch" in r["empty_rank"]


def test_single_process_helpers_are_identity():
    t = torch.ones(2, 3)
    assert D.gather_with_grad(t) is t
    assert D.rank() == 0 and D.world_size() == 1 and not D.is_distributed()
    assert D.gather_sizes(4) == [4] and D.all_gather_object("x") == ["x"]
