"""Embedding vectors from files, for models textcl cannot run (an API, a vector-database export): Parquet with
an id column and a vector column (a list of floats per row), or a NumPy `.npy` array [n, dim] with its ids, one
per line, in `<name>.ids.txt` beside it (line i = row i). Also training pairs (`query-id<TAB>corpus-id`) or
BEIR qrels, and a retrieval set over vectors that textcl's evaluator scores like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from textcl.data.beir import load_qrels
from textcl.data.source import iter_lines
from textcl.errors import DataError
from textcl.types import Document, RetrievalSet

ID_COLUMN, VECTOR_COLUMN = "id", "vector"


@dataclass
class Vectors:
    """Rows of `matrix` [n, dim] (float32) named by `ids` (unique, stripped)."""

    ids: list[str]
    matrix: np.ndarray
    path: str = ""
    row: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.row = {d: i for i, d in enumerate(self.ids)}

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


def ids_file(path: str | Path) -> Path:
    """Where the ids of a `.npy` file are: `<name>.ids.txt` beside it."""
    path = Path(path)
    return path.with_name(path.name[:-len(".npy")] + ".ids.txt")


def read_vectors(path: str | Path) -> Vectors:
    """Vectors from `.parquet` (columns `id`, `vector`) or `.npy` (+ `<name>.ids.txt`). Errors name the file, the
    row (or line) and the field."""
    path = Path(path)
    if not path.is_file():
        raise DataError("vector file not found", str(path))
    if path.suffix == ".parquet":
        ids, matrix = _read_parquet(path)
    elif path.suffix == ".npy":
        ids, matrix = _read_npy(path)
    else:
        raise DataError("unknown vector file type: give .parquet (columns id, vector) or .npy (with <name>.ids.txt)",
                        str(path))
    _check_ids(ids, path)
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if len(bad):
        raise DataError("NaN or infinite value", f"{path} row {int(bad[0]) + 1}", field=VECTOR_COLUMN)
    return Vectors(ids=ids, matrix=matrix, path=str(path))


def _read_parquet(path: Path) -> tuple[list[str], np.ndarray]:
    import pyarrow as pa  # start-up time: pyarrow loads only when a Parquet file is read
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"not a readable Parquet file ({exc})", str(path)) from None
    missing = [c for c in (ID_COLUMN, VECTOR_COLUMN) if c not in schema.names]
    if missing:
        raise DataError(f"no column {', '.join(repr(c) for c in missing)} (columns: {', '.join(schema.names)}); "
                        f"vector files have an '{ID_COLUMN}' column and a '{VECTOR_COLUMN}' column (a list of floats "
                        "per row)", str(path))
    table = pq.read_table(path, columns=[ID_COLUMN, VECTOR_COLUMN])
    vec = table.column(VECTOR_COLUMN).combine_chunks()
    if not (pa.types.is_list(vec.type) or pa.types.is_large_list(vec.type) or pa.types.is_fixed_size_list(vec.type)):
        raise DataError(f"expected a list of floats per row, got {vec.type}", f"{path} row 1", field=VECTOR_COLUMN)
    if len(vec) == 0:
        raise DataError("no rows", str(path))
    lengths = pc.list_value_length(vec).to_numpy(zero_copy_only=False)
    nulls = np.flatnonzero(np.asarray(vec.is_null()))
    if len(nulls):
        raise DataError("missing vector", f"{path} row {int(nulls[0]) + 1}", field=VECTOR_COLUMN)
    wrong = np.flatnonzero(lengths != lengths[0])
    if len(wrong) or lengths[0] == 0:
        i = int(wrong[0]) if len(wrong) else 0
        raise DataError(f"{int(lengths[i])} values, expected {int(lengths[0])} (as row 1)" if len(wrong) else
                        "empty vector", f"{path} row {i + 1}", field=VECTOR_COLUMN)
    values = vec.flatten().to_numpy(zero_copy_only=False)
    if values.dtype.kind not in "fiu":
        raise DataError(f"vector values must be numbers, got {vec.type}", f"{path} row 1", field=VECTOR_COLUMN)
    ids = table.column(ID_COLUMN).to_pylist()
    for i, value in enumerate(ids):
        if value is None or not str(value).strip():
            raise DataError("empty id", f"{path} row {i + 1}", field=ID_COLUMN)
    return [str(v).strip() for v in ids], values.astype(np.float32).reshape(len(vec), int(lengths[0]))


def _read_npy(path: Path) -> tuple[list[str], np.ndarray]:
    try:
        matrix = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"not a readable .npy array ({exc})", str(path)) from None
    if matrix.ndim != 2 or matrix.dtype.kind not in "fiu" or not matrix.size:
        raise DataError(f"expected a non-empty 2-D array of numbers [n, dim], got shape {matrix.shape} "
                        f"dtype {matrix.dtype}", str(path))
    names = ids_file(path)
    if not names.is_file():
        raise DataError(f"no ids file: the ids of {path.name} go in {names.name} beside it, one per line (line i = "
                        "row i)", str(names))
    ids = []
    for lineno, line in iter_lines(names, None):
        if not line.strip():
            raise DataError("empty id", str(names), lineno, ID_COLUMN)
        ids.append(line.strip())
    if len(ids) != matrix.shape[0]:
        raise DataError(f"{len(ids)} ids for the {matrix.shape[0]} rows of {path.name}", str(names))
    return ids, matrix.astype(np.float32)


def _check_ids(ids: list[str], path: Path) -> None:
    seen: dict[str, int] = {}
    for i, value in enumerate(ids):
        if value in seen:
            raise DataError(f"duplicate id '{value}' (first at row {seen[value] + 1})", f"{path} row {i + 1}",
                            field=ID_COLUMN)
        seen[value] = i


def write_vectors(path: str | Path, ids: list[str], matrix: np.ndarray) -> Path:
    """Write vectors as `read_vectors` reads them (.parquet, or .npy + <name>.ids.txt)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    matrix = np.asarray(matrix, dtype=np.float32)
    if path.suffix == ".npy":
        np.save(path, matrix)
        ids_file(path).write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        return path
    import pyarrow as pa  # start-up time, as in _read_parquet
    import pyarrow.parquet as pq

    vec = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])
    pq.write_table(pa.table({ID_COLUMN: pa.array(list(ids), pa.string()), VECTOR_COLUMN: vec}), path)
    return path


def read_judgements(path: str | Path, queries: Vectors, documents: Vectors, *,
                    on_unknown: str = "warn") -> dict[str, dict[str, int]]:
    """Training pairs (`query-id<TAB>corpus-id`, grade 1) or BEIR qrels (`query-id<TAB>corpus-id<TAB>score`,
    header optional), checked against the ids of the vector files: `on_unknown` as `load_qrels` (warn: a query
    without a vector is dropped, a document without one stays relevant and is never retrieved; skip: both
    dropped, for training; raise: an error naming file and line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("judgements file not found", str(path))
    first = next((line for _, line in iter_lines(path, None) if line.strip()), "")
    if len(first.split("\t")) == 2 and first.split("\t")[0].strip().lower() not in ("query-id", "query_id", "qid"):
        return _read_pairs(path, queries, documents, on_unknown)
    return load_qrels(path, queries=queries.row, corpus=documents.row, on_unknown=on_unknown)


def _read_pairs(path: Path, queries: Vectors, documents: Vectors, on_unknown: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    dropped = 0
    for lineno, line in iter_lines(path, None):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise DataError(f"wrong column count: expected 2 tab-separated fields (query-id, corpus-id), got "
                            f"{len(parts)}", str(path), lineno)
        qid, did = parts[0].strip(), parts[1].strip()
        for value, name in ((qid, "query-id"), (did, "corpus-id")):
            if not value:
                raise DataError("empty id", str(path), lineno, name)
        unknown = ("query-id", qid, queries) if qid not in queries.row else \
            ("corpus-id", did, documents) if did not in documents.row else None
        if unknown is not None:
            if on_unknown == "raise":
                raise DataError(f"'{unknown[1]}' has no vector in {unknown[2].path}", str(path), lineno, unknown[0])
            if unknown[0] == "query-id" or on_unknown == "skip":
                dropped += 1
                continue
        out.setdefault(qid, {})[did] = 1
    if dropped:
        import logging  # only on this path: a rare message
        logging.getLogger(__name__).warning("%s: %d pairs name ids without a vector (dropped)", path, dropped)
    return out


class VectorLookup:
    """An Encode over stored vectors whose "texts" are ids (`vector_retrieval_set` names everything by id)."""

    def __init__(self, queries: Vectors, documents: Vectors):
        self.vectors = {"query": queries, "document": documents}
        self.fingerprint = f"vectors:{documents.path}"

    def __call__(self, texts: list[str], role: str = "document") -> np.ndarray:
        vectors = self.vectors[role]
        return vectors.matrix[[vectors.row[t] for t in texts]] if texts else vectors.matrix[:0]


def vector_retrieval_set(queries: Vectors, documents: Vectors, qrels: dict[str, dict[str, int]], name: str,
                         split: str) -> tuple[RetrievalSet, VectorLookup]:
    """A retrieval set whose query and document texts are their ids, and the Encode that looks their vectors up:
    `textcl.eval.retrieval.evaluate_retrieval` scores it as any set (same search, same metrics)."""
    rset = RetrievalSet(name=name, corpus={d: Document("", d) for d in documents.ids},
                        queries={q: q for q in qrels if q in queries.row}, qrels=qrels, split=split,
                        meta={"qrels_quirks": {}})
    return rset, VectorLookup(queries, documents)
