"""The mining plan: rows, unique queries, the candidate corpus and every known positive, built from a
BEIR retrieval set or from pair/triplet examples (plus an optional extra corpus).

Rows for a retrieval set are by default one per query carrying ALL its qrels positives (grade > 0):
the trainer samples one positive per query per step, so each query weighs the same (NFCorpus: 1 to
1363 positives per query) and no batch holds two copies of a query whose positives would be each
other's in-batch false negatives. `rows="pair"` gives one row per (query, positive) instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from textcl.errors import DataError
from textcl.exclusion import ExclusionIndex
from textcl.types import Example, RetrievalSet, normalize_text


@dataclass
class MiningPlan:
    """Everything selection needs, by index: row -> query, row -> positives, query -> known positives."""

    queries: list[str]
    corpus: list[str]
    corpus_ids: list[str] | None  # None when the corpus has no (complete) ids
    rows: list[Example]
    row_query: np.ndarray  # [n_rows] int64
    row_positives: list[list[int]]  # corpus indices of each row's own positives
    query_positives: list[frozenset[int]]  # all known positives of each query (by corpus index)
    query_positive_texts: list[frozenset[str]]  # ... and their normalised texts
    queries_without_positives: int = 0
    _norm: dict[int, str] = field(default_factory=dict, repr=False)
    _index: ExclusionIndex | None = field(default=None, repr=False)

    def text_of(self, idx: int) -> str:
        """Normalised text of corpus item `idx` (memoised: each item is normalised once)."""
        text = self._norm.get(idx)
        if text is None:
            text = self._norm[idx] = normalize_text(self.corpus[idx])
        return text

    def exclusion_index(self) -> ExclusionIndex:
        """The corpus by normalised text (built once): what each query's known positives exclude. Positives
        are rows already, so the index needs no ids."""
        if self._index is None:
            self._index = ExclusionIndex()
            for row in range(len(self.corpus)):
                self._index.add(row, texts=(self.text_of(row),))
        return self._index

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pair_row, pair_query, pair_corpus): one entry per (row, own positive)."""
        pair_row = np.array([r for r, pos in enumerate(self.row_positives) for _ in pos], dtype=np.int64)
        pair_corpus = np.array([c for pos in self.row_positives for c in pos], dtype=np.int64)
        return pair_row, self.row_query[pair_row], pair_corpus

    def content_hash(self) -> str:
        """sha256 over queries, corpus (ids and texts) and row structure: the data's identity."""
        h = hashlib.sha256()
        for part in (self.queries, self.corpus, self.corpus_ids or []):
            for text in part:
                h.update(text.encode("utf-8") + b"\x00")
            h.update(b"\x01")
        for r, pos in zip(self.row_query.tolist(), self.row_positives):
            h.update(f"{r}:{','.join(map(str, pos))};".encode())
        return h.hexdigest()


def _finish(plan_rows: list[Example], queries: list[str], corpus: list[str], corpus_ids: list[str] | None,
            row_query: list[int], row_positives: list[list[int]], skipped: int) -> MiningPlan:
    known: list[set[int]] = [set() for _ in queries]
    for q, pos in zip(row_query, row_positives):
        known[q].update(pos)
    plan = MiningPlan(
        queries=queries, corpus=corpus, corpus_ids=corpus_ids, rows=plan_rows,
        row_query=np.asarray(row_query, dtype=np.int64), row_positives=row_positives,
        query_positives=[frozenset(k) for k in known], query_positive_texts=[],
        queries_without_positives=skipped)
    # text_of memoises per corpus item: a document that is a positive of many queries is normalised once
    plan.query_positive_texts = [frozenset(plan.text_of(i) for i in k) for k in known]
    return plan


def plan_from_retrieval(rset: RetrievalSet, extra_corpus: list[str] | None = None,
                        rows: str = "query") -> MiningPlan:
    """One row per query with all its qrels positives (or per pair); the candidate corpus is the BEIR corpus."""
    doc_ids = list(rset.corpus)
    corpus = [rset.corpus[d].full_text for d in doc_ids]
    position = {d: i for i, d in enumerate(doc_ids)}
    corpus_ids: list[str] | None = doc_ids
    if extra_corpus:
        known = set(corpus)
        corpus += [t for t in dict.fromkeys(extra_corpus) if t not in known]
        corpus_ids = None
    if rows not in ("query", "pair"):
        raise ValueError(f"rows must be 'query' or 'pair', got {rows!r}")
    out: list[Example] = []
    queries: list[str] = []
    row_query: list[int] = []
    row_positives: list[list[int]] = []
    skipped = 0
    for qid, text in rset.queries.items():
        pos_ids = [d for d in rset.positives(qid) if d in position]
        if not pos_ids:
            skipped += 1
            continue
        groups = [pos_ids] if rows == "query" else [[d] for d in pos_ids]
        for group in groups:
            row_query.append(len(queries))
            row_positives.append([position[d] for d in group])
            out.append(Example(query=text, positives=tuple(corpus[position[d]] for d in group), query_id=qid,
                               positive_ids=tuple(group)))
        queries.append(text)
    if not out:
        raise DataError(f"no query of split '{rset.split}' has a positive (grade > 0) document",
                        rset.meta.get("path", rset.name))
    return _finish(out, queries, corpus, corpus_ids, row_query, row_positives, skipped)


def plan_from_examples(examples: list[Example], extra_corpus: list[str] | None = None) -> MiningPlan:
    """Rows as given; the corpus is every positive and negative text (deduplicated) plus `extra_corpus`.

    Rows sharing the same query text share their known positives, so one row's positive is never
    mined as another row's negative.
    """
    if not examples:
        raise DataError("no examples to mine negatives for")
    corpus: dict[str, int] = {}
    for ex in examples:
        for text in (*ex.positives, *ex.negatives):
            corpus.setdefault(text, len(corpus))
    for text in extra_corpus or []:
        corpus.setdefault(text, len(corpus))
    query_index: dict[str, int] = {}
    row_query, row_positives = [], []
    for i, ex in enumerate(examples):
        if not ex.positives:
            raise DataError(f"example {i} (query {ex.query[:60]!r}) has no positive")
        row_query.append(query_index.setdefault(ex.query, len(query_index)))
        row_positives.append([corpus[t] for t in ex.positives])
    return _finish(list(examples), list(query_index), list(corpus), None, row_query, row_positives, 0)
