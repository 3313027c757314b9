"""Write training examples to JSONL(.gz) or Parquet with provenance; same input, same bytes.

JSONL provenance goes to `<path>.provenance.json`; Parquet keeps it in the file's metadata
(`textcl.provenance`). Files are written to a temporary name and renamed, so a crash never
leaves a half-written file under the final name.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path

from textcl.errors import DataError
from textcl.types import Example


def _jsonl_bytes(examples: list[Example], path: Path) -> bytes:
    lines = []
    for i, ex in enumerate(examples):
        try:
            lines.append((json.dumps(ex.to_dict(), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))
        except (ValueError, UnicodeEncodeError) as exc:  # NaN/inf score, lone surrogate
            raise DataError(f"example {i} cannot be written ({exc})", str(path)) from None
    return b"".join(lines)


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    # mtime=0 and no file name in the header: identical input gives identical bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def _parquet_bytes(examples: list[Example], provenance: dict | None) -> bytes:
    import pyarrow as pa  # start-up time: only Parquet needs it, and `textcl --help` loads the data layer
    import pyarrow.parquet as pq

    texts = pa.list_(pa.string())
    schema = pa.schema([("query", pa.string()), ("positives", texts), ("negatives", texts),
                        ("query_id", pa.string()), ("positive_ids", texts), ("negative_ids", texts),
                        ("scores", pa.list_(pa.float64()))])
    if provenance is not None:
        schema = schema.with_metadata({"textcl.provenance": json.dumps(provenance, sort_keys=True)})
    columns = {
        "query": [ex.query for ex in examples],
        "positives": [list(ex.positives) for ex in examples],
        "negatives": [list(ex.negatives) for ex in examples],
        "query_id": [ex.query_id for ex in examples],
        "positive_ids": [list(ex.positive_ids) for ex in examples],
        "negative_ids": [list(ex.negative_ids) for ex in examples],
        "scores": [list(ex.scores) for ex in examples],
    }
    table = pa.table(columns, schema=schema)
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue().to_pybytes()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_examples(examples: Iterable[Example], path: str | Path, provenance: dict | None = None) -> Path:
    """Write examples to `path` (`.jsonl`, `.jsonl.gz` or `.parquet`); returns the path.

    `provenance` (JSON-serialisable: source, seed, model fingerprint ...) is stored beside a JSONL
    file as `<path>.provenance.json` (a stale one is removed when None) or inside the Parquet file.
    `load_examples` reads it back into `LoadReport.provenance`.
    """
    path = Path(path)
    examples = list(examples)
    for i, ex in enumerate(examples):
        if not isinstance(ex, Example):
            raise DataError(f"item {i} is a {type(ex).__name__}, not an Example", str(path))
    if provenance is not None:
        try:
            prov_text = json.dumps(provenance, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
        except (TypeError, ValueError) as exc:
            raise DataError(f"provenance is not JSON-serialisable ({exc})", str(path)) from None
    name = path.name.lower()
    if name.endswith(".parquet"):
        _atomic_write(path, _parquet_bytes(examples, provenance))
        return path
    if name.endswith(".jsonl.gz"):
        data = _gzip(_jsonl_bytes(examples, path))
    elif name.endswith(".jsonl"):
        data = _jsonl_bytes(examples, path)
    else:
        raise DataError("unsupported output suffix: use .jsonl, .jsonl.gz or .parquet", str(path))
    _atomic_write(path, data)
    sidecar = Path(str(path) + ".provenance.json")
    if provenance is not None:
        _atomic_write(sidecar, prov_text.encode("utf-8"))
    else:
        sidecar.unlink(missing_ok=True)
    return path
