"""Compressed document vectors for a smaller index: `int8` (FAISS per-dimension 8-bit scalar quantizer, 4x
smaller), `binary` (the sign of each dimension, 32x smaller) and `pq:M` (FAISS product quantization, M bytes
a vector), optionally after Matryoshka-style truncation to the first `dimensions` (renormalised for cosine).
Each keeps its codes, decodes them to the vectors the index returns (`dequantised`: what queries are scored
against, and what a query adapter or query tower trains against) and knows its size in bytes; `search`
decodes a block of codes at a time and equals an exact search over the dequantised vectors (ties by row).

Binary search is asymmetric: a float query against sign vectors (q . sign(d) / sqrt(d)), so no float document
vector is needed to score (`rescore` re-ranks a top-k with float vectors when they are kept).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from textcl.errors import ConfigError
from textcl.knn import exact_search, merge_topk
from textcl.scores import INNER_PRODUCT  # the similarities a compressed index can score

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
    """Document vectors as a compressed index stores them (`codes`, and for int8 / pq the trained `quantizer`
    that decodes them) and returns them (`dequantised`)."""

    spec: str
    codes: np.ndarray
    dim: int
    quantizer: Any = None  # the trained FAISS quantizer (int8, pq), without codes: it encodes and decodes
    params_bytes: int = 0  # the quantizer's parameters

    @property
    def nbytes(self) -> int:
        """Codes + quantizer parameters: the index's size."""
        return int(self.codes.nbytes) + self.params_bytes

    def __len__(self) -> int:
        return len(self.codes)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Float32 vectors [n, dim] of `codes`, as the index scores them."""
        if self.spec == "none":
            return codes
        if self.spec == "binary":
            return _signs(codes, self.dim)
        return self.quantizer.sa_decode(np.ascontiguousarray(codes))

    @property
    def dequantised(self) -> np.ndarray:
        return self.decode(self.codes)

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """Codes of new vectors with the trained quantizer (what `add` appends)."""
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.spec == "none":
            return x
        if self.spec == "binary":
            return np.packbits(x > 0, axis=1)
        return self.quantizer.sa_encode(x)

    def add(self, vectors: np.ndarray) -> None:
        self.codes = np.concatenate([self.codes, self.encode(vectors)])

    def search(self, queries: np.ndarray, k: int, block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) by inner product of each float query with the stored documents, decoding one
        block of codes at a time (memory follows the block); ties by ascending row, as `knn.exact_search`."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self.codes))
        scores = torch.full((len(queries), 0), -torch.inf)
        rows = torch.zeros((len(queries), 0), dtype=torch.int64)
        for start in range(0, len(self.codes), block):
            vectors = self.decode(self.codes[start:start + block])
            s, i = exact_search(queries, vectors, min(k, len(vectors)), offset=start)
            scores, rows = merge_topk(scores, rows, torch.from_numpy(s), torch.from_numpy(i), k)
        return scores.numpy(), rows.numpy()

    def save(self, path: Path) -> None:
        """One FAISS file holding the codes: IndexScalarQuantizer / IndexPQ, or IndexBinaryFlat of the sign bits
        (`np.packbits(v > 0)`, the bits past `dim` zero)."""
        if self.spec == "none":
            raise ConfigError("an uncompressed index keeps its vectors in embeddings.npy, not a codes file")
        if self.spec == "binary":
            index = faiss.IndexBinaryFlat(8 * self.codes.shape[1])
            index.add(self.codes)
            faiss.write_index_binary(index, str(path))
            return
        index = faiss.clone_index(self.quantizer)
        index.add_sa_codes(self.codes)
        faiss.write_index(index, str(path))

    @classmethod
    def load(cls, path: Path, spec: str, dim: int) -> Compressed:
        """Read what `save` wrote; the quantizer keeps its parameters, the codes move to `codes`."""
        kind, m = parse(spec)
        if kind == "binary":
            index = faiss.read_index_binary(str(path))
            codes = faiss.vector_to_array(index.xb).reshape(index.ntotal, index.code_size)
            return cls(spec, codes.copy(), dim)
        index = faiss.read_index(str(path))
        codes = faiss.vector_to_array(index.codes).reshape(index.ntotal, index.sa_code_size()).copy()
        index.reset()  # the codes live in `codes`; the quantizer keeps its trained parameters
        return cls(spec, codes, dim, index, _params_bytes(kind, m, index))


def _signs(codes: np.ndarray, dim: int) -> np.ndarray:
    bits = np.unpackbits(codes, axis=1, count=dim).astype(np.float32)
    return (2.0 * bits - 1.0) / math.sqrt(dim)  # unit rows: scores on the cosine scale


def _params_bytes(kind: str, m: int | None, index: Any) -> int:
    if kind == "int8":
        return 2 * index.d * 4  # per-dimension minimum and range
    return m * index.pq.ksub * (index.d // m) * 4  # the codebooks


def compress(vectors: np.ndarray, spec: str, seed: int = 0) -> Compressed:
    """Quantize document vectors [N, d] (the quantizer is trained on them, seeded)."""
    kind, m = parse(spec)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = x.shape
    if kind == "none":
        return Compressed("none", x, dim)
    if kind == "binary":
        return Compressed("binary", np.packbits(x > 0, axis=1), dim)
    if kind == "int8":
        index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    else:
        if dim % m:
            raise ConfigError(f"compression pq:{m}: the vector size {dim} must be a multiple of M")
        nbits = max(1, min(8, int(math.log2(max(n, 2)))))  # k-means needs at least 2^nbits training vectors
        index = faiss.IndexPQ(dim, m, nbits, faiss.METRIC_INNER_PRODUCT)
        index.pq.cp.seed = seed
    index.train(x)
    spec = f"pq:{m}" if kind == "pq" else kind
    return Compressed(spec, index.sa_encode(x), dim, index, _params_bytes(kind, m, index))


def rescore(queries: np.ndarray, rows: np.ndarray, documents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank each query's candidate `rows` (from a compressed search) by inner product with the float
    `documents`; returns (scores, rows) in the new order."""
    scores = np.einsum("qd,qkd->qk", queries.astype(np.float32), documents[rows].astype(np.float32))
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


@dataclass(frozen=True)
class IndexForm:
    """How an index stores its documents (a recipe's index.compression / dimensions / rescore): the first
    `dimensions` of each vector (None: all), renormalised for cosine; `compression` of those; the float vectors
    kept beside the codes only when `rescore` (the compressed top-K re-ranked with them: more bytes, better order)."""

    compression: str = "none"
    dimensions: int | None = None
    rescore: int | None = None

    def __post_init__(self) -> None:
        kind, _ = parse(self.compression)
        if self.dimensions is not None and (not isinstance(self.dimensions, int) or self.dimensions < 1):
            raise ConfigError(f"index.dimensions must be a positive integer (or null: all), got {self.dimensions!r}")
        if self.rescore is not None and (not isinstance(self.rescore, int) or self.rescore < 1 or kind == "none"):
            raise ConfigError(f"index.rescore re-ranks a compressed index's top-K with float vectors: a positive "
                              f"integer with index.compression int8, binary or pq:M (got rescore {self.rescore!r}, "
                              f"compression {self.compression!r})")

    @classmethod
    def of(cls, index: Any) -> IndexForm:
        """The form of a recipe's `index:` section (config.IndexConfig)."""
        return cls(index.compression, index.dimensions, index.rescore)

    @property
    def compressed(self) -> bool:
        return parse(self.compression)[0] != "none"

    @property
    def plain(self) -> bool:
        return not self.compressed and self.dimensions is None

    def check(self, similarity: str | None, dim: int) -> None:
        """Refuse a form the vectors cannot take: compression scores by inner product, truncation needs the dims."""
        if self.compressed and similarity not in (None, *INNER_PRODUCT):
            raise ConfigError(f"index.compression {self.compression}: a compressed index scores by inner product, so "
                              f"it needs cosine or dot similarity, and the model's is {similarity!r}; set "
                              "index.compression: none, or model.similarity: cosine")
        if self.dimensions is not None and self.dimensions > dim:
            raise ConfigError(f"index.dimensions {self.dimensions}: the model's vectors have only {dim}")

    def truncate(self, vectors: np.ndarray, normalize: bool) -> np.ndarray:
        """The first `dimensions` of each vector (renormalised when `normalize`: cosine); unchanged without."""
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.dimensions is None or self.dimensions >= x.shape[1]:
            return x
        x = np.ascontiguousarray(x[:, :self.dimensions])
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) if normalize else x

    def store(self, vectors: np.ndarray, normalize: bool, seed: int = 0) -> Compressed:
        """Document vectors as this index stores them (truncated, then compressed)."""
        return compress(self.truncate(vectors, normalize), self.compression, seed)

    def describe(self) -> dict[str, Any]:
        return {"compression": compress_spec(self.compression), "dimensions": self.dimensions, "rescore": self.rescore}


def compress_spec(spec: str) -> str:
    """The canonical spelling of a compression spec ("PQ:48" -> "pq:48")."""
    kind, m = parse(spec)
    return f"pq:{m}" if kind == "pq" else kind


class IndexView:
    """An Encode whose documents come back as an `IndexForm` index returns them (truncated, dequantised) and
    whose queries are truncated as the index truncates them: scoring through it searches that index (an exact
    search over the dequantised vectors equals the index's search). `training=True`: documents zero-padded back
    to the full width and queries untouched, for a query side that trains on full vectors (the padded dimensions
    add nothing to a score). Everything else (fingerprint, rule, prompts) is the wrapped encoder's."""

    def __init__(self, encode: Any, form: IndexForm, seed: int = 0, *, training: bool = False,
                 memo: dict | None = None):
        self.inner, self.form, self.seed, self.training = encode, form, seed, training
        self.similarity = getattr(getattr(encode, "rule", None), "similarity", None)
        self.normalize = self.similarity == "cosine"
        self.memo = {} if memo is None else memo  # the last document set's stored form: dev evaluation repeats it

    def over(self, encode: Any) -> IndexView:
        """This view over another encoder (e.g. one with an adapter on its queries), sharing the memo."""
        return IndexView(encode, self.form, self.seed, training=self.training, memo=self.memo)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "inner":  # copy / pickle probe before __init__ ran
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __call__(self, texts: list[str], role: str = "document") -> np.ndarray:
        out = np.asarray(self.inner(texts, role), dtype=np.float32)
        if role == "query":
            return out if self.training else self.form.truncate(out, self.normalize)
        key = hashlib.blake2b(out.tobytes(), digest_size=16).hexdigest()
        if key not in self.memo:
            self.form.check(self.similarity, out.shape[1])  # as the index build will: fail at the first stage
            docs = self.form.store(out, self.normalize, self.seed).dequantised
            if self.training and docs.shape[1] < out.shape[1]:
                docs = np.pad(docs, ((0, 0), (0, out.shape[1] - docs.shape[1])))
            self.memo.clear()  # one document set at a time
            self.memo[key] = docs
        return self.memo[key]


def index_view(encode: Any, index: Any, seed: int = 0) -> IndexView | None:
    """`encode` seen through the index a recipe's `index:` section (config.IndexConfig) builds; None when that
    index stores the float vectors as they are (nothing to view)."""
    form = IndexForm.of(index)
    return None if form.plain else IndexView(encode, form, seed)
