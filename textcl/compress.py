"""Compressed document vectors for a smaller index: `int8` (FAISS per-dimension 8-bit scalar quantizer, 4x
smaller), `binary` (the sign of each dimension, 32x smaller) and `pq:M` (FAISS product quantization, M bytes
a vector). Each keeps its codes, the vectors as the index returns them (`dequantised`: what queries are scored
against, and what a query adapter trains against) and its size in bytes; `search` scores queries against the
codes and equals an exact search over the dequantised vectors.

Binary search is asymmetric: a float query against sign vectors (q . sign(d) / sqrt(d)), so no float document
vector is needed to score (`rescore` re-ranks a top-k with float vectors when they are kept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import torch

from textcl.errors import ConfigError
from textcl.knn import exact_search, merge_topk

KINDS = ("none", "int8", "binary", "pq:M")


def parse(spec: str) -> tuple[str, int | None]:
    """("none" | "int8" | "binary" | "pq", M or None) of a compression spec; ConfigError naming the forms."""
    spec = (spec or "none").strip().lower()
    if spec in ("none", "int8", "binary"):
        return spec, None
    if spec.startswith("pq:") and spec[3:].isdigit() and int(spec[3:]) > 0:
        return "pq", int(spec[3:])
    raise ConfigError(f"compression {spec!r}: use one of none, int8, binary or pq:M (M bytes a vector, e.g. pq:48)")


@dataclass
class Compressed:
    """Document vectors as a compressed index stores them (`codes`) and returns them (`dequantised`)."""

    spec: str
    codes: np.ndarray
    dequantised: np.ndarray  # float32 [N, d]
    nbytes: int  # codes + quantizer parameters: the index's size
    index: Any = None  # the FAISS index over the codes (int8, pq)

    @property
    def dim(self) -> int:
        return int(self.dequantised.shape[1])

    def search(self, queries: np.ndarray, k: int, block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) by inner product of each float query with the stored documents."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self.codes))
        if self.index is not None:
            return self.index.search(queries, k)
        if self.spec == "binary":  # unpack a block of sign bits at a time: memory follows the block
            scores = torch.full((len(queries), 0), -torch.inf)
            rows = torch.zeros((len(queries), 0), dtype=torch.int64)
            for start in range(0, len(self.codes), block):
                signs = _signs(self.codes[start:start + block], self.dim)
                s, i = exact_search(queries, signs, min(k, len(signs)), offset=start)
                scores, rows = merge_topk(scores, rows, torch.from_numpy(s), torch.from_numpy(i), k)
            return scores.numpy(), rows.numpy()
        return exact_search(queries, self.dequantised, k)


def _signs(codes: np.ndarray, dim: int) -> np.ndarray:
    bits = np.unpackbits(codes, axis=1, count=dim).astype(np.float32)
    return (2.0 * bits - 1.0) / math.sqrt(dim)  # unit rows: scores on the cosine scale


def compress(vectors: np.ndarray, spec: str, seed: int = 0) -> Compressed:
    """Quantize document vectors [N, d] (the quantizer is trained on them, seeded)."""
    kind, m = parse(spec)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = x.shape
    if kind == "none":
        return Compressed("none", x, x, int(x.nbytes))
    if kind == "binary":
        codes = np.packbits(x > 0, axis=1)
        return Compressed("binary", codes, _signs(codes, dim), int(codes.nbytes))
    if kind == "int8":
        index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        params = 2 * dim * 4  # per-dimension minimum and range
    else:
        if dim % m:
            raise ConfigError(f"compression pq:{m}: the vector size {dim} must be a multiple of M")
        nbits = max(1, min(8, int(math.log2(max(n, 2)))))  # k-means needs at least 2^nbits training vectors
        index = faiss.IndexPQ(dim, m, nbits, faiss.METRIC_INNER_PRODUCT)
        index.pq.cp.seed = seed
        params = m * (1 << nbits) * (dim // m) * 4  # the codebooks
    index.train(x)
    index.add(x)
    codes = index.sa_encode(x)
    dequantised = index.sa_decode(codes)
    return Compressed(f"pq:{m}" if kind == "pq" else kind, codes, dequantised, int(codes.nbytes) + params, index)


def rescore(queries: np.ndarray, rows: np.ndarray, documents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank each query's candidate `rows` (from a compressed search) by inner product with the float
    `documents`; returns (scores, rows) in the new order."""
    scores = np.einsum("qd,qkd->qk", queries.astype(np.float32), documents[rows].astype(np.float32))
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)
