"""A cached corpus split across the processes of a group (`train.corpus_shard`): rank r holds rows
[start, stop) of the document embeddings, and the whole-corpus InfoNCE is computed by composition of the
single-process pieces of `textcl.losses`, exactly (the same loss and gradients as one process holding it all).

Exact form: every rank scores the gathered queries against its shard (`losses._CorpusLogSumExp`, exclusion
columns shifted to shard-local rows); `distributed_logsumexp` combines the per-rank values (all-reduce of the
maxima, then of the rescaled sums); positives are looked up by global row on the rank that owns them
(`CorpusShard.rows`). Sampled form: top-K per shard, merged across ranks; the bounded candidate set's
vectors are sent to the query's rank and scored by `losses.sampled_corpus_info_nce`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from textcl import distributed as D
from textcl.losses import (
    _CorpusLogSumExp,
    _positive_mean,
    _positive_scores,
    sampled_corpus_info_nce,
)
from textcl.scores import pairwise_scores

Pairs = tuple[torch.Tensor, torch.Tensor]  # (rows, cols): query row, global corpus row


def shard_bounds(n: int, world: int, rank: int) -> tuple[int, int]:
    """Rows [start, stop) of rank `rank` of `n` rows over `world` ranks: the first n % world ranks get one more."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


@dataclass(frozen=True)
class CorpusShard:
    """This rank's rows [start, start + len(embeddings)) of a corpus of `size` rows (frozen: no gradient)."""

    embeddings: torch.Tensor
    start: int
    size: int

    @property
    def stop(self) -> int:
        return self.start + self.embeddings.shape[0]

    def local(self, pairs: Pairs) -> Pairs:
        """The (row, col) pairs whose col lies in this shard, col shifted to the shard's own rows."""
        rows, cols = pairs
        keep = (cols >= self.start) & (cols < self.stop)
        return rows[keep], cols[keep] - self.start

    def rows(self, cols: torch.Tensor) -> torch.Tensor:
        """Embeddings [len(cols), D] of global rows `cols` (each rank asks for its own; all ranks call together):
        every rank fills the rows it owns of all requests, one all-reduce (sum) completes them."""
        if not D.is_distributed():
            return self.embeddings[cols.to(self.embeddings.device) - self.start]
        sizes = D.gather_sizes(cols.shape[0])
        every = gather_rows(cols.to(self.embeddings.device), sizes)
        out = self.embeddings.new_zeros((every.shape[0], self.embeddings.shape[1]))
        mine = (every >= self.start) & (every < self.stop)
        out[mine] = self.embeddings[every[mine] - self.start]
        dist.all_reduce(out)  # x + 0 is exact: each row has one owner
        offset = sum(sizes[:D.rank()])
        return out[offset:offset + cols.shape[0]]


def gather_rows(t: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Rows of `t` from every rank in rank order, no gradient (e.g. index tensors of different lengths)."""
    with torch.no_grad():
        return D.gather_with_grad(t, sizes) if D.is_distributed() else t


def gather_pairs(pairs: Pairs, n_queries: int) -> Pairs:
    """Every rank's (query row, col) pairs, query rows offset by the queries of earlier ranks (as gathered)."""
    if not D.is_distributed():
        return pairs
    rows, cols = pairs
    offset = sum(D.gather_sizes(n_queries)[:D.rank()])
    sizes = D.gather_sizes(rows.shape[0])
    return gather_rows(rows + offset, sizes), gather_rows(cols, sizes)


class _DistributedLogSumExp(torch.autograd.Function):
    """lse_i = log sum_r exp(lse_i^r) over ranks. Forward: all-reduce the maxima, then the sums of
    exp(lse^r - max). Backward: each rank's copy of the result feeds its own loss, so the upstream gradients are
    summed over ranks (all-reduce) and rank r's input gets that times its softmax weight exp(lse^r - lse)."""

    @staticmethod
    def forward(ctx, local):  # type: ignore[override]
        top = local.detach().clone()
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # every row excluded everywhere
        total = torch.exp(local.detach() - top)
        dist.all_reduce(total)
        out = top + torch.log(total)
        ctx.save_for_backward(local.detach(), out)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        local, out = ctx.saved_tensors
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        weight = torch.where(torch.isfinite(out), torch.exp(local - out), torch.zeros_like(out))
        return grad * weight


def distributed_logsumexp(local: torch.Tensor) -> torch.Tensor:
    """The logsumexp over ranks of each rank's `local` [B] (differentiable; identity on one process)."""
    return _DistributedLogSumExp.apply(local) if D.is_distributed() else local


def sharded_corpus_info_nce(queries: torch.Tensor, shard: CorpusShard, *, own: tuple[int, int],
                            exclude: Pairs, temperature: float, positive: torch.Tensor | None = None,
                            positives: Pairs | None = None, chunk_size: int = 65536,
                            similarity: str = "dot") -> torch.Tensor:
    """`losses.corpus_info_nce` with the corpus split across ranks: the mean loss of queries[own[0]:own[1]].

    `queries` [B, D] are the same rows on every rank (gathered with gradient, or one replicated batch);
    `exclude` = (row of `queries`, global corpus row) for ALL B queries (every rank scores all B against its
    shard). `positive` [n_own, D] (one per own query), or `positives` = (own query row 0.., global corpus row).
    Gradients: each rank back-propagates its shard's logits for all B queries; the query gradients of the
    ranks are combined by the gather's backward (or, for a replicated batch, the caller scales the loss by
    1/W and sums the parameter gradients over ranks)."""
    rows, cols = shard.local((exclude[0].to(queries.device), exclude[1].to(queries.device)))
    local = _CorpusLogSumExp.apply(queries, shard.embeddings, rows, cols, temperature, chunk_size, similarity)
    lse = distributed_logsumexp(local)[own[0]:own[1]]
    q = queries[own[0]:own[1]]
    if positives is not None:
        vectors = shard.rows(positives[1])  # from the ranks that own them
        pairs = (positives[0].to(q.device), torch.arange(vectors.shape[0], device=q.device))
        scores, pos_rows = _positive_scores(q, None, vectors, pairs, temperature, similarity)
    else:
        scores, pos_rows = _positive_scores(q, positive, None, None, temperature, similarity)
    return _positive_mean(q, torch.logaddexp(scores, lse[pos_rows]) - scores, pos_rows)


def sharded_top_k(queries: torch.Tensor, shard: CorpusShard, exclude: Pairs, k: int, similarity: str = "dot",
                  block: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, global rows) [B, k] of each of `queries` (the same B rows on every rank) top-k non-excluded
    documents of the whole corpus: a running top-k over this shard's blocks, then the ranks' lists merged."""
    rows, cols = shard.local(exclude)
    emb, b = shard.embeddings, queries.shape[0]
    k = min(k, shard.size)
    best = torch.full((b, 0), -math.inf, device=emb.device)
    top = torch.zeros((b, 0), dtype=torch.long, device=emb.device)
    with torch.no_grad():
        q = queries.to(emb.device).float()
        for start in range(0, emb.shape[0], block):
            scores = pairwise_scores(q, emb[start:start + block].float(), similarity)
            sel = (cols >= start) & (cols < start + block)
            scores[rows[sel].to(emb.device), (cols[sel] - start).to(emb.device)] = -math.inf
            vals, idx = scores.topk(min(k, scores.shape[1]), dim=1)
            best, order = torch.cat([best, vals], 1).topk(min(k, best.shape[1] + vals.shape[1]), dim=1)
            top = torch.gather(torch.cat([top, idx + start + shard.start], 1), 1, order)
        pad = k - best.shape[1]  # a shard with fewer than k rows
        best = torch.cat([best, best.new_full((b, pad), -math.inf)], 1)
        top = torch.cat([top, top.new_zeros((b, pad))], 1)
        if D.is_distributed():
            every_best, every_top = _all_gather(best), _all_gather(top)
            best, order = torch.cat(every_best, 1).topk(k, dim=1)
            top = torch.gather(torch.cat(every_top, 1), 1, order)
    return best, top


def _all_gather(t: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.empty_like(t) for _ in range(D.world_size())]
    dist.all_gather(out, t.contiguous())
    return out


def sharded_sampled_corpus_info_nce(query: torch.Tensor, shard: CorpusShard, *, exclude: Pairs, k: int,
                                    samples: int, rng: np.random.Generator, temperature: float,
                                    positive: torch.Tensor | None = None,
                                    positives: Pairs | None = None, similarity: str = "dot") -> torch.Tensor:
    """`losses.sampled_corpus_info_nce` over a sharded corpus, for this rank's `query` [B, D] (local rows, with
    grad; `exclude` and `positives` over them, global corpus rows): the top-k comes from every shard (for
    every rank's queries, detached), `samples` rows are drawn from `rng` over the whole corpus, and the
    candidates' vectors come from their owners. Equal to one process when the ranks' generators are."""
    sizes = D.gather_sizes(query.shape[0])
    everyone = gather_rows(query.detach(), sizes)
    vals, top = sharded_top_k(everyone, shard, gather_pairs(exclude, query.shape[0]), k, similarity)
    offset = sum(sizes[:D.rank()])
    vals, top = vals[offset:offset + query.shape[0]], top[offset:offset + query.shape[0]]
    sampled = torch.from_numpy(rng.integers(0, shard.size, size=samples)).long().to(top.device)
    b, n = query.shape[0], shard.size
    key = exclude[0].to(top.device) * n + exclude[1].to(top.device)  # (query, row) as one number
    excluded = torch.isin(torch.arange(b, device=top.device)[:, None] * n + sampled[None, :], key)
    in_top = ((top[:, :, None] == sampled[None, None, :]) & torch.isfinite(vals)[:, :, None]).any(dim=1)
    hard = shard.rows(top.flatten()).reshape(b, top.shape[1], -1)
    if positives is not None:
        vectors = shard.rows(positives[1])
        positives = (positives[0], torch.arange(vectors.shape[0], device=vectors.device))
    else:
        vectors = None
    return sampled_corpus_info_nce(query, positive, hard.to(query.device), torch.isfinite(vals).to(query.device),
                                   shard.rows(sampled).to(query.device), (~(excluded | in_top)).to(query.device),
                                   corpus_size=n, temperature=temperature, corpus=vectors, positives=positives,
                                   similarity=similarity)
