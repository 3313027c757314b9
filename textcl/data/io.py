"""Readers and writers for every supported input format, by named roles, never column order.

Errors carry file, line and field (`DataError`). With `on_error="skip"` bad rows are counted in a
`LoadReport` (logged and returned), never dropped silently.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from textcl.errors import DataError
from textcl.types import Document, RetrievalSet, ScoredPair

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What a reader kept and what it skipped (with reasons) for one source."""

    source: str
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # first few skip messages

    def skip(self, error: DataError) -> None:
        reason = str(error).split(": ", 1)[-1]
        self.skipped[reason.split(" (")[0]] += 1
        if len(self.examples) < 5:
            self.examples.append(str(error))

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def log(self) -> None:
        if self.n_skipped:
            log.warning("%s: kept %d rows, skipped %d: %s", self.source, self.kept, self.n_skipped,
                        dict(self.skipped))


def open_text(path: str | Path) -> io.TextIOBase:
    """Open a text file (transparently gunzipped) as strict UTF-8 with universal newlines."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", str(path))
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline=None)


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield (line_number, line) with decoding and gzip errors turned into DataError."""
    lineno = 0
    try:
        with open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):  # noqa: B007
                yield lineno, line.rstrip("\n")
    except UnicodeDecodeError as exc:
        raise DataError(f"invalid UTF-8 ({exc.reason} at byte {exc.start})", str(path), lineno + 1) from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read file ({exc})", str(path), lineno + 1) from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, object) for each non-blank line; malformed JSON is a DataError."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON ({exc.msg} at column {exc.colno})", str(path), lineno) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", str(path), lineno)
        yield lineno, obj


def get_text(obj: dict, key: str, path: str, lineno: int, *, allow_empty: bool = False) -> str:
    """Fetch a required text field, checking presence, type and emptiness."""
    if key not in obj or obj[key] is None:
        raise DataError("missing field", path, lineno, key)
    value = obj[key]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key.endswith("id"):
        value = str(value)
    if not isinstance(value, str):
        raise DataError(f"expected a string, got {type(value).__name__}", path, lineno, key)
    if not allow_empty and not value.strip():
        raise DataError("empty text", path, lineno, key)
    return value


# ---------------------------------------------------------------- BEIR


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.exists():
            return candidate
    return None


def load_beir_corpus(path: Path) -> dict[str, Document]:
    corpus: dict[str, Document] = {}
    for lineno, obj in iter_jsonl(path):
        doc_id = get_text(obj, "_id", str(path), lineno)
        title = obj.get("title") or ""
        if not isinstance(title, str):
            raise DataError(f"expected a string, got {type(title).__name__}", str(path), lineno, "title")
        text = get_text(obj, "text", str(path), lineno, allow_empty=bool(title.strip()))
        if doc_id in corpus:
            raise DataError(f"duplicate id '{doc_id}'", str(path), lineno, "_id")
        corpus[doc_id] = Document(title=title, text=text)
    if not corpus:
        raise DataError("empty corpus", str(path))
    return corpus


def load_beir_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for lineno, obj in iter_jsonl(path):
        qid = get_text(obj, "_id", str(path), lineno)
        if qid in queries:
            raise DataError(f"duplicate id '{qid}'", str(path), lineno, "_id")
        queries[qid] = get_text(obj, "text", str(path), lineno)
    return queries


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV: optional header `query-id corpus-id score`, CRLF tolerated, gzip tolerated."""
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in iter_lines(path):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split("\t")
        if lineno == 1 and parts[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue
        if len(parts) == 4:  # TREC format: qid 0 docid score
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise DataError(f"expected 3 tab-separated fields, got {len(parts)}", str(path), lineno)
        qid, did, score = (p.strip() for p in parts)
        try:
            grade = int(float(score))
        except ValueError:
            raise DataError(f"score is not a number: {score!r}", str(path), lineno, "score") from None
        if did in qrels.setdefault(qid, {}):
            raise DataError(f"duplicate judgement for ({qid}, {did})", str(path), lineno, "corpus-id")
        qrels[qid][did] = grade
    return qrels


def count_qrels_rows(qrels: dict[str, dict[str, int]]) -> int:
    return sum(len(v) for v in qrels.values())


def load_beir(folder: str | Path, split: str = "test", *, on_unknown: str = "raise") -> RetrievalSet:
    """Load a BEIR folder: corpus.jsonl[.gz], queries.jsonl[.gz], qrels/{split}.tsv[.gz].

    Qrels naming unknown query or doc ids raise (`on_unknown="raise"`) or are dropped and counted in
    `meta["skipped_qrels"]` (`on_unknown="skip"`). Only queries that have qrels in the split are kept.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("not a BEIR folder (expected a directory)", str(folder))
    corpus_path, queries_path = _find(folder, "corpus.jsonl"), _find(folder, "queries.jsonl")
    qrels_path = _find(folder / "qrels", f"{split}.tsv")
    for name, p in (("corpus.jsonl", corpus_path), ("queries.jsonl", queries_path),
                    (f"qrels/{split}.tsv", qrels_path)):
        if p is None:
            available = sorted(q.name.split(".")[0] for q in (folder / "qrels").glob("*.tsv*")) \
                if (folder / "qrels").is_dir() else []
            extra = f" (available splits: {', '.join(available)})" if available and "qrels" in name else ""
            raise DataError(f"missing {name}{extra}", str(folder))
    corpus = load_beir_corpus(corpus_path)
    queries = load_beir_queries(queries_path)
    qrels = load_qrels(qrels_path)
    skipped: Counter = Counter()
    for qid in list(qrels):
        if qid not in queries:
            if on_unknown == "raise":
                raise DataError(f"qrels name unknown query id '{qid}'", str(qrels_path), None, "query-id")
            skipped["unknown query id"] += len(qrels.pop(qid))
            continue
        for did in list(qrels[qid]):
            if did not in corpus:
                if on_unknown == "raise":
                    raise DataError(f"qrels name unknown doc id '{did}' (query '{qid}')", str(qrels_path),
                                    None, "corpus-id")
                skipped["unknown doc id"] += 1
                del qrels[qid][did]
        if not qrels[qid]:
            del qrels[qid]
    if skipped:
        log.warning("%s: skipped %d qrels rows: %s", qrels_path, sum(skipped.values()), dict(skipped))
    split_queries = {q: queries[q] for q in qrels}
    return RetrievalSet(name=folder.name, corpus=corpus, queries=split_queries, qrels=qrels, split=split,
                        meta={"path": str(folder), "all_queries": len(queries),
                              "skipped_qrels": dict(skipped)})


# ---------------------------------------------------------------- STS


def load_stsb(path: str | Path, split: str = "test") -> list[ScoredPair]:
    """STS Benchmark 2017 TSV (folder or file): tab split with quoting OFF; 7 or more fields.

    Fields: genre, file, year, id, score, sentence1, sentence2[, source1, source2].
    """
    path = Path(path)
    if path.is_dir():
        path = path / f"sts-{split}.csv"
    pairs = []
    for lineno, line in iter_lines(path):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 7:
            raise DataError(f"expected at least 7 tab-separated fields, got {len(parts)}", str(path), lineno)
        try:
            score = float(parts[4])
        except ValueError:
            raise DataError(f"score is not a number: {parts[4]!r}", str(path), lineno, "score") from None
        s1, s2 = parts[5], parts[6]
        for name, text in (("sentence1", s1), ("sentence2", s2)):
            if not text.strip():
                raise DataError("empty text", str(path), lineno, name)
        pairs.append(ScoredPair(s1, s2, score))
    if not pairs:
        raise DataError("no pairs found", str(path))
    return pairs


def load_sick(path: str | Path, split: str = "test") -> list[ScoredPair]:
    """SICK-style TSV with a header: sentence_A, sentence_B, relatedness_score (SemEval split column
    `SemEval_set` filters TRAIN/TRIAL/TEST when present)."""
    path = Path(path)
    rows = _read_delimited(path, "\t")
    header = rows.fieldnames
    want = {"sentence_A", "sentence_B", "relatedness_score"}
    if not want <= set(header):
        raise DataError(f"missing columns {sorted(want - set(header))} in header", str(path), 1)
    split_name = {"train": "TRAIN", "dev": "TRIAL", "validation": "TRIAL", "test": "TEST"}.get(split, split)
    pairs = []
    for lineno, row in rows:
        if "SemEval_set" in row and row["SemEval_set"] and row["SemEval_set"].upper() != split_name.upper():
            continue
        try:
            score = float(row["relatedness_score"])
        except (TypeError, ValueError):
            raise DataError(f"score is not a number: {row['relatedness_score']!r}", str(path), lineno,
                            "relatedness_score") from None
        for name in ("sentence_A", "sentence_B"):
            if not (row[name] or "").strip():
                raise DataError("empty text", str(path), lineno, name)
        pairs.append(ScoredPair(row["sentence_A"], row["sentence_B"], score))
    return pairs


class _Rows:
    """Rows of a delimited file as (line_number, dict) with the header kept."""

    def __init__(self, path: Path, delimiter: str):
        self.path, self.delimiter = path, delimiter
        lines = [line.rstrip("\r") for _, line in iter_lines(path)]
        if not lines:
            raise DataError("empty file", str(path))
        self.fieldnames = next(csv.reader([lines[0]], delimiter=delimiter))
        self._lines = lines

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        reader = csv.reader(self._lines[1:], delimiter=self.delimiter)
        n = len(self.fieldnames)
        for i, parts in enumerate(reader, start=2):
            if not parts:
                continue
            if len(parts) != n:
                raise DataError(f"expected {n} fields, got {len(parts)}", str(self.path), reader.line_num + 1)
            yield reader.line_num + 1 if reader.line_num else i, dict(zip(self.fieldnames, parts))


def _read_delimited(path: Path, delimiter: str) -> _Rows:
    return _Rows(path, delimiter)
