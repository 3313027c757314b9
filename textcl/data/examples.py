"""Training examples (query, positives, negatives, ids, scores) from any supported source, and raw
texts. Columns are mapped by role; every bad row raises a DataError naming file, line and field,
or (on_error="skip") is counted in the returned `LoadReport`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from textcl.data.beir import load_beir
from textcl.data.columns import EXAMPLE_ROLES, resolve_columns
from textcl.data.source import LoadReport, check_id, check_score, check_text, handle, iter_lines
from textcl.data.tables import FORMATS, detect_format, iter_rows, parquet_columns
from textcl.errors import DataError
from textcl.types import Example, RetrievalSet

log = logging.getLogger(__name__)

FLAG_COLUMNS = {"query": "query", "positive": "pos", "negative": "neg", "scores": "neg_scores"}
_DETECT_ROWS = 100  # JSONL keys may differ per line: detect columns from the first rows' union


def _texts(row: dict, cols: str | list[str], path: str, line: int, *, required: bool) -> list[str]:
    out: list[str] = []
    for col in [cols] if isinstance(cols, str) else cols:
        value = row.get(col)
        if value is None:
            if required and isinstance(cols, str):
                raise DataError("missing field", path, line, col)
            continue
        if isinstance(value, str):
            out.append(check_text(value, path, line, col))
        elif isinstance(value, (list, tuple)):
            out += [check_text(v, path, line, f"{col}[{i}]") for i, v in enumerate(value)]
        else:
            raise DataError(f"expected a string or a list of strings, got {type(value).__name__}", path, line, col)
    if required and not out:
        raise DataError("no positive (empty list)", path, line, cols if isinstance(cols, str) else cols[0])
    return out


def _aligned(row: dict, col: str | None, n: int, what: str, path: str, line: int, check: Any) -> tuple:
    """Ids or scores aligned with `n` texts; absent, null or [] means none."""
    if col is None or row.get(col) is None:
        return ()
    value = row[col]
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        return ()
    if len(values) != n:
        raise DataError(f"has {len(values)} values but there are {n} {what}", path, line, col)
    return tuple(check(v, path, line, f"{col}[{i}]") for i, v in enumerate(values))


def row_to_example(row: dict, mapping: dict, path: str, line: int) -> Example:
    """Build one Example from a row using a role -> column mapping."""
    qcol = mapping["query"]
    if row.get(qcol) is None:
        raise DataError("missing field", path, line, qcol)
    query = check_text(row[qcol], path, line, qcol)
    positives = _texts(row, mapping["positive"], path, line, required=True)
    negatives = _texts(row, mapping.get("negative", []), path, line, required=False)
    query_id = None
    if row.get(mapping.get("query_id")) is not None:
        query_id = check_id(row[mapping["query_id"]], path, line, mapping["query_id"])
    positive_ids = _aligned(row, mapping.get("positive_id"), len(positives), "positives", path, line, check_id)
    negative_ids = _aligned(row, mapping.get("negative_id"), len(negatives), "negatives", path, line, check_id)
    scores = _aligned(row, mapping.get("scores"), len(negatives), "negatives", path, line, check_score)
    for ids, col in ((positive_ids, mapping.get("positive_id")), (negative_ids, mapping.get("negative_id"))):
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise DataError(f"duplicate id '{dup}'", path, line, col)
    return Example(query, tuple(positives), tuple(negatives), query_id, positive_ids, negative_ids, scores)


def _table_examples(path: str, fmt: str, split: str, columns: dict | None, report: LoadReport) -> list[Example]:
    rows = iter_rows(path, fmt, split, report)
    if fmt == "flag" and not columns:
        columns = FLAG_COLUMNS
    buffered: list[tuple[int, dict]] = []
    for item in rows:
        buffered.append(item)
        if len(buffered) >= _DETECT_ROWS:
            break
    if fmt == "parquet":
        names = parquet_columns(Path(path))[0]
    else:
        names = list(dict.fromkeys(k for _, row in buffered for k in row))
    if not names:
        raise DataError(f"no rows found ({report.n_skipped} skipped: {dict(report.skipped)})"
                        if report.n_skipped else "no rows found (empty file)", path)
    mapping = resolve_columns(names, columns, EXAMPLE_ROLES, ("query", "positive"), path)
    report.columns = dict(mapping)
    used = {c for col in mapping.values() for c in ([col] if isinstance(col, str) else col)}
    examples: list[Example] = []
    first_line: dict[str, tuple[int, str]] = {}  # query_id -> (line, query)
    optional = [c for role in ("negative", "query_id", "positive_id", "negative_id", "scores")
                for c in ([mapping[role]] if isinstance(mapping.get(role), str) else mapping.get(role, []))]
    for line, row in _chain(buffered, rows):
        for key in row.keys() - used:
            report.note(f"ignored column '{key}'")
        if fmt in ("csv", "tsv"):  # a delimited file cannot say null: an empty optional cell means none
            for col in optional:
                if row.get(col) == "":
                    row[col] = None
                    report.note(f"empty optional cell '{col}' (read as none)")
        try:
            ex = row_to_example(row, mapping, path, line)
            if ex.query_id is not None:
                seen = first_line.setdefault(ex.query_id, (line, ex.query))
                if seen[1] != ex.query:
                    raise DataError(f"duplicate id '{ex.query_id}' with a different query (first on line "
                                    f"{seen[0]})", path, line, mapping["query_id"])
                if seen[0] != line:
                    report.note("rows repeating a query_id (kept: one example per row)")
        except DataError as exc:
            handle(exc, report)
            continue
        examples.append(ex)
    return examples


def _chain(first: list, rest: Any) -> Any:
    yield from first
    yield from rest


def examples_from_retrieval_set(rset: RetrievalSet, report: LoadReport | None = None) -> list[Example]:
    """One Example per query with all judged-relevant documents (grade > 0) as positives, ids kept.
    Queries whose judgements are all grade <= 0 are counted in `report.notes`."""
    examples = []
    for qid, judged in rset.qrels.items():
        pos_ids = tuple(d for d, g in judged.items() if g > 0)
        if not pos_ids:
            if report is not None:
                report.note("queries without a positive judgement (grade > 0)")
            continue
        examples.append(Example(rset.queries[qid], tuple(rset.corpus[d].full_text for d in pos_ids),
                                query_id=qid, positive_ids=pos_ids))
    return examples


def load_examples(path: str | Path, *, format: str = "auto", columns: dict | None = None, split: str = "train",
                  on_error: str = "raise") -> tuple[list[Example], LoadReport]:
    """Load training examples from JSONL, CSV, TSV, Parquet, an HF dataset (folder or hub id),
    FlagEmbedding JSONL (`query`, `pos`, `neg`), a BEIR folder (qrels of `split`) or a text file
    (`format="text"`: each line is its own positive, SimCSE style).

    `columns` maps roles (query, positive, negative, query_id, positive_id, negative_id, scores) to
    column names; unmapped roles are auto-detected and logged. Bad rows raise a DataError naming
    file, line and field, or with `on_error="skip"` are counted in the returned report.
    """
    if on_error not in ("raise", "skip"):
        raise DataError(f"on_error must be 'raise' or 'skip', got {on_error!r}", str(path))
    fmt = detect_format(path) if format == "auto" else format.lower()
    if fmt not in FORMATS:
        raise DataError(f"unknown format {format!r}; expected auto or one of {', '.join(FORMATS)}", str(path))
    report = LoadReport(str(path), fmt, on_error)
    if fmt == "beir":
        rset = load_beir(path, split, on_unknown=on_error, report=report)
        examples = examples_from_retrieval_set(rset, report)
    elif fmt == "text":
        texts, _ = load_texts_with_report(path, on_error=on_error, report=report)
        examples = [Example(t, (t,)) for t in texts]
    elif fmt in ("stsb", "sick"):
        raise DataError(f"{fmt} holds scored pairs, not training examples: use load_scored_pairs "
                        "(a cosent recipe)", str(path))
    else:
        examples = _table_examples(str(path), fmt, split, columns, report)
    if not examples:
        raise DataError(f"no examples loaded ({report.n_skipped} rows skipped: {dict(report.skipped)})", str(path))
    report.kept = len(examples)
    report.provenance = _read_provenance(Path(path), fmt)
    report.log()
    return examples, report


def _read_provenance(path: Path, fmt: str) -> dict | None:
    """Provenance written by `write_examples`: a JSON sidecar, or Parquet key/value metadata."""
    try:
        if fmt == "parquet":
            raw = parquet_columns(path)[1].get(b"textcl.provenance")
            return json.loads(raw) if raw else None
        sidecar = Path(str(path) + ".provenance.json")
        return json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else None
    except (ValueError, OSError) as exc:  # provenance is informative only; say why it is missing
        log.warning("%s: unreadable provenance (%s)", path, exc)
        return None


def load_texts(path: str | Path, *, column: str = "text", on_error: str = "raise") -> list[str]:
    """Raw texts: one per line (`.txt` or any non-JSON file), or the `column` field of JSONL/Parquet.
    Empty lines are not texts: they are counted and logged (see `load_texts_with_report`)."""
    return load_texts_with_report(path, column=column, on_error=on_error)[0]


def load_texts_with_report(path: str | Path, *, column: str = "text", on_error: str = "raise",
                           report: LoadReport | None = None) -> tuple[list[str], LoadReport]:
    """Like `load_texts`, also returning the `LoadReport` (empty lines in `notes`, bad rows skipped)."""
    if on_error not in ("raise", "skip"):
        raise DataError(f"on_error must be 'raise' or 'skip', got {on_error!r}", str(path))
    report = report or LoadReport(str(path), "text", on_error)
    p = Path(path)
    name = p.name.lower().removesuffix(".gz")
    fmt = "jsonl" if name.endswith((".jsonl", ".json", ".ndjson")) else \
        "parquet" if name.endswith((".parquet", ".pq")) else "text"
    texts: list[str] = []
    if fmt in ("jsonl", "parquet"):
        for line, row in iter_rows(p, fmt, "train", report):
            try:
                texts.append(check_text(row.get(column), str(p), line, column) if column in row
                             else _missing(str(p), line, column))
            except DataError as exc:
                handle(exc, report)
    else:
        for line, text in iter_lines(p, report):
            if not text.strip():
                report.note("empty line")
                continue
            try:
                texts.append(check_text(text, str(p), line, "text"))
            except DataError as exc:
                handle(exc, report)
    report.kept = len(texts)
    if not texts:
        raise DataError(f"no texts found ({report.notes.get('empty line', 0)} empty lines)", str(p))
    report.log()
    return texts, report


def _missing(path: str, line: int, column: str) -> str:
    raise DataError("missing field", path, line, column)
