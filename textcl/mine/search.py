"""Candidate generation for mining: encode queries and corpus in fixed blocks, search, and score each
row's own positives, sharded over torch.distributed ranks when a process group is up.

Blocks are fixed by the data and the chunk sizes, never by the world size: rank r encodes (and, for
exact search, searches) blocks r, r+W, ...; the same `encode` calls happen on the same blocks in a
1-process and an N-process run, and top-k lists merge under one total order (score desc, index
asc), so the results are identical whatever the number of ranks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from textcl import distributed, progress
from textcl.config import MiningConfig
from textcl.knn import build_faiss_index, exact_search, faiss_search, merge_topk, recall_at_k
from textcl.mine.plan import MiningPlan
from textcl.scores import paired_scores
from textcl.types import Encode, plan_encoding, similarity_of

log = logging.getLogger(__name__)


@dataclass
class Candidates:
    scores: np.ndarray  # [n_queries, k] float32, rank order
    indices: np.ndarray  # [n_queries, k] int64 corpus indices
    pair_scores: np.ndarray  # [n_pairs] score of each (row, own positive) pair, see MiningPlan.pairs
    recall: float | None  # recall@k of a FAISS index vs exact search on a sample, None for exact
    timings: dict[str, float]


def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _bar(iterable, desc: str, show: bool, total: int):
    return progress.bar(iterable, desc=desc, total=total, unit="block") if show else iterable


def encode_sharded(texts: list[str], encode: Encode, role: str, block: int, *, progress: bool = False) -> np.ndarray:
    """Encode `texts` block by block, each rank its own blocks, and return all rows on every rank."""
    rank, world = distributed.rank(), distributed.world_size()
    blocks = _blocks(len(texts), block)
    mine = [(b, encode(texts[s:e], role)) for b, (s, e) in
            _bar(list(enumerate(blocks))[rank::world], f"encode {role} blocks", progress and rank == 0,
                 len(blocks[rank::world]))]
    parts = dict(p for part in distributed.all_gather_object(mine) for p in part)
    return np.concatenate([parts[b] for b in range(len(blocks))]).astype(np.float32, copy=False)


def _pair_scores(q_emb: np.ndarray, c_block: np.ndarray, start: int, pair_q: np.ndarray, pair_c: np.ndarray,
                 out: np.ndarray, similarity: str) -> None:
    """Fill `out` for the pairs whose positive lies in the block starting at corpus index `start`."""
    sel = np.nonzero((pair_c >= start) & (pair_c < start + c_block.shape[0]))[0]
    for s in range(0, sel.size, 8192):  # bounded temporaries; each pair's score is row-local
        part = sel[s:s + 8192]
        out[part] = paired_scores(torch.from_numpy(q_emb[pair_q[part]]),
                                  torch.from_numpy(c_block[pair_c[part] - start]), similarity).numpy()


def _merge_all(results: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    s, i = torch.from_numpy(results[0][0]), torch.from_numpy(results[0][1])
    for rs, ri in results[1:]:
        s, i = merge_topk(s, i, torch.from_numpy(rs), torch.from_numpy(ri), k)
    return s.numpy(), i.numpy()


def _exact(plan: MiningPlan, q_emb: np.ndarray, encode: Encode, cfg: MiningConfig, k: int,
           progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Each rank encodes and searches its own corpus blocks; only top-k lists travel."""
    rank, world = distributed.rank(), distributed.world_size()
    similarity = similarity_of(encode)
    _, pair_q, pair_c = plan.pairs()
    pair_scores = np.full(len(pair_c), np.nan, dtype=np.float32)
    blocks = _blocks(len(plan.corpus), cfg.corpus_chunk_size)
    local: list[tuple[np.ndarray, np.ndarray]] = []
    encode_s = 0.0
    owned = blocks[rank::world]
    for s, e in _bar(owned, "encode+search corpus blocks", progress and rank == 0, len(owned)):
        t0 = time.perf_counter()
        c_block = np.asarray(encode(plan.corpus[s:e], "document"), dtype=np.float32)
        encode_s += time.perf_counter() - t0
        found = exact_search(q_emb, c_block, k, query_chunk_size=cfg.query_chunk_size,
                             corpus_chunk_size=cfg.corpus_chunk_size, offset=s, similarity=similarity)
        # merge as we go: memory stays one [n_queries, k] list, whatever the number of blocks
        local = [found] if not local else [_merge_all([local[0], found], k)]
        _pair_scores(q_emb, c_block, s, pair_q, pair_c, pair_scores, similarity)
    gathered = distributed.all_gather_object((local, pair_scores))
    results = [r for part, _ in gathered for r in part]
    for _, ps in gathered:
        pair_scores = np.where(np.isnan(pair_scores), ps, pair_scores)
    scores, idx = _merge_all(results, k)
    return scores, idx, pair_scores, encode_s


def _approximate(plan: MiningPlan, q_emb: np.ndarray, encode: Encode, cfg: MiningConfig, k: int, seed: int,
                 progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Encoding is sharded; the FAISS index is built and searched on rank 0 and broadcast."""
    rank, world = distributed.rank(), distributed.world_size()
    t0 = time.perf_counter()
    c_emb = encode_sharded(plan.corpus, encode, "document", cfg.corpus_chunk_size, progress=progress)
    encode_s = time.perf_counter() - t0
    _, pair_q, pair_c = plan.pairs()
    pair_scores = np.full(len(pair_c), np.nan, dtype=np.float32)
    similarity = similarity_of(encode)
    _pair_scores(q_emb, c_emb, 0, pair_q, pair_c, pair_scores, similarity)
    result: list = [None]
    if rank == 0:
        index = build_faiss_index(c_emb, cfg.factory, seed=seed, similarity=similarity)
        scores, idx = faiss_search(index, q_emb, k, query_chunk_size=cfg.query_chunk_size, progress=progress)
        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])
        n_check = min(cfg.recall_check_queries, len(q_emb))
        sample = np.sort(rng.choice(len(q_emb), size=n_check, replace=False))
        ex_s, ex_i = exact_search(q_emb[sample], c_emb, k, query_chunk_size=cfg.query_chunk_size,
                                  corpus_chunk_size=cfg.corpus_chunk_size, similarity=similarity)
        recall = recall_at_k(idx[sample], ex_i, k, ex_s, scores[sample])
        result = [(scores, idx, recall)]
    if world > 1:
        dist.broadcast_object_list(result, src=0)
    scores, idx, recall = result[0]
    return scores, idx, pair_scores, encode_s, recall


def find_candidates(plan: MiningPlan, encode: Encode, cfg: MiningConfig, *, seed: int,
                    progress: bool = True) -> Candidates:
    """Top (skip_top + depth) corpus items per unique query, plus the score of every own positive."""
    k = min(cfg.skip_top + cfg.depth, len(plan.corpus))
    t0 = time.perf_counter()
    plan_encoding(encode, {"document": plan.corpus, "query": plan.queries})
    q_emb = encode_sharded(plan.queries, encode, "query", cfg.query_chunk_size, progress=progress)
    t_queries = time.perf_counter() - t0
    recall = None
    if cfg.factory == "exact":
        scores, idx, pair_scores, encode_s = _exact(plan, q_emb, encode, cfg, k, progress)
    else:
        scores, idx, pair_scores, encode_s, recall = _approximate(plan, q_emb, encode, cfg, k, seed, progress)
        level = logging.WARNING if recall < 0.9 else logging.INFO
        log.log(level, "index %s: recall@%d vs exact search on %d sampled queries = %.4f%s", cfg.factory, k,
                min(cfg.recall_check_queries, len(q_emb)), recall,
                " (low: raise nprobe/efSearch, e.g. 'IVF1024,Flat|nprobe=64')" if recall < 0.9 else "")
    total = time.perf_counter() - t0
    timings = {"encode_queries_s": t_queries, "encode_corpus_s": encode_s,
               "search_s": total - t_queries - encode_s}
    return Candidates(scores, idx, pair_scores, recall, timings)
