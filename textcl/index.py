"""Nearest-neighbour search with one output layout: exact chunked search and FAISS factory indexes.

Every search returns `(scores, indices)`, both shaped [n_queries, k], sorted by descending score,
ties broken by ascending corpus index; rows with fewer than k candidates are padded with
(-inf, -1). Embeddings are float32 and compared by inner product (cosine once normalised).
"""

from __future__ import annotations

import numpy as np
import torch


def _merge_topk(scores_a: torch.Tensor, idx_a: torch.Tensor, scores_b: torch.Tensor, idx_b: torch.Tensor,
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.cat([scores_a, scores_b], dim=1)
    idx = torch.cat([idx_a, idx_b], dim=1)
    # Stable order: sort by index first, then a stable sort by descending score keeps ties by index.
    order = torch.argsort(idx, dim=1, stable=True)
    scores, idx = scores.gather(1, order), idx.gather(1, order)
    order = torch.argsort(-scores, dim=1, stable=True)[:, :k]
    return scores.gather(1, order), idx.gather(1, order)


def exact_search(queries: np.ndarray, corpus: np.ndarray, k: int, *, query_chunk_size: int = 1024,
                 corpus_chunk_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner-product search; peak memory is query_chunk x corpus_chunk, never Q x N."""
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    c = torch.from_numpy(np.ascontiguousarray(corpus, dtype=np.float32))
    n_q, n_c = q.shape[0], c.shape[0]
    out_scores = np.full((n_q, k), -np.inf, dtype=np.float32)
    out_idx = np.full((n_q, k), -1, dtype=np.int64)
    for qs in range(0, n_q, query_chunk_size):
        q_chunk = q[qs:qs + query_chunk_size]
        best_s = torch.full((q_chunk.shape[0], 0), -float("inf"))
        best_i = torch.zeros((q_chunk.shape[0], 0), dtype=torch.int64)
        for cs in range(0, n_c, corpus_chunk_size):
            sims = q_chunk @ c[cs:cs + corpus_chunk_size].T
            kk = min(k, sims.shape[1])
            s, i = torch.topk(sims, kk, dim=1, sorted=False)
            best_s, best_i = _merge_topk(best_s, best_i, s, i + cs, k)
        m = best_s.shape[1]
        out_scores[qs:qs + q_chunk.shape[0], :m] = best_s.numpy()
        out_idx[qs:qs + q_chunk.shape[0], :m] = best_i.numpy()
    return out_scores, out_idx
