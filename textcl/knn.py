"""Nearest-neighbour search with one output layout: exact chunked search and FAISS factory indexes.

Every search returns `(scores, indices)`, both shaped [n_queries, k], sorted by descending score,
ties broken by ascending corpus index; rows with fewer than k candidates are padded with
(-inf, -1). Embeddings are float32 and scored as sentence-transformers' similarity functions score them:
inner product for cosine (unit vectors, normalised by the caller) and dot, minus the L2 distance for
euclidean, minus the L1 distance for manhattan.
"""

from __future__ import annotations

import logging
import math

import faiss
import numpy as np
import torch

from textcl.errors import ConfigError
from textcl.progress import bar as progress_bar
from textcl.scores import pairwise_scores

log = logging.getLogger(__name__)

_FAISS_METRIC = {"cosine": faiss.METRIC_INNER_PRODUCT, "dot": faiss.METRIC_INNER_PRODUCT,
                 "euclidean": faiss.METRIC_L2, "manhattan": faiss.METRIC_L1}


def merge_topk(scores_a: torch.Tensor, idx_a: torch.Tensor, scores_b: torch.Tensor, idx_b: torch.Tensor,
               k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two top-k lists into one, ordered by (score desc, index asc); pure and order-independent."""
    scores = torch.cat([scores_a, scores_b], dim=1).numpy()
    idx = torch.cat([idx_a, idx_b], dim=1).numpy()
    # Padding (-1) sorts last: give it the largest index so real ties keep ascending order.
    key = np.where(idx < 0, np.iinfo(np.int64).max, idx)
    order = np.lexsort((key, -scores), axis=1)[:, :k]  # numpy's lexsort is ~3x torch's stable argsort here
    return (torch.from_numpy(np.take_along_axis(scores, order, 1)),
            torch.from_numpy(np.take_along_axis(idx, order, 1)))


def _chunk_topk(sims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row where a tie at the k-th value is won by the lowest column index.

    `torch.topk` picks arbitrary members of a tie at the boundary; rows where that can happen (more
    items equal to the k-th value than slots left) are redone with a stable full sort.
    """
    if k >= sims.shape[1]:  # everything is kept: the merge orders ties by index
        return sims, torch.arange(sims.shape[1]).expand(sims.shape[0], -1).clone()
    s, i = torch.topk(sims, k + 1, dim=1, sorted=True)
    # The k-th and (k+1)-th values are equal only when a tie straddles the cut.
    ambiguous = (s[:, k - 1] == s[:, k]).nonzero().flatten()
    s, i = s[:, :k].contiguous(), i[:, :k].contiguous()
    if ambiguous.numel():
        order = torch.argsort(-sims[ambiguous], dim=1, stable=True)[:, :k]
        i[ambiguous] = order
        s[ambiguous] = sims[ambiguous].gather(1, order)
    return s, i


def exact_search(queries: np.ndarray, corpus: np.ndarray, k: int, *, query_chunk_size: int = 1024,
                 corpus_chunk_size: int = 65536, offset: int = 0, progress: bool = False,
                 similarity: str = "dot") -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k search by `similarity` (see `pairwise_scores`); peak memory is query_chunk x corpus_chunk,
    never Q x N.

    `offset` is added to the returned indices (for a corpus shard that starts at `offset`).
    """
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    c = torch.from_numpy(np.ascontiguousarray(corpus, dtype=np.float32))
    n_q, n_c = q.shape[0], c.shape[0]
    out_scores = np.full((n_q, k), -np.inf, dtype=np.float32)
    out_idx = np.full((n_q, k), -1, dtype=np.int64)
    starts = range(0, n_q, query_chunk_size)
    if progress:
        starts = progress_bar(starts, desc="exact search", unit="chunk")
    for qs in starts:
        q_chunk = q[qs:qs + query_chunk_size]
        best_s = torch.full((q_chunk.shape[0], 0), -float("inf"))
        best_i = torch.zeros((q_chunk.shape[0], 0), dtype=torch.int64)
        for cs in range(0, n_c, corpus_chunk_size):
            sims = pairwise_scores(q_chunk, c[cs:cs + corpus_chunk_size], similarity)
            s, i = _chunk_topk(sims, min(k, sims.shape[1]))
            best_s, best_i = merge_topk(best_s, best_i, s, i + cs + offset, k)
        m = best_s.shape[1]
        out_scores[qs:qs + q_chunk.shape[0], :m] = best_s.numpy()
        out_idx[qs:qs + q_chunk.shape[0], :m] = best_i.numpy()
    return out_scores, out_idx


# ---------------------------------------------------------------- FAISS


def parse_index_spec(spec: str) -> tuple[str, dict[str, float]]:
    """Split "IVF1024,Flat|nprobe=32" into the factory string and search-time parameters."""
    factory, _, params = spec.partition("|")
    out: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in params.split(","))):
        name, eq, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"index '{spec}': search parameter '{item}' must look like name=number") from None
        if not eq:
            raise ConfigError(f"index '{spec}': search parameter '{item}' must look like name=number")
    return factory.strip(), out


def _nlist(factory: str) -> int | None:
    for part in factory.split(","):
        if part.startswith("IVF"):
            digits = "".join(ch for ch in part[3:].split("_")[0] if ch.isdigit())
            return int(digits) if digits else None
    return None


def _to_gpu(index, gpu: bool | None):
    """Move an index to GPU when asked (None = when available); log the fallback to CPU."""
    if gpu is False:
        return index
    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if n_gpus > 0 and hasattr(faiss, "StandardGpuResources"):
        try:
            res = faiss.StandardGpuResources()
            log.info("FAISS: using GPU index")
            return faiss.index_cpu_to_gpu(res, 0, index)
        except RuntimeError as exc:  # e.g. an index type with no GPU implementation (HNSW)
            log.warning("FAISS: GPU index unavailable for this type (%s); using the CPU index", exc)
            return index
    log.info("FAISS: no GPU build/device (%d GPUs visible to faiss); using the CPU index", n_gpus)
    return index


def build_faiss_index(corpus: np.ndarray, spec: str, *, gpu: bool | None = None, seed: int = 0,
                      similarity: str = "dot"):
    """Build and fill a FAISS index from a factory spec ("HNSW32", "IVF256,PQ32|nprobe=16"): inner product
    for cosine and dot, L2 for euclidean, L1 for manhattan (FAISS supports L1 in flat and HNSW indexes)."""
    factory, params = parse_index_spec(spec)
    xb = np.ascontiguousarray(corpus, dtype=np.float32)
    nlist = _nlist(factory)
    if nlist is not None and nlist > xb.shape[0]:
        raise ConfigError(f"index '{factory}': {nlist} IVF lists need at least {nlist} corpus vectors, "
                          f"got {xb.shape[0]}; use fewer lists (about sqrt(N)) or 'Flat'")
    try:
        index = faiss.index_factory(xb.shape[1], factory, _FAISS_METRIC[similarity])
    except RuntimeError as exc:
        raise ConfigError(f"invalid FAISS factory string '{factory}': {str(exc).splitlines()[-1]}") from None
    if hasattr(index, "cp"):  # clustering seed, for reproducible IVF/PQ training
        index.cp.seed = seed
    index = _to_gpu(index, gpu)
    if not index.is_trained:
        log.info("FAISS: training %s on %d vectors", factory, xb.shape[0])
        index.train(xb)
    index.add(xb)
    if nlist is not None and "nprobe" not in params:
        params["nprobe"] = max(1, math.ceil(nlist / 16))  # faiss' default of 1 gives poor recall
    if "HNSW" in factory and "efSearch" not in params:
        params["efSearch"] = 128
    space = faiss.GpuParameterSpace() if "Gpu" in type(index).__name__ else faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, int(value) if float(value).is_integer() else value)
    log.info("FAISS index %s, search parameters %s", factory, params)
    return index


def faiss_search(index, queries: np.ndarray, k: int, *, query_chunk_size: int = 1024,
                 progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Search a FAISS index in query chunks and return the common layout (ties by ascending index), scores as
    `pairwise_scores` gives them (an L2 index's squared distances become -distance, L1's -distance)."""
    xq = np.ascontiguousarray(queries, dtype=np.float32)
    out_scores = np.full((xq.shape[0], k), -np.inf, dtype=np.float32)
    out_idx = np.full((xq.shape[0], k), -1, dtype=np.int64)
    starts = range(0, xq.shape[0], query_chunk_size)
    if progress:
        starts = progress_bar(starts, desc="faiss search", unit="chunk")
    for qs in starts:
        s, i = index.search(xq[qs:qs + query_chunk_size], k)
        s = _as_similarity(s, index.metric_type)
        s = np.where(i < 0, -np.inf, s).astype(np.float32)
        key = np.where(i < 0, np.iinfo(np.int64).max, i)
        order = np.lexsort((key, -s), axis=1)
        out_scores[qs:qs + len(s)] = np.take_along_axis(s, order, 1)
        out_idx[qs:qs + len(s)] = np.take_along_axis(i, order, 1)
    return out_scores, out_idx


def _as_similarity(scores: np.ndarray, metric: int) -> np.ndarray:
    if metric == faiss.METRIC_L2:  # squared distances
        return -np.sqrt(np.maximum(scores, 0))
    if metric == faiss.METRIC_L1:
        return -scores
    return scores


def search(queries: np.ndarray, corpus: np.ndarray, k: int, *, factory: str = "exact",
           query_chunk_size: int = 1024, corpus_chunk_size: int = 65536,
           similarity: str = "dot") -> tuple[np.ndarray, np.ndarray]:
    """One entry point: `factory="exact"` (chunked, bounded memory) or any FAISS factory string."""
    if factory == "exact":
        return exact_search(queries, corpus, k, query_chunk_size=query_chunk_size,
                            corpus_chunk_size=corpus_chunk_size, similarity=similarity)
    return faiss_search(build_faiss_index(corpus, factory, similarity=similarity), queries, k,
                        query_chunk_size=query_chunk_size)


def recall_at_k(approx_idx: np.ndarray, exact_idx: np.ndarray, k: int | None = None,
                exact_scores: np.ndarray | None = None, approx_scores: np.ndarray | None = None) -> float:
    """Mean fraction of the exact top-k found by the approximate search (padding ignored).

    With both score arrays given, an approximate hit whose score equals the exact k-th score counts as
    found (tie-tolerant, as in faiss.contrib.evaluation): any member of a tie is a correct answer.
    """
    k = k or exact_idx.shape[1]
    total, found = 0, 0
    for r in range(exact_idx.shape[0]):
        truth = [j for j in exact_idx[r, :k] if j >= 0]
        got = {j for j in approx_idx[r, :k] if j >= 0}
        total += len(truth)
        hits = len(got.intersection(truth))
        if exact_scores is not None and approx_scores is not None and truth:
            kth = exact_scores[r, len(truth) - 1]
            extra = [j for j, s in zip(approx_idx[r, :k], approx_scores[r, :k])
                     if j >= 0 and j not in truth and np.isclose(s, kth, rtol=0, atol=1e-6)]
            hits = min(len(truth), hits + len(extra))
        found += hits
    return found / total if total else 1.0
