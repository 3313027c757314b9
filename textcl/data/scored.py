"""Scored sentence pairs (sentence1, sentence2, score): STS Benchmark, SICK and generic tables.

`load_scored_pairs` auto-detects an STS-B folder or file (`sts-*.csv`, tab split, quoting OFF),
SICK (header with `sentence_A`), and otherwise maps columns by role in JSONL/CSV/TSV/Parquet/HF.
"""

from __future__ import annotations

import logging
from pathlib import Path

from textcl.data.columns import resolve_columns
from textcl.data.source import DelimitedRows, LoadReport, check_score, check_text, handle, iter_lines
from textcl.data.tables import detect_format, iter_rows, peek_first_line
from textcl.errors import DataError
from textcl.types import ScoredPair

log = logging.getLogger(__name__)

SCORED_ROLES = {
    "sentence1": ("sentence1", "sentence_a", "text1", "s1", "premise"),
    "sentence2": ("sentence2", "sentence_b", "text2", "s2", "hypothesis"),
    "score": ("score", "similarity_score", "relatedness_score", "similarity", "gold_score", "label"),
}


def load_stsb(path: str | Path, split: str = "test", report: LoadReport | None = None) -> list[ScoredPair]:
    """STS Benchmark 2017 TSV (folder or file): tab split with quoting OFF; 7 or more fields.

    Fields: genre, file, year, id, score, sentence1, sentence2[, source1, source2].
    """
    path = Path(path)
    if path.is_dir():
        path = path / f"sts-{split}.csv"
    pairs = []
    for lineno, line in iter_lines(path, report):
        if not line.strip():
            continue
        try:
            parts = line.split("\t")
            if len(parts) < 7:
                raise DataError(f"wrong column count: expected at least 7 tab-separated fields, got {len(parts)}",
                                str(path), lineno)
            score = check_score(parts[4], str(path), lineno, "score")
            s1 = check_text(parts[5], str(path), lineno, "sentence1")
            s2 = check_text(parts[6], str(path), lineno, "sentence2")
        except DataError as exc:
            handle(exc, report)
            continue
        pairs.append(ScoredPair(s1, s2, score))
    if not pairs:
        raise DataError("no pairs found", str(path))
    return pairs


_SICK_SPLITS = {"train": "TRAIN", "dev": "TRIAL", "validation": "TRIAL", "trial": "TRIAL", "test": "TEST"}


def load_sick(path: str | Path, split: str = "test", report: LoadReport | None = None) -> list[ScoredPair]:
    """SICK-style TSV with a header: sentence_A, sentence_B, relatedness_score. When a `SemEval_set`
    column is present, only rows of `split` are kept (train=TRAIN, dev=TRIAL, test=TEST); the others
    are counted in `report.notes`."""
    path = Path(path)
    rows = DelimitedRows(path, "\t", report)
    want = {"sentence_A", "sentence_B", "relatedness_score"}
    if not want <= set(rows.fieldnames):
        raise DataError(f"missing columns {sorted(want - set(rows.fieldnames))} in header", str(path), 1)
    split_name = _SICK_SPLITS.get(split.lower(), split.upper())
    pairs = []
    for lineno, row in rows:
        if (row.get("SemEval_set") or split_name).strip().upper() != split_name:
            if report is not None:
                report.note("rows of another SemEval_set split")
            continue
        try:
            score = check_score(row["relatedness_score"], str(path), lineno, "relatedness_score")
            s1 = check_text(row["sentence_A"], str(path), lineno, "sentence_A")
            s2 = check_text(row["sentence_B"], str(path), lineno, "sentence_B")
        except DataError as exc:
            handle(exc, report)
            continue
        pairs.append(ScoredPair(s1, s2, score))
    if not pairs:
        raise DataError(f"no pairs found for split {split!r}", str(path))
    return pairs


def _generic(path: str | Path, fmt: str, split: str, columns: dict | None,
             report: LoadReport) -> list[ScoredPair]:
    rows = iter_rows(path, fmt, split, report)
    pairs: list[ScoredPair] = []
    mapping = None
    for lineno, row in rows:
        if mapping is None:
            mapping = resolve_columns(list(row), columns, SCORED_ROLES, required=("sentence1", "sentence2",
                                                                                  "score"), path=str(path))
            report.columns = dict(mapping)
        try:
            s1 = _cell(row, mapping["sentence1"], str(path), lineno)
            s2 = _cell(row, mapping["sentence2"], str(path), lineno)
            col = mapping["score"]
            if row.get(col) is None:
                raise DataError("missing field", str(path), lineno, col)
            score = check_score(row[col], str(path), lineno, col)
        except DataError as exc:
            handle(exc, report)
            continue
        pairs.append(ScoredPair(s1, s2, score))
    return pairs


def _cell(row: dict, col: str, path: str, lineno: int) -> str:
    if row.get(col) is None:
        raise DataError("missing field", path, lineno, col)
    return check_text(row[col], path, lineno, col)


def load_scored_pairs_with_report(path: str | Path, *, format: str = "auto", split: str = "test",
                                  columns: dict | None = None,
                                  on_error: str = "raise") -> tuple[list[ScoredPair], LoadReport]:
    """Like `load_scored_pairs`, also returning the `LoadReport` (what was kept/skipped and why)."""
    if on_error not in ("raise", "skip"):
        raise DataError(f"on_error must be 'raise' or 'skip', got {on_error!r}", str(path))
    fmt = format.lower()
    if fmt == "auto":
        fmt = detect_format(path)
        p = Path(path)
        if p.is_file() and p.name.lower().startswith("sts-") and p.name.lower().endswith((".csv", ".csv.gz")):
            fmt = "stsb"
        elif p.is_file() and fmt in ("tsv", "text", "csv") and "sentence_A" in peek_first_line(p):
            fmt = "sick"
    report = LoadReport(str(path), fmt, on_error)
    if fmt == "stsb":
        pairs = load_stsb(path, split, report)
    elif fmt == "sick":
        pairs = load_sick(path, split, report)
    elif fmt in ("jsonl", "csv", "tsv", "parquet", "hf"):
        pairs = _generic(path, fmt, split, columns, report)
    else:
        raise DataError(f"format {fmt!r} does not hold scored pairs (use stsb, sick, jsonl, csv, tsv, "
                        "parquet or hf)", str(path))
    if not pairs:
        raise DataError(f"no scored pairs loaded ({report.n_skipped} rows skipped: {dict(report.skipped)})",
                        str(path))
    report.kept = len(pairs)
    report.log()
    return pairs, report


def load_scored_pairs(path: str | Path, *, format: str = "auto", split: str = "test",
                      columns: dict | None = None, on_error: str = "raise") -> list[ScoredPair]:
    """Load (sentence1, sentence2, score) pairs from an STS-B folder/file, a SICK TSV, or a generic
    JSONL/CSV/TSV/Parquet/HF table (`columns={"sentence1": ..., "sentence2": ..., "score": ...}`)."""
    return load_scored_pairs_with_report(path, format=format, split=split, columns=columns,
                                         on_error=on_error)[0]
