"""Low-level file access shared by every reader: decoding, line numbers, JSONL and delimited rows,
text checks, and the `LoadReport` that counts what was kept, skipped and why.

Every failure becomes a `DataError` naming the file, the line and (when known) the field.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import math
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from textcl.errors import DataError

log = logging.getLogger(__name__)

# Documents longer than csv's default 128 KiB field limit are legitimate; the limit is process-wide.
csv.field_size_limit(2**31 - 1)

_SURROGATE = re.compile("[\ud800-\udfff]")
_QUOTED = re.compile(r"'[^']*'")
_INDEX = re.compile(r"\[\d+\]")


@dataclass
class LoadReport:
    """What a reader kept and what it skipped (with reasons) for one source.

    `skipped` counts rows that were NOT loaded (only with on_error="skip"); `notes` counts benign
    events that lost no data (blank lines, ignored columns, rows of another split, repeated queries).
    """

    source: str
    format: str = ""
    on_error: str = "raise"  # "raise": bad rows raise; "skip": they are counted in `skipped`
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # first few skip messages, with file:line
    columns: dict[str, Any] = field(default_factory=dict)  # role -> column(s) used
    provenance: dict | None = None

    def skip(self, error: DataError) -> None:
        """Count one skipped row under a reason without row-specific values (ids, indices)."""
        reason = _QUOTED.sub("'…'", getattr(error, "reason", str(error))).split(" (")[0]
        if error.field:
            reason = f"{_INDEX.sub('', error.field)}: {reason}"
        self.skipped[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(str(error))

    def note(self, what: str, n: int = 1) -> None:
        self.notes[what] += n

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def log(self) -> None:
        if self.n_skipped:
            log.warning("%s: kept %d, skipped %d: %s (first: %s)", self.source, self.kept, self.n_skipped,
                        dict(self.skipped), self.examples[0])
        if self.notes:
            log.info("%s: %s", self.source, dict(self.notes))

    def summary(self) -> str:
        """Human-readable multi-line summary (used by `textcl check`)."""
        lines = [f"source: {self.source}", f"format: {self.format}", f"kept: {self.kept}"]
        if self.columns:
            lines.append("columns: " + ", ".join(f"{k}={v}" for k, v in self.columns.items()))
        lines.append(f"skipped: {self.n_skipped}")
        lines += [f"  {n:>8}  {reason}" for reason, n in self.skipped.most_common()]
        lines += [f"  e.g. {e}" for e in self.examples[:3]]
        if self.notes:
            lines.append("notes:")
            lines += [f"  {n:>8}  {what}" for what, n in self.notes.most_common()]
        if self.provenance:
            lines.append("provenance: " + json.dumps(self.provenance, sort_keys=True))
        return "\n".join(lines)


def handle(error: DataError, report: LoadReport | None) -> None:
    """Raise `error`, or count it in `report` when the caller asked to skip bad rows."""
    if report is None or report.on_error != "skip":
        raise error
    report.skip(error)


# ---------------------------------------------------------------- bytes and lines


def open_binary(path: str | Path) -> IO[bytes]:
    """Open a file for reading bytes, transparently gunzipping `*.gz`."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", str(path))
    if path.is_dir():
        raise DataError("expected a file, got a directory", str(path))
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115


def decode(raw: bytes, path: str, lineno: int) -> str:
    """Strict UTF-8 decode of one line; drops the newline (LF or CRLF) and a leading BOM."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"invalid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
                        path, lineno) from None
    if lineno == 1 and text.startswith("\ufeff"):
        text = text[1:]
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    return text


def iter_raw_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Yield (line_number, raw bytes); unreadable or truncated files become a DataError."""
    lineno = 0
    try:
        with open_binary(path) as fh:
            for lineno, raw in enumerate(fh, start=1):  # noqa: B007
                yield lineno, raw
    except EOFError:
        raise DataError("truncated gzip file (compressed stream ended early)", str(path), lineno + 1) from None
    except (OSError, zlib.error) as exc:
        raise DataError(f"cannot read file ({exc})", str(path), lineno + 1) from None


def iter_lines(path: str | Path, report: LoadReport | None = None) -> Iterator[tuple[int, str]]:
    """Yield (line_number, text) without the newline. Invalid UTF-8 raises, or is skipped and
    counted when `report.on_error == "skip"`."""
    for lineno, raw in iter_raw_lines(path):
        try:
            text = raw.decode("utf-8")  # fast path; `decode` explains failures
        except UnicodeDecodeError:
            try:
                decode(raw, str(path), lineno)
            except DataError as exc:
                handle(exc, report)
            continue
        if lineno == 1 and text.startswith("\ufeff"):
            text = text[1:]
        if text.endswith("\n"):
            text = text[:-2] if text.endswith("\r\n") else text[:-1]
        yield lineno, text


def iter_jsonl(path: str | Path, report: LoadReport | None = None) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, object) per non-blank line; malformed lines raise (or are skipped and
    counted when `report.on_error == "skip"`). Blank lines are counted in `report.notes`."""
    for lineno, line in iter_lines(path, report):
        if not line.strip():
            if report is not None:
                report.note("blank line")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            handle(DataError(f"malformed JSON ({exc.msg} at column {exc.colno})", str(path), lineno), report)
            continue
        except (ValueError, RecursionError) as exc:  # e.g. integer too long, nesting too deep
            handle(DataError(f"malformed JSON ({type(exc).__name__}: {str(exc)[:80]})", str(path), lineno),
                   report)
            continue
        if not isinstance(obj, dict):
            handle(DataError(f"expected a JSON object, got {_json_type(obj)}", str(path), lineno), report)
            continue
        yield lineno, obj


def _json_type(value: Any) -> str:
    names = {list: "array", dict: "object", str: "string", bool: "boolean", type(None): "null", int: "number",
             float: "number"}
    return names.get(type(value), type(value).__name__)


class DelimitedRows:
    """Rows of a CSV (quoted) or TSV (tab split, quoting OFF) file with a header.

    Iterating yields (line_number, {column: value}); the line is where the record starts.
    """

    def __init__(self, path: str | Path, delimiter: str, report: LoadReport | None = None):
        self.path, self.delimiter, self.report = str(path), delimiter, report
        self._lines = iter_lines(path, report)
        self._last = 0  # last physical line consumed
        self.fieldnames = self._read_header()

    def _physical(self) -> Iterator[str]:
        for lineno, line in self._lines:
            self._last = lineno
            yield line + "\n"

    def _records(self) -> Iterator[tuple[int, list[str]]]:
        if self.delimiter == "\t":  # quoting OFF: a '"' in a TSV field is just a character
            for line in self._physical():
                yield self._last, line[:-1].split("\t") if line[:-1] else []
            return
        reader = csv.reader(self._physical(), delimiter=self.delimiter, strict=True)
        while True:
            start = self._last + 1
            try:
                parts = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                handle(DataError(f"malformed CSV ({exc})", self.path, start), self.report)
                continue
            yield start, parts

    def _read_header(self) -> list[str]:
        self._iter = self._records()
        for _lineno, parts in self._iter:
            if parts:
                break
            if self.report is not None:
                self.report.note("blank line")
        else:
            raise DataError("empty file (no header line)", self.path, 1)
        names = [p.strip() for p in parts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"duplicate column {dupes[0]!r} in header", self.path, self._last)
        return names

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        n = len(self.fieldnames)
        for lineno, parts in self._iter:
            if not parts or parts == [""]:
                if self.report is not None:
                    self.report.note("blank line")
                continue
            if len(parts) != n:
                handle(DataError(f"wrong column count: expected {n} fields ({', '.join(self.fieldnames)}), "
                                 f"got {len(parts)}", self.path, lineno), self.report)
                continue
            yield lineno, dict(zip(self.fieldnames, parts))


# ---------------------------------------------------------------- values


def check_text(value: Any, path: str, line: int | None, name: str, *, allow_empty: bool = False) -> str:
    """A text value must be a non-empty string of valid Unicode."""
    if not isinstance(value, str):
        raise DataError(f"expected a string, got {_json_type(value) if value is not None else 'null'}",
                        path, line, name)
    if not allow_empty and not value.strip():
        raise DataError("empty text", path, line, name)
    if not value.isascii() and _SURROGATE.search(value):  # isascii is O(1): skip the scan for ASCII
        raise DataError("invalid Unicode (lone surrogate)", path, line, name)
    return value


def check_id(value: Any, path: str, line: int | None, name: str) -> str:
    """Ids may be strings or integers; they are kept as strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return check_text(value, path, line, name)


def check_score(value: Any, path: str, line: int | None, name: str) -> float:
    """A finite number (numeric strings accepted, as CSV/TSV cells are strings)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(f"score is not a number: {value!r:.40}", path, line, name)
    try:
        score = float(value)
    except (ValueError, OverflowError):
        raise DataError(f"score is not a number: {value!r:.40}", path, line, name) from None
    if not math.isfinite(score):
        raise DataError(f"score is not finite: {value!r:.40}", path, line, name)
    return score


def get_text(obj: dict, key: str, path: str, lineno: int, *, allow_empty: bool = False) -> str:
    """Fetch a required text field, checking presence, type and emptiness (ids may be numbers)."""
    if key not in obj or obj[key] is None:
        raise DataError("missing field", path, lineno, key)
    if key.endswith("id"):
        return check_id(obj[key], path, lineno, key)
    return check_text(obj[key], path, lineno, key, allow_empty=allow_empty)
