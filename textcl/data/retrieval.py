"""The one corpus reader and the one "is this a retrieval set" rule, used by eval, mining, check and index.

A retrieval set is a BEIR folder (graded qrels) or a pairs file (query, positive[, ids]): there every
positive is relevant for its query, and the corpus is the union of the positives and an optional
extra corpus.
"""

from __future__ import annotations

import logging
from pathlib import Path

from textcl.data.beir import Quirks, find_file, is_beir_folder, load_beir, load_beir_corpus
from textcl.data.examples import load_examples
from textcl.data.source import iter_lines
from textcl.data.tables import detect_format
from textcl.errors import DataError
from textcl.types import Document, Example, RetrievalSet, normalize_text

log = logging.getLogger(__name__)

PAIRS_FORMATS = ("jsonl", "csv", "tsv", "parquet", "flag")
NOT_A_SET = ("not a retrieval set: expected a BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) or a "
             "pairs file with query and positive columns (.jsonl, .csv, .tsv, .parquet)")


def load_corpus(path: str | Path) -> dict[str, Document]:
    """The corpus reader: a BEIR folder (its corpus.jsonl[.gz]), a corpus JSONL (`_id` or `id`, title,
    text) or a text file (one document per line, the line number as id).

    A repeated id keeps the later document, with one warning per file naming it, as BEIR's loader (which
    pytrec_eval and MTEB evaluate through) does."""
    p = Path(path)
    if p.is_dir():
        found = find_file(p, "corpus.jsonl")
        if found is None:
            raise DataError("folder has no corpus.jsonl (expected a BEIR folder)", str(path))
        p = found
    if p.name.endswith((".jsonl", ".jsonl.gz")):
        quirks = Quirks()
        corpus = load_beir_corpus(p, quirks=quirks, id_keys=("_id", "id"))
        quirks.log(p, strict_hint=False)
        return corpus
    corpus = {str(lineno): Document(title="", text=line.strip()) for lineno, line in iter_lines(p) if line.strip()}
    if not corpus:
        raise DataError("empty corpus", str(p))
    return corpus


def is_pairs_file(path: str | Path) -> bool:
    p = Path(path)
    return p.is_file() and detect_format(p) in PAIRS_FORMATS


def load_retrieval_set(path: str | Path, split: str = "test", *, on_unknown: str = "warn",
                       extra_corpus: str | Path | None = None, columns: dict | None = None) -> RetrievalSet:
    """A BEIR folder (qrels of `split`), or a pairs file made a set by `retrieval_set_from_pairs`."""
    p = Path(path)
    if is_beir_folder(p):
        return load_beir(p, split, on_unknown=on_unknown)  # names the file a BEIR folder lacks
    if not p.exists():
        raise DataError("retrieval set not found", str(p))
    if not is_pairs_file(p):
        raise DataError(NOT_A_SET, str(p))
    examples, _ = load_examples(p, columns=columns)
    extra = load_corpus(extra_corpus) if extra_corpus else {}
    return retrieval_set_from_pairs(examples, p.name.split(".")[0], extra, source=str(p))


def retrieval_set_from_pairs(examples: list[Example], name: str, extra: dict[str, Document] | None = None, *,
                             source: str = "") -> RetrievalSet:
    """Every positive is relevant (grade 1) for its query; rows with the same query (id or text) merge.
    Ids come from the file where it has them, else from the text (`q1`, `p1`, ...); extra documents
    whose text equals a positive's are left out, so a relevant text is never also a distractor."""
    corpus: dict[str, Document] = {}
    doc_of_text: dict[str, str] = {}
    query_of_key: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for ex in examples:
        key = ex.query_id or normalize_text(ex.query)
        qid = query_of_key.setdefault(key, ex.query_id or f"q{len(query_of_key) + 1}")
        queries.setdefault(qid, ex.query)
        for i, text in enumerate(ex.positives):
            given = ex.positive_ids[i] if i < len(ex.positive_ids) else None
            did = given or doc_of_text.get(normalize_text(text)) or f"p{len(corpus) + 1}"
            if did in corpus and normalize_text(corpus[did].text) != normalize_text(text):
                raise DataError(f"positive id '{did}' names two different texts", source)
            corpus[did] = Document(title="", text=text)
            doc_of_text.setdefault(normalize_text(text), did)
            qrels.setdefault(qid, {})[did] = 1
    skipped = 0
    for did, doc in (extra or {}).items():
        if normalize_text(doc.full_text) in doc_of_text:
            skipped += 1
            continue
        if did in corpus:
            raise DataError(f"extra corpus id '{did}' is also a positive's id with another text", source)
        corpus[did] = doc
    if skipped:
        log.info("%s: %d extra documents repeat a positive's text and were left out", name, skipped)
    log.info("%s: retrieval set from pairs: %d queries, %d documents (%d positives)", name, len(queries),
             len(corpus), len(doc_of_text))
    return RetrievalSet(name=name, corpus=corpus, queries=queries, qrels=qrels, split="pairs",
                        meta={"path": source, "from_pairs": True, "extra_corpus": len(extra or {}) - skipped})
