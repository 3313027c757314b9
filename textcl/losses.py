"""Contrastive losses as pure functions of embeddings: InfoNCE (in-batch + hard negatives, optional
symmetric term, false-negative masking), CoSENT for scored pairs, and unsupervised SimCSE.

Nothing here touches a model, a process group or a file; `train/objective.py` embeds, gathers and
scales. Logits are computed in float32 whatever the embedding dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from textcl.types import normalize_text  # one definition of "same text"


@dataclass(frozen=True)
class KnownPositives:
    """What is known to be relevant to one query: positive ids and normalized positive texts."""

    ids: frozenset[str] = frozenset()
    texts: frozenset[str] = frozenset()


def _labels(n: int, group_size: int, offset: int, device: torch.device) -> torch.Tensor:
    return offset + torch.arange(n, device=device) * group_size


def info_nce(query: torch.Tensor, candidates: torch.Tensor, *, temperature: float, group_size: int,
             label_offset: int = 0, mask: torch.Tensor | None = None, symmetric: bool = False,
             all_queries: torch.Tensor | None = None, query_offset: int = 0,
             query_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean InfoNCE over the B local queries.

    Layout: `query` [B, D]; `candidates` [M, D] are the local B * group_size rows or the rows of
    all ranks concatenated (rank order). Label: the positive of local query i is candidate row
    `label_offset + i * group_size` (label_offset = number of candidate rows of earlier ranks).
    loss_i = -log softmax_j(q_i . c_j / temperature)[label_i]; `mask` [B, M] (True = exclude)
    removes in-batch false negatives from the softmax; the label entry is never masked.

    symmetric: adds the positive -> query direction and averages the two: for positive p_i the
    softmax runs over `all_queries` [N, D] (default: `query`), label `query_offset + i`, with
    `query_mask` [B, N] excluding other queries that p_i is known to answer.

    World size: the value is a mean over LOCAL queries, independent of world size. For DDP
    (gradient averaged over ranks) to reproduce the full-batch gradient, the caller multiplies
    it by B_local * world / B_global (see train/objective.py).
    """
    q, c = query.float(), candidates.float()
    b = q.shape[0]
    labels = _labels(b, group_size, label_offset, q.device)
    loss = _masked_ce(q @ c.T / temperature, labels, mask)
    if not symmetric:
        return loss
    p = c[labels]
    qs = q if all_queries is None else all_queries.float()
    back = _masked_ce(p @ qs.T / temperature, torch.arange(b, device=q.device) + query_offset, query_mask)
    return (loss + back) / 2


def _masked_ce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is not None:
        rows = torch.arange(logits.shape[0], device=logits.device)
        mask = mask.clone()
        mask[rows, labels] = False  # the anchor's own positive always stays in the softmax
        logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, labels)


def simcse(view1: torch.Tensor, view2: torch.Tensor, *, temperature: float, label_offset: int = 0,
           mask: torch.Tensor | None = None) -> torch.Tensor:
    """Unsupervised SimCSE: two dropout views of the same texts; view2[label_offset + i] is the
    positive of view1[i] and the other rows of view2 (possibly gathered) are negatives.
    Equal to info_nce with group_size 1; same world-size scaling rule."""
    return info_nce(view1, view2, temperature=temperature, group_size=1, label_offset=label_offset,
                    mask=mask)


def cosent(emb1: torch.Tensor, emb2: torch.Tensor, scores: torch.Tensor, *,
           temperature: float = 0.05) -> torch.Tensor:
    """CoSENT (Su, 2022): log(1 + sum over pairs (i, j) with score_i > score_j of
    exp((cos_j - cos_i) / temperature)), cos_k = cosine(emb1[k], emb2[k]); 1/temperature = 20.

    One value for the whole batch (not a per-row mean): under DDP every rank must compute it over the
    gathered pairs, unscaled, for the averaged gradient to equal the full-batch gradient.
    """
    return _rank_loss(F.cosine_similarity(emb1.float(), emb2.float(), dim=-1) / temperature, scores)


def angle_similarity(emb1: torch.Tensor, emb2: torch.Tensor) -> torch.Tensor:
    """AnglE's pairwise angle score (Li & Li, 2023): the halves of each embedding are the real and
    imaginary parts of complex vectors z and w; the score is |sum_k Re(z_k conj(w_k)) + Im(...)| /
    (|z| |w|), a similarity that keeps a gradient where cosine saturates. Equal to
    sentence-transformers' `pairwise_angle_sim`."""
    a, b = torch.chunk(emb1.float(), 2, dim=-1)
    c, d = torch.chunk(emb2.float(), 2, dim=-1)
    w2 = (c * c + d * d).sum(-1, keepdim=True)
    re, im = (a * c + b * d) / w2, (b * c - a * d) / w2
    scale = w2.sqrt() / (a * a + b * b).sum(-1, keepdim=True).sqrt()  # |w| / |z|
    return ((re + im) * scale).sum(-1).abs()


def _rank_loss(sim: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    s = scores.to(sim.device, torch.float32)
    diff = sim[None, :] - sim[:, None]  # diff[i, j] = sim_j - sim_i
    diff = diff.masked_fill(~(s[:, None] > s[None, :]), float("-inf"))
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff.flatten()]), dim=0)


def angle(emb1: torch.Tensor, emb2: torch.Tensor, scores: torch.Tensor, *,
          temperature: float = 0.05) -> torch.Tensor:
    """AnglE's angle objective: the CoSENT ranking loss over `angle_similarity` instead of cosine."""
    return _rank_loss(angle_similarity(emb1, emb2) / temperature, scores)


def false_negative_mask(query_ids: Sequence[str | None], query_texts: Sequence[str],
                        cand_ids: Sequence[str | None], cand_texts: Sequence[str],
                        positive_sets: Sequence[KnownPositives], *, group_size: int,
                        label_offset: int = 0) -> torch.Tensor:
    """Bool [B, M], True = candidate j is a false negative for query i and leaves its softmax.

    Masked: a candidate whose id is in the query's known positive ids, whose normalized text is in
    its known positive texts, or whose normalized text equals the query's. Never masked: the
    query's own positive, row label_offset + i * group_size. (query_ids are accepted for symmetry
    with the batch; ids of queries and candidates live in different namespaces and are not compared.)
    """
    del query_ids
    by_id: dict[str, list[int]] = {}
    by_text: dict[str, list[int]] = {}
    for j, (cid, text) in enumerate(zip(cand_ids, cand_texts)):
        if cid is not None:
            by_id.setdefault(cid, []).append(j)
        by_text.setdefault(normalize_text(text), []).append(j)
    mask = torch.zeros(len(query_texts), len(cand_texts), dtype=torch.bool)
    for i, qtext in enumerate(query_texts):
        known = positive_sets[i] if positive_sets else KnownPositives()
        hits = [j for t in (*known.texts, normalize_text(qtext)) for j in by_text.get(t, ())]
        hits += [j for k in known.ids for j in by_id.get(k, ())]
        if hits:
            mask[i, hits] = True
        mask[i, label_offset + i * group_size] = False
    return mask


def query_side_mask(positive_ids: Sequence[str | None], positive_texts: Sequence[str],
                    all_query_texts: Sequence[str], all_positive_sets: Sequence[KnownPositives],
                    *, query_offset: int = 0) -> torch.Tensor:
    """Bool [B, N] for the symmetric term: query j is excluded for local positive i when that
    positive is a known positive of query j (id or normalized text) or query j's text equals query
    (query_offset + i)'s text. Query query_offset + i itself is never masked."""
    by_text: dict[str, list[int]] = {}
    by_id: dict[str, list[int]] = {}
    by_query: dict[str, list[int]] = {}
    for j, known in enumerate(all_positive_sets):
        for t in known.texts:
            by_text.setdefault(t, []).append(j)
        for k in known.ids:
            by_id.setdefault(k, []).append(j)
    norm_queries = [normalize_text(t) for t in all_query_texts]
    for j, t in enumerate(norm_queries):
        by_query.setdefault(t, []).append(j)
    mask = torch.zeros(len(positive_texts), len(all_query_texts), dtype=torch.bool)
    for i, (pid, ptext) in enumerate(zip(positive_ids, positive_texts)):
        own = query_offset + i
        hits = by_text.get(normalize_text(ptext), []) + by_query.get(norm_queries[own], [])
        if pid is not None:
            hits += by_id.get(pid, [])
        if hits:
            mask[i, hits] = True
        mask[i, own] = False
    return mask
