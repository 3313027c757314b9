"""BEIR retrieval folders: corpus.jsonl[.gz], queries.jsonl[.gz], qrels/{split}.tsv[.gz] (header, CRLF).

Ids are checked for duplicates and qrels for unknown ids, with the file and line in every error.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from textcl.data.source import LoadReport, check_text, get_text, handle, iter_jsonl, iter_lines
from textcl.errors import DataError
from textcl.types import Document, RetrievalSet

log = logging.getLogger(__name__)


def find_file(folder: Path, name: str) -> Path | None:
    """`folder/name` or its gzipped twin, whichever exists."""
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def is_beir_folder(path: str | Path) -> bool:
    """The one "is this a BEIR folder" rule: a folder holding corpus.jsonl[.gz], queries.jsonl[.gz] or
    qrels/. One holding only some of them still is one, so `load_beir` names the file it lacks."""
    folder = Path(path)
    return folder.is_dir() and (find_file(folder, "corpus.jsonl") is not None
                                or find_file(folder, "queries.jsonl") is not None or (folder / "qrels").is_dir())


class Quirks:
    """Counts and first examples of the quirks a real BEIR file may hold, for one warning per file."""

    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = {}

    def add(self, kind: str, example: str) -> None:
        self.seen.setdefault(kind, []).append(example)

    def log(self, path: Path, *, strict_hint: bool = True) -> None:
        if self.seen:
            parts = [f"{len(v)} {k} (e.g. {', '.join(v[:3])})" for k, v in self.seen.items()]
            hint = "; --strict (eval.strict: true) makes these errors" if strict_hint else ""
            log.warning("%s: %s%s", path, "; ".join(parts), hint)


def load_beir_corpus(path: Path, report: LoadReport | None = None, quirks: Quirks | None = None, *,
                     id_keys: tuple[str, ...] = ("_id",)) -> dict[str, Document]:
    """Documents by id (the first of `id_keys` a row has). A repeated id is an error, or with `quirks`
    (lenient) the last one wins, as in BEIR's loader, and is noted there."""
    corpus: dict[str, Document] = {}
    for lineno, obj in iter_jsonl(path, report):
        try:
            id_key = next((k for k in id_keys if obj.get(k) is not None), id_keys[0])
            doc_id = get_text(obj, id_key, str(path), lineno)
            title = obj.get("title")
            title = "" if title is None else check_text(title, str(path), lineno, "title", allow_empty=True)
            text = get_text(obj, "text", str(path), lineno, allow_empty=bool(title.strip()))
            _repeated_id(doc_id, corpus, str(path), lineno, quirks)
        except DataError as exc:
            handle(exc, report)
            continue
        corpus[doc_id] = Document(title=title, text=text)
    if not corpus:
        raise DataError("empty corpus", str(path))
    return corpus


def load_beir_queries(path: Path, report: LoadReport | None = None, quirks: Quirks | None = None) -> dict[str, str]:
    """Query texts by id; a repeated id as in `load_beir_corpus`."""
    queries: dict[str, str] = {}
    for lineno, obj in iter_jsonl(path, report):
        try:
            qid = get_text(obj, "_id", str(path), lineno)
            text = get_text(obj, "text", str(path), lineno)
            _repeated_id(qid, queries, str(path), lineno, quirks)
            queries[qid] = text
        except DataError as exc:
            handle(exc, report)
    return queries


def _repeated_id(key: str, seen: dict, path: str, lineno: int, quirks: Quirks | None) -> None:
    if key in seen:
        if quirks is None:
            raise DataError(f"duplicate id '{key}'", path, lineno, "_id")
        quirks.add("repeated ids (the last one kept)", f"line {lineno} '{key}'")


def _qrels_row(line: str, path: str, lineno: int) -> tuple[str, str, int] | None:
    parts = line.split("\t")
    if lineno == 1 and parts[0].strip().lower() in ("query-id", "query_id", "qid"):
        return None  # header
    if len(parts) == 4:  # TREC format: qid 0 docid score
        parts = [parts[0], parts[2], parts[3]]
    if len(parts) != 3:
        raise DataError(f"wrong column count: expected 3 tab-separated fields, got {len(parts)}", path, lineno)
    qid, did = parts[0].strip(), parts[1].strip()
    for value, name in ((qid, "query-id"), (did, "corpus-id")):
        if not value:
            raise DataError("empty id", path, lineno, name)
    try:
        return qid, did, int(parts[2])
    except ValueError:
        pass
    try:
        grade = float(parts[2])
    except ValueError:
        raise DataError(f"score is not a number: {parts[2]!r:.40}", path, lineno, "score") from None
    if not grade.is_integer():
        raise DataError(f"score must be an integer grade, got {parts[2]!r:.40}", path, lineno, "score")
    return qid, did, int(grade)


ON_UNKNOWN = ("warn", "skip", "raise")


def load_qrels(path: Path, report: LoadReport | None = None, *, queries: dict | None = None,
               corpus: dict | None = None, on_unknown: str = "warn",
               unknown: Counter | None = None, quirks: dict | None = None) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV: optional header `query-id corpus-id score`, CRLF and gzip tolerated; ids are strings.

    With `queries`/`corpus` given, `on_unknown` decides about judgements naming unknown ids, as the
    reference tools (pytrec_eval over BEIR's loader, MTEB) do with `"warn"` (the default): a doc
    missing from the corpus stays relevant (never retrieved: a miss), a query missing from
    queries.jsonl is dropped (it cannot be run), a repeated judgement keeps the last grade; one warning
    per file gives counts and examples. `"skip"` drops unknown docs too (training has no text for
    them); `"raise"` (strict) makes each an error with file and line. Dropped rows are counted in
    `unknown`, every quirk in `quirks`. Malformed rows raise, or are skipped and counted when `report` is given.
    """
    if on_unknown not in ON_UNKNOWN:
        raise DataError(f"on_unknown must be one of {', '.join(ON_UNKNOWN)}, got {on_unknown!r}", str(path))
    qrels: dict[str, dict[str, int]] = {}
    unknown = Counter() if unknown is None else unknown
    found = Quirks()
    for lineno, line in iter_lines(path, report):
        if not line.strip():
            continue
        try:
            row = _qrels_row(line, str(path), lineno)
            if row is None:
                continue
            qid, did, grade = row
            if did in qrels.get(qid, {}):
                if on_unknown == "raise":
                    raise DataError(f"duplicate judgement for ('{qid}', '{did}')", str(path), lineno, "corpus-id")
                found.add("repeated judgements (the last grade kept)", f"line {lineno} ('{qid}', '{did}')")
            bad = _unknown_id(qid, did, queries, corpus, str(path), lineno)
            if bad is not None:
                if on_unknown == "raise":
                    raise bad
                kind = bad.reason.split(" '")[0]
                if kind == "unknown doc id" and on_unknown == "warn":
                    found.add("judgements of docs missing from the corpus (kept: relevant, never retrieved)",
                               f"'{did}'")
                else:
                    found.add(f"judgements with an {kind} (dropped)", f"'{qid if 'query' in kind else did}'")
                    unknown[kind] += 1
                    if report is not None:
                        report.skip(bad)
                    continue
            qrels.setdefault(qid, {})[did] = grade
        except DataError as exc:
            handle(exc, report)
    found.log(path)
    if quirks is not None:
        quirks.update({kind: len(v) for kind, v in found.seen.items()})
    return qrels


def _unknown_id(qid: str, did: str, queries: dict | None, corpus: dict | None, path: str,
                lineno: int) -> DataError | None:
    if queries is not None and qid not in queries:
        return DataError(f"unknown query id '{qid}' (not in queries.jsonl)", path, lineno, "query-id")
    if corpus is not None and did not in corpus:
        return DataError(f"unknown doc id '{did}' (not in corpus.jsonl)", path, lineno, "corpus-id")
    return None


def count_qrels_rows(qrels: dict[str, dict[str, int]]) -> int:
    return sum(len(v) for v in qrels.values())


def load_beir(folder: str | Path, split: str = "test", *, on_unknown: str = "warn",
              report: LoadReport | None = None) -> RetrievalSet:
    """Load a BEIR folder. Only queries with qrels in `split` are kept (all: `meta["all_queries"]`).

    Qrels naming unknown ids follow `on_unknown` (see `load_qrels`: "warn" evaluates as pytrec_eval
    does, "skip" drops them, "raise" is strict); dropped rows are counted in `meta["skipped_qrels"]`.
    With `report` given, malformed rows are skipped and counted there instead of raising.
    """
    if on_unknown not in ON_UNKNOWN:
        raise DataError(f"on_unknown must be one of {', '.join(ON_UNKNOWN)}, got {on_unknown!r}", str(folder))
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("not a BEIR folder (expected a directory)", str(folder))
    corpus_path, queries_path = find_file(folder, "corpus.jsonl"), find_file(folder, "queries.jsonl")
    qrels_path = find_file(folder / "qrels", f"{split}.tsv")
    for name, p in (("corpus.jsonl", corpus_path), ("queries.jsonl", queries_path),
                    (f"qrels/{split}.tsv", qrels_path)):
        if p is None:
            available = sorted(q.name.split(".")[0] for q in (folder / "qrels").glob("*.tsv*")) \
                if (folder / "qrels").is_dir() else []
            extra = f" (available splits: {', '.join(available)})" if available and "qrels" in name else ""
            raise DataError(f"missing {name}{extra}", str(folder))
    lenient = on_unknown != "raise"
    corpus_quirks, query_quirks = Quirks(), Quirks()
    corpus = load_beir_corpus(corpus_path, report, corpus_quirks if lenient else None)
    queries = load_beir_queries(queries_path, report, query_quirks if lenient else None)
    corpus_quirks.log(corpus_path)
    query_quirks.log(queries_path)
    unknown: Counter = Counter()
    quirks: dict[str, int] = {}
    qrels = load_qrels(qrels_path, report, queries=queries, corpus=corpus, on_unknown=on_unknown,
                       unknown=unknown, quirks=quirks)
    split_queries = {q: queries[q] for q in qrels}
    return RetrievalSet(name=folder.name, corpus=corpus, queries=split_queries, qrels=qrels, split=split,
                        meta={"path": str(folder), "all_queries": len(queries),
                              "skipped_qrels": dict(unknown), "qrels_quirks": quirks})
