"""Format detection and row iteration for tables: JSONL, CSV, TSV, Parquet and HF `datasets`.

Every reader yields (number, row dict): the 1-based line for text files, the 1-based row for
Parquet and HF datasets, so errors can name where a bad value is.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from textcl.data.beir import is_beir_folder
from textcl.data.source import DelimitedRows, LoadReport, iter_jsonl, iter_raw_lines
from textcl.errors import DataError

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "tsv", "parquet", "hf", "beir", "flag", "stsb", "sick", "text")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv",
             ".parquet": "parquet", ".pq": "parquet", ".txt": "text"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HF_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")


def peek_first_line(path: Path) -> str:
    """The first line of a (possibly gzipped) text file, decoded leniently; '' if unreadable."""
    try:
        for _, raw in iter_raw_lines(path):
            return raw.decode("utf-8", errors="replace")
    except DataError:
        return ""
    return ""


def detect_format(path: str | Path) -> str:
    """Guess the format from a folder's contents or a file's suffix (`.gz` ignored); a path that
    does not exist but looks like `org/name` is taken as a Hugging Face hub id."""
    p = Path(path)
    if p.is_dir():
        if is_beir_folder(p):
            return "beir"
        if any((p / m).exists() for m in _HF_MARKERS):
            return "hf"
        if any(p.glob("sts-*.csv")):
            return "stsb"
        raise DataError("cannot detect the format of this folder: expected a BEIR folder (corpus.jsonl + "
                        "queries.jsonl), a Hugging Face dataset saved with save_to_disk, or sts-*.csv "
                        f"(or pass format=, one of {', '.join(FORMATS)})", str(p))
    if p.exists():
        name = p.name.lower().removesuffix(".gz")
        suffix = Path(name).suffix
        if suffix in _SUFFIXES:
            return _SUFFIXES[suffix]
        raise DataError(f"cannot detect the format from suffix {suffix or '(none)'!r}; known suffixes: "
                        f"{', '.join(_SUFFIXES)} (or pass format=, one of {', '.join(FORMATS)})", str(p))
    known_suffix = Path(p.name.lower().removesuffix(".gz")).suffix in _SUFFIXES
    if _HUB_ID.match(str(path)) and not str(path).startswith(".") and not known_suffix:
        return "hf"
    raise DataError("file not found", str(p))


def iter_rows(path: str | Path, fmt: str, split: str, report: LoadReport) -> Iterator[tuple[int, dict]]:
    """Rows of a table in format `fmt` (jsonl/flag, csv, tsv, parquet, hf)."""
    if fmt in ("jsonl", "flag"):
        return iter_jsonl(path, report)
    if fmt in ("csv", "tsv"):
        return iter(DelimitedRows(path, sniff_delimiter(path) if fmt == "csv" else "\t", report))
    if fmt == "parquet":
        return _parquet_rows(Path(path), report)
    if fmt == "hf":
        return _hf_rows(str(path), split, report)
    raise DataError(f"format {fmt!r} is not a table (expected one of jsonl, flag, csv, tsv, parquet, hf)",
                    str(path))


_DELIMITERS = (",", ";", "\t", "|")


def sniff_delimiter(path: str | Path) -> str:
    """The delimiter that splits a CSV header into the most columns: `,` unless the file uses `;` (a
    European spreadsheet export), tab or `|`."""
    header = peek_first_line(Path(path))
    fields = {d: len(next(csv.reader([header], delimiter=d), [])) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: fields[d])  # the first of equals: ','
    if best != ",":
        log.info("%s: the header is split by %r, not ',': reading the file with delimiter %r", path, best, best)
    return best


def parquet_columns(path: Path) -> tuple[list[str], dict[bytes, bytes]]:
    """Column names and key/value metadata of a Parquet file."""
    import pyarrow as pa  # start-up time: only Parquet needs it, and `textcl --help` loads the data layer
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DataError("file not found", str(path))
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"not a readable Parquet file ({str(exc)[:200]})", str(path)) from None
    return list(schema.names), dict(schema.metadata or {})


def _parquet_rows(path: Path, report: LoadReport) -> Iterator[tuple[int, dict]]:
    import pyarrow as pa  # start-up time, as in parquet_columns
    import pyarrow.parquet as pq

    parquet_columns(path)
    row = 0
    try:
        with pq.ParquetFile(path) as pf:
            for batch in pf.iter_batches(batch_size=4096):
                for values in batch.to_pylist():
                    row += 1
                    yield row, values
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"cannot read Parquet data after row {row} ({str(exc)[:200]})", str(path), row + 1) \
            from None


def _hf_load(name: str, split: str) -> Any:
    import datasets  # start-up time: `datasets` takes seconds to import and only HF inputs need it

    try:
        if Path(name).is_dir():
            ds = datasets.load_from_disk(name)
        else:
            ds = datasets.load_dataset(name, split=split)
    # datasets raises many unrelated types (FileNotFoundError, ConnectionError, DatasetNotFoundError,
    # ValueError ...); this boundary turns each into one clear DataError.
    except Exception as exc:  # noqa: BLE001
        offline = " (HF_HUB_OFFLINE is set: hub datasets cannot be downloaded)" \
            if not Path(name).exists() and os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") else ""
        raise DataError(f"cannot load Hugging Face dataset ({type(exc).__name__}: {str(exc)[:200]}){offline}",
                        name) from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"split {split!r} not found; available splits: {', '.join(ds)}", name)
        ds = ds[split]
    return ds


def _hf_rows(name: str, split: str, report: LoadReport) -> Iterator[tuple[int, dict]]:
    ds = _hf_load(name, split)
    yield from enumerate(ds, start=1)
