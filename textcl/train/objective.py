"""One optimisation step's loss: embed a `Batch`, gather across ranks, compute the configured loss
(infonce / simcse / cosent) and back-propagate it (directly or through GradCache).

Scaling contract: with DDP averaging parameter gradients over W ranks, the gradient equals the
single-process gradient of the full (all-ranks) batch. InfoNCE/SimCSE: each rank's loss is its
mean over local queries times B_local * W / B_global. CoSENT: every rank computes the same loss
over the gathered pairs, unscaled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from textcl import distributed as D
from textcl.config import LossConfig
from textcl.data.batching import Batch
from textcl.errors import ConfigError, TrainingError
from textcl.gradcache import GradCache, NoSync
from textcl.losses import (
    KnownPositives,
    angle,
    corpus_info_nce,
    cosent,
    false_negative_mask,
    info_nce,
    normalize_text,
    query_side_mask,
    sampled_corpus_info_nce,
    similarity_anchor,
)
from textcl.train.corpus import TrainingCorpus, sample_candidates
from textcl.types import EmbedFn


@dataclass
class _Meta:
    """What other ranks need to know about this rank's part of the batch (sizes, and texts/ids for
    the false-negative masks)."""

    n_queries: int
    n_candidates: int
    queries: list[str]
    cand_texts: list[str]
    cand_ids: list[str | None]
    positive_sets: list[KnownPositives]
    positive_ids: list[str | None]


def _positive_sets(batch: Batch) -> list[KnownPositives]:
    if batch.positive_sets:
        return list(batch.positive_sets)
    ids = batch.candidate_ids or [None] * len(batch.candidates)
    g = batch.group_size
    return [KnownPositives(ids=frozenset([ids[i * g]]) if ids[i * g] is not None else frozenset(),
                           texts=frozenset([normalize_text(batch.candidates[i * g])]))
            for i in range(len(batch))]


def _meta(batch: Batch, with_texts: bool) -> _Meta:
    ids = batch.candidate_ids or [None] * len(batch.candidates)
    if not with_texts:
        return _Meta(len(batch), len(batch.candidates), [], [], [], [], [])
    return _Meta(len(batch), len(batch.candidates), list(batch.queries), list(batch.candidates), list(ids),
                 _positive_sets(batch), [ids[i * batch.group_size] for i in range(len(batch))])


def _exchange(batch: Batch, with_texts: bool, gather: bool) -> list[_Meta]:
    metas = D.all_gather_object(_meta(batch, with_texts)) if gather else [_meta(batch, with_texts)]
    empty = [r for r, m in enumerate(metas) if m.n_queries == 0]
    if empty:  # every rank sees the same metas, so every rank raises: no hang
        raise TrainingError(f"rank(s) {empty} got an empty batch; every rank needs at least one query "
                            "(split batches so that each rank gets one, or drop the last batch)")
    return metas


def _contrastive(embed: EmbedFn, batch: Batch, cfg: LossConfig, gather: bool) -> torch.Tensor:
    simcse = cfg.name == "simcse"
    need_texts = cfg.mask_false_negatives or cfg.symmetric
    metas = _exchange(batch, need_texts, gather)
    r = D.rank() if gather else 0
    q = embed(list(batch.queries), "document" if simcse else "query")
    c = embed(list(batch.candidates), "document")
    cand_sizes = [m.n_candidates for m in metas]
    q_sizes = [m.n_queries for m in metas]
    if gather:
        c = D.gather_with_grad(c, cand_sizes)
    label_offset, query_offset = sum(cand_sizes[:r]), sum(q_sizes[:r])
    mask = query_mask = all_queries = None
    if cfg.mask_false_negatives:
        mask = false_negative_mask(batch.query_ids or [None] * len(batch), batch.queries,
                                   [x for m in metas for x in m.cand_ids],
                                   [x for m in metas for x in m.cand_texts], metas[r].positive_sets,
                                   group_size=batch.group_size, label_offset=label_offset).to(q.device)
    if cfg.symmetric:
        all_queries = D.gather_with_grad(q, q_sizes) if gather else q
        if cfg.mask_false_negatives:
            query_mask = query_side_mask(metas[r].positive_ids, [batch.candidates[i * batch.group_size]
                                                                 for i in range(len(batch))],
                                         [x for m in metas for x in m.queries],
                                         [x for m in metas for x in m.positive_sets],
                                         query_offset=query_offset).to(q.device)
    loss = info_nce(q, c, temperature=cfg.temperature, group_size=batch.group_size,
                    label_offset=label_offset, mask=mask, symmetric=cfg.symmetric,
                    all_queries=all_queries, query_offset=query_offset, query_mask=query_mask)
    return loss * (len(batch) * len(metas) / sum(q_sizes))


def _cosent(embed: EmbedFn, batch: Batch, cfg: LossConfig, gather: bool) -> torch.Tensor:
    if batch.scores is None:
        raise ConfigError("loss.name=cosent needs scored pairs (Batch.scores); use make_scored_batches")
    sizes = [m.n_queries for m in _exchange(batch, False, gather)]
    e1 = embed(list(batch.queries), "document")
    e2 = embed(list(batch.candidates), "document")
    scores = torch.tensor(batch.scores, dtype=torch.float32, device=e1.device)
    if gather:
        e1, e2 = D.gather_with_grad(e1, sizes), D.gather_with_grad(e2, sizes)
        scores = D.gather_with_grad(scores, sizes)
    loss = cosent(e1, e2, scores, temperature=cfg.temperature)
    if cfg.angle_weight:
        loss = loss + cfg.angle_weight * angle(e1, e2, scores, temperature=cfg.temperature)
    return loss


def forward_backward(embed: EmbedFn, batch: Batch, loss_cfg: LossConfig, *, chunk_size: int | None = None,
                     no_sync: NoSync | None = None) -> float:
    """Compute `loss_cfg.name` on `batch`, call backward, return this rank's loss value.

    `embed(texts, role)` returns [n, D] embeddings with grad. With several ranks and
    `loss_cfg.gather_across_devices`, candidates (and, for the symmetric term, queries) of every
    rank are gathered with gradient; anchors stay local; labels are offset by the candidate rows of
    earlier ranks. `chunk_size` turns on GradCache; `no_sync()` (a context-manager factory, e.g. the
    DDP model's `no_sync`) wraps all but the last backward. The returned value averaged over ranks
    is the full-batch loss. A non-finite loss is still back-propagated (every rank must join the
    collectives); the caller checks the value and skips the optimizer step.

    DDP: every parameter must get a gradient (call `distributed.freeze_unused_parameters` before
    wrapping; find_unused_parameters=True fails with several forwards per step on this stack).
    """
    if loss_cfg.name not in ("infonce", "simcse", "cosent"):
        raise ConfigError(f"loss.name: unknown loss {loss_cfg.name!r}; use infonce, simcse or cosent")
    cache = GradCache(embed, chunk_size, no_sync=no_sync) if chunk_size else None
    emb = cache.embed if cache is not None else embed
    gather = loss_cfg.gather_across_devices and D.is_distributed()
    if loss_cfg.name == "cosent":
        loss = _cosent(emb, batch, loss_cfg, gather)
    else:
        loss = _contrastive(emb, batch, loss_cfg, gather)
    if cache is not None:
        cache.backward(loss)
    else:
        loss.backward()
    return float(loss.detach())


@dataclass(frozen=True)
class CorpusNegatives:
    """How corpus-wide negatives are formed (from `train.*`): `query_side` = the positive is the cached
    document embedding (only the query tower trains); `candidates` None = exact softmax over the whole
    corpus, else top-`candidates` + `samples` uniform draws."""

    query_side: bool
    candidates: int | None = None
    samples: int = 0
    all_positives: bool = False  # every known positive is a target (query_side only: they are cached rows)
    # query_side: (weight, base encoder) of `losses.similarity_anchor` over the whole batch's queries; None = off
    anchor: tuple[float, Callable[[list[str], str], np.ndarray]] | None = None


def corpus_forward_backward(embed: EmbedFn, batch: Batch, corpus: TrainingCorpus, loss_cfg: LossConfig,
                            how: CorpusNegatives, rng: np.random.Generator) -> float:
    """InfoNCE of each query against its sampled positive and the whole cached corpus (known positives
    and same-text documents excluded, `TrainingCorpus.targets`); backward; returns this rank's loss.

    The corpus is replicated on every rank, so nothing is gathered; the loss is scaled by
    B_local * W / B_global like `_contrastive`, so DDP's gradient average is the full-batch gradient.
    """
    if corpus.embeddings is None:
        raise TrainingError("the training corpus has not been embedded")
    positives, exclude = corpus.targets(batch)
    q = embed(list(batch.queries), "query")
    emb = corpus.embeddings.to(q.device)
    if how.query_side:
        pos = emb[positives.to(q.device)]
    else:
        g = batch.group_size
        pos = embed([batch.candidates[i * g] for i in range(len(batch))], "document")
    every = corpus.positive_pairs(batch) if how.all_positives else None
    if how.candidates is None:
        loss = corpus_info_nce(q, pos, emb, exclude=exclude, temperature=loss_cfg.temperature, positives=every)
    else:
        c = sample_candidates(corpus, q.detach().cpu(), exclude, how.candidates, how.samples, rng)
        loss = sampled_corpus_info_nce(q, pos, emb[c["top"].to(q.device)], c["hard_valid"].to(q.device),
                                       emb[c["sampled"].to(q.device)], c["sampled_valid"].to(q.device),
                                       corpus_size=len(corpus), temperature=loss_cfg.temperature, corpus=emb,
                                       positives=every)
    sizes = D.gather_sizes(len(batch)) if D.is_distributed() else [len(batch)]
    loss = loss * (len(batch) * len(sizes) / sum(sizes))
    if how.anchor is not None:
        # Over the global batch: every rank computes the same term from the gathered queries, unscaled
        # (gather's backward sums it over ranks, DDP averages: the single-process gradient).
        weight, base_encode = how.anchor
        base = torch.from_numpy(np.asarray(base_encode(list(batch.queries), "query"), dtype=np.float32))
        base = base.to(q.device)  # gather_with_grad: identity on a single process
        loss = loss + weight * similarity_anchor(D.gather_with_grad(q, sizes), D.gather_with_grad(base, sizes))
    loss.backward()
    return float(loss.detach())
