"""One optimisation step's loss: losses are objects with one interface (embed + batch + `Step` in, `Terms`
out): in-batch InfoNCE / SimCSE, CoSENT, InfoNCE against the training corpus, the similarity anchor, and
their sum. `forward_backward` exchanges batch metadata across ranks, scales, and back-propagates (directly
or through GradCache) for all of them; `build_loss` picks the run's loss.

Scaling contract: with DDP averaging parameter gradients over W ranks, the gradient equals the
single-process gradient of the full (all-ranks) batch. A loss's `local` term (InfoNCE/SimCSE, corpus
InfoNCE: a mean over local queries) is multiplied by B_local * W / B_global; a `shared` term (CoSENT, the
similarity anchor: the same value on every rank, over the gathered batch) is not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from textcl import distributed as D
from textcl.config import LossConfig, RunConfig
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


@dataclass(frozen=True)
class Step:
    """One step's view across ranks, built once by `forward_backward`: every rank's batch metadata (texts only
    when a loss asked for them), this rank, whether losses gather, and the step's random generator."""

    metas: list[_Meta]
    rank: int
    gather: bool
    rng: np.random.Generator | None = None

    @property
    def query_sizes(self) -> list[int]:
        return [m.n_queries for m in self.metas]

    @property
    def scale(self) -> float:
        """B_local * W / B_global: a local mean times this, averaged over ranks, is the full-batch mean."""
        return self.metas[self.rank].n_queries * len(self.metas) / sum(self.query_sizes)

    def everyone(self, t: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
        """Rows of `t` from every rank in rank order, with gradient (`sizes` default: one row per query)."""
        return D.gather_with_grad(t, sizes or self.query_sizes) if self.gather else t

    def offset(self, sizes: list[int]) -> int:
        """Rows of earlier ranks: the label offset into gathered rows (0 without gathering: rank is 0)."""
        return sum(sizes[:self.rank])


@dataclass(frozen=True)
class Terms:
    """A loss's value in two parts. `local`: a mean over this rank's queries (`forward_backward` scales it by
    B_local * W / B_global). `shared`: computed over the gathered batch, the same on every rank (unscaled)."""

    local: torch.Tensor | float = 0.0
    shared: torch.Tensor | float = 0.0


class Loss(Protocol):
    """Embeddings in (through `embed`), loss terms out. `gather`: scored across ranks when there are several;
    `needs_texts`: every rank's texts and ids are exchanged first (false-negative masks)."""

    gather: bool
    needs_texts: bool

    def __call__(self, embed: EmbedFn, batch: Batch, step: Step) -> Terms: ...


@dataclass(frozen=True)
class InBatchInfoNCE:
    """InfoNCE with in-batch (and gathered) negatives; `simcse` embeds queries as documents."""

    cfg: LossConfig
    similarity: str = "dot"  # textcl.scores: inner product (cosine over unit vectors, dot) or minus a distance

    @property
    def gather(self) -> bool:
        return self.cfg.gather_across_devices

    @property
    def needs_texts(self) -> bool:
        return self.cfg.mask_false_negatives or self.cfg.symmetric

    def __call__(self, embed: EmbedFn, batch: Batch, step: Step) -> Terms:
        cfg, metas, r = self.cfg, step.metas, step.rank
        q = embed(list(batch.queries), "document" if cfg.name == "simcse" else "query")
        cand_sizes = [m.n_candidates for m in metas]
        c = step.everyone(embed(list(batch.candidates), "document"), cand_sizes)
        label_offset, query_offset = step.offset(cand_sizes), step.offset(step.query_sizes)
        mask = query_mask = all_queries = None
        if cfg.mask_false_negatives:
            mask = false_negative_mask(batch.query_ids or [None] * len(batch), batch.queries,
                                       [x for m in metas for x in m.cand_ids],
                                       [x for m in metas for x in m.cand_texts], metas[r].positive_sets,
                                       group_size=batch.group_size, label_offset=label_offset).to(q.device)
        if cfg.symmetric:
            all_queries = step.everyone(q)
            if cfg.mask_false_negatives:
                query_mask = query_side_mask(metas[r].positive_ids, [batch.candidates[i * batch.group_size]
                                                                     for i in range(len(batch))],
                                             [x for m in metas for x in m.queries],
                                             [x for m in metas for x in m.positive_sets],
                                             query_offset=query_offset).to(q.device)
        return Terms(local=info_nce(q, c, temperature=cfg.temperature, group_size=batch.group_size,
                                    label_offset=label_offset, mask=mask, symmetric=cfg.symmetric,
                                    all_queries=all_queries, query_offset=query_offset, query_mask=query_mask,
                                    similarity=self.similarity))


@dataclass(frozen=True)
class CoSENT:
    """CoSENT over the gathered scored pairs (+ `angle_weight` times AnglE's angle term)."""

    cfg: LossConfig
    needs_texts: bool = False

    @property
    def gather(self) -> bool:
        return self.cfg.gather_across_devices

    def __call__(self, embed: EmbedFn, batch: Batch, step: Step) -> Terms:
        if batch.scores is None:
            raise ConfigError("loss.name=cosent needs scored pairs (Batch.scores); use make_scored_batches")
        e1 = step.everyone(embed(list(batch.queries), "document"))
        e2 = step.everyone(embed(list(batch.candidates), "document"))
        scores = step.everyone(torch.tensor(batch.scores, dtype=torch.float32, device=e1.device))
        loss = cosent(e1, e2, scores, temperature=self.cfg.temperature)
        if self.cfg.angle_weight:
            loss = loss + self.cfg.angle_weight * angle(e1, e2, scores, temperature=self.cfg.temperature)
        return Terms(shared=loss)


@dataclass(frozen=True)
class CorpusNegatives:
    """How corpus-wide negatives are formed (from `train.*`): `query_side` = the positive is the cached
    document embedding (only the query tower trains); `candidates` None = exact softmax over the whole
    corpus, else top-`candidates` + `samples` uniform draws."""

    query_side: bool
    candidates: int | None = None
    samples: int = 0
    all_positives: bool = False  # every known positive is a target (query_side only: they are cached rows)


@dataclass(frozen=True)
class CorpusInfoNCE:
    """InfoNCE of each query against its positive(s) and the whole cached corpus (known positives and
    same-text documents excluded, `TrainingCorpus.targets`). The corpus is replicated on every rank, so
    nothing is gathered; `gather` only makes the local mean scale with the world size."""

    temperature: float
    corpus: TrainingCorpus
    how: CorpusNegatives
    gather: bool = True
    needs_texts: bool = False
    similarity: str = "dot"  # textcl.scores: inner product (cosine over unit vectors, dot) or minus a distance

    def __call__(self, embed: EmbedFn, batch: Batch, step: Step) -> Terms:
        corpus, how = self.corpus, self.how
        if corpus.embeddings is None:
            raise TrainingError("the training corpus has not been embedded")
        positives, exclude = corpus.targets(batch)
        q = embed(list(batch.queries), "query")
        emb = corpus.embeddings  # moved to the training device once (TrainingCorpus.to), never per step
        if emb.device != q.device:
            raise TrainingError(f"the training corpus is on {emb.device} but queries are on {q.device}: call "
                                "TrainingCorpus.to(device) once before training")
        if how.query_side:
            pos = emb[positives.to(q.device)]
        else:
            g = batch.group_size
            pos = embed([batch.candidates[i * g] for i in range(len(batch))], "document")
        every = corpus.positive_pairs(batch) if how.all_positives else None
        if how.candidates is None:
            return Terms(local=corpus_info_nce(q, pos, emb, exclude=exclude, temperature=self.temperature,
                                               positives=every, similarity=self.similarity))
        if step.rng is None:
            raise TrainingError("sampled corpus negatives need the step's random generator (forward_backward rng=)")
        c = sample_candidates(corpus, q.detach(), exclude, how.candidates, how.samples, step.rng,
                              similarity=self.similarity)
        return Terms(local=sampled_corpus_info_nce(
            q, pos, emb[c["top"].to(q.device)], c["hard_valid"].to(q.device), emb[c["sampled"].to(q.device)],
            c["sampled_valid"].to(q.device), corpus_size=len(corpus), temperature=self.temperature, corpus=emb,
            positives=every, similarity=self.similarity))


@dataclass(frozen=True)
class SimilarityAnchor:
    """`weight` times `losses.similarity_anchor` of the whole batch's query embeddings against the frozen base
    model's (`base_encode`) of the same texts. Over the global batch: every rank computes the same term from the
    gathered queries (gather's backward sums it over ranks, DDP averages: the single-process gradient)."""

    weight: float
    base_encode: Callable[[list[str], str], np.ndarray]
    gather: bool = True
    needs_texts: bool = False

    def __call__(self, embed: EmbedFn, batch: Batch, step: Step) -> Terms:
        q = embed(list(batch.queries), "query")
        base = torch.from_numpy(np.asarray(self.base_encode(list(batch.queries), "query"), dtype=np.float32))
        return Terms(shared=self.weight * similarity_anchor(step.everyone(q), step.everyone(base.to(q.device))))


def _memoised(embed: EmbedFn) -> EmbedFn:
    """`embed` that returns the same tensor for the same (texts, role) (one `Sum` call)."""
    seen: dict[tuple[tuple[str, ...], str], torch.Tensor] = {}

    def run(texts: list[str], role: str) -> torch.Tensor:
        key = (tuple(texts), role)
        if key not in seen:
            seen[key] = embed(texts, role)
        return seen[key]

    return run


@dataclass(frozen=True)
class Sum:
    """Several losses over the same embeddings: each (texts, role) is embedded once for all parts (one forward,
    one dropout mask). Within one loss, the same texts embedded twice stay two views (SimCSE)."""

    parts: tuple[Loss, ...]

    @property
    def gather(self) -> bool:
        return any(p.gather for p in self.parts)

    @property
    def needs_texts(self) -> bool:
        return any(p.needs_texts for p in self.parts)

    def __call__(self, embed: EmbedFn, batch: Batch, step: Step) -> Terms:
        shared = _memoised(embed)
        terms = [p(shared, batch, step) for p in self.parts]
        return Terms(local=sum((t.local for t in terms), 0.0), shared=sum((t.shared for t in terms), 0.0))


def in_batch_loss(cfg: LossConfig, similarity: str = "dot") -> Loss:
    """The loss object of `loss.name` with in-batch negatives (CoSENT ranks by cosine, as ST's CoSENTLoss)."""
    if cfg.name not in ("infonce", "simcse", "cosent"):
        raise ConfigError(f"loss.name: unknown loss {cfg.name!r}; use infonce, simcse or cosent")
    return CoSENT(cfg) if cfg.name == "cosent" else InBatchInfoNCE(cfg, similarity)


def forward_backward(embed: EmbedFn, batch: Batch, loss: Loss | LossConfig, *, chunk_size: int | None = None,
                     no_sync: NoSync | None = None, rng: np.random.Generator | None = None) -> float:
    """Compute `loss` on `batch` (a LossConfig means its in-batch loss), call backward, return this rank's value.

    `embed(texts, role)` returns [n, D] embeddings with grad. With several ranks and `loss.gather`, every rank's
    batch sizes (and texts, when the loss needs them) are exchanged once, here; the loss gathers candidates with
    gradient through `Step.everyone` (anchors stay local, labels offset by earlier ranks' rows). Its `local`
    term is scaled by B_local * W / B_global here, so with DDP averaging gradients over W ranks the gradient
    equals the single-process gradient of the full batch; the returned value averaged over ranks is the
    full-batch loss. `chunk_size` turns on GradCache; `no_sync()` (e.g. the DDP model's `no_sync`) wraps all
    but the last backward. `rng`: the step's generator (sampled corpus negatives). A non-finite loss is still
    back-propagated (every rank must join the collectives); the caller checks it and skips the step.

    DDP: every parameter must get a gradient (call `distributed.freeze_unused_parameters` before
    wrapping; find_unused_parameters=True fails with several forwards per step on this stack).
    """
    if isinstance(loss, LossConfig):
        loss = in_batch_loss(loss)
    cache = GradCache(embed, chunk_size, no_sync=no_sync) if chunk_size else None
    gather = loss.gather and D.is_distributed()
    step = Step(_exchange(batch, loss.needs_texts, gather), D.rank() if gather else 0, gather, rng)
    terms = loss(cache.embed if cache is not None else embed, batch, step)
    value = terms.local * step.scale + terms.shared
    if not isinstance(value, torch.Tensor):
        raise TrainingError(f"{type(loss).__name__} returned no tensor term")
    if cache is not None:
        cache.backward(value)
    else:
        value.backward()
    return float(value.detach())


def build_loss(config: RunConfig, corpus: TrainingCorpus | None,
               base_encode: Callable[[list[str], str], np.ndarray] | None, similarity: str = "dot") -> Loss:
    """The run's loss: in-batch by `loss.name`, or (with a training corpus) InfoNCE against the corpus, plus
    the similarity anchor when `train.similarity_anchor` is set and the base encoder is at hand."""
    tc = config.train
    if corpus is None:
        return in_batch_loss(config.loss, similarity)
    how = CorpusNegatives(query_side=tc.tune == "query", candidates=tc.corpus_candidates, samples=tc.corpus_samples,
                          all_positives=tc.tune == "query" and tc.corpus_positives != "sample")
    loss = CorpusInfoNCE(config.loss.temperature, corpus, how, similarity=similarity)
    if tc.similarity_anchor and base_encode is not None:
        return Sum((loss, SimilarityAnchor(tc.similarity_anchor, base_encode)))
    return loss
