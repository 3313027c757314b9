"""Retrieval evaluation over BEIR-style sets: encode, search in bounded chunks, trec_eval metrics.

Conventions (all recorded by `retrieval_conventions` and written into the report):
- documents are `title + " " + text` (stripped), queries and documents use their own roles;
- candidates per query = max(k_values) (MTEB's default k_values end at 1000, so 1000 candidates);
- `ignore_identical_ids` drops a document whose id equals the query id; it is an explicit option whose
  default follows MTEB per dataset (`MTEB_IGNORE_IDENTICAL_IDS`). Unlike MTEB, which drops the
  self-match from its top-k (leaving k-1), we fetch k+1 and drop it, so every cut keeps k candidates;
- metrics are trec_eval's (see `textcl.eval.metrics`), averaged over evaluated queries.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from textcl import knn
from textcl.errors import DataError
from textcl.eval.metrics import evaluate_run, mean_metrics
from textcl.types import Encode, RetrievalSet, plan_encoding, similarity_of

log = logging.getLogger(__name__)

DEFAULT_K_VALUES = (1, 3, 5, 10, 100, 1000)

# MTEB `AbsTaskRetrieval.ignore_identical_ids` per English BEIR task (checked in mteb/tasks/Retrieval/eng):
# True where queries are themselves corpus documents (duplicate-question and counter-argument sets).
MTEB_IGNORE_IDENTICAL_IDS: dict[str, bool] = {
    "arguana": True, "quora": True, "quoraretrieval": True, "fiqa": True, "fiqa2018": True,
    "fever": True, "msmarco": True, "nfcorpus": False, "scifact": False, "scidocs": False,
    "hotpotqa": False, "nq": False, "climatefever": False, "dbpedia": False, "dbpediaentity": False,
    "treccovid": False, "touche2020": False, "webistouche2020": False, "cqadupstack": False,
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def default_ignore_identical_ids(dataset: str) -> tuple[bool, str]:
    """(value, where it came from) for a dataset name such as 'nfcorpus' or 'ArguAna'."""
    key = _norm(dataset)
    if key in MTEB_IGNORE_IDENTICAL_IDS:
        return MTEB_IGNORE_IDENTICAL_IDS[key], f"MTEB default for '{dataset}'"
    if key.startswith("cqadupstack"):
        return False, f"MTEB default for '{dataset}' (CQADupStack)"
    return False, f"'{dataset}' is not in the MTEB table: default false"


def check_retrieval_set(rset: RetrievalSet) -> dict[str, int]:
    """Raise on an unusable set; count (and log) judgements that can never be retrieved."""
    if not rset.corpus:
        raise DataError(f"retrieval set '{rset.name}' ({rset.split}) has an empty corpus")
    if not rset.qrels:
        raise DataError(f"retrieval set '{rset.name}' has no qrels for split '{rset.split}'")
    unknown_queries = [q for q in rset.qrels if q not in rset.queries]
    unknown_docs = sum(1 for docs in rset.qrels.values() for d in docs if d not in rset.corpus)
    if len(unknown_queries) == len(rset.qrels):
        raise DataError(f"retrieval set '{rset.name}': no qrels query id is among the queries "
                        f"(e.g. '{unknown_queries[0]}'); wrong split or mismatched files?")
    warnings = {"qrels_unknown_query_ids": len(unknown_queries), "qrels_unknown_doc_ids": unknown_docs}
    if (unknown_queries or unknown_docs) and "qrels_quirks" not in rset.meta:  # load_beir warned already
        # Kept as pytrec_eval keeps them: unknown docs still count as relevant (lower recall), queries
        # without text cannot be run and are left out. Counted so the report shows it.
        log.warning("%s: %d qrels query ids without query text (skipped), %d qrels doc ids not in the "
                    "corpus (counted as relevant, never retrieved)", rset.name, len(unknown_queries),
                    unknown_docs)
    return warnings


def retrieve(encode: Encode, rset: RetrievalSet, k: int, *, ignore_identical_ids: bool, factory: str = "exact",
             query_chunk_size: int = 1024, corpus_chunk_size: int = 65536) -> tuple[dict, int]:
    """Run: {query_id: {doc_id: score}} with k candidates per query, and the number of self-matches dropped."""
    qids = [q for q in rset.qrels if q in rset.queries]
    doc_ids = list(rset.corpus)
    queries, documents = [rset.queries[q] for q in qids], [rset.corpus[d].full_text for d in doc_ids]
    plan_encoding(encode, {"document": documents, "query": queries})
    q_emb = encode(queries, "query")
    d_emb = encode(documents, "document")
    fetch = min(k + (1 if ignore_identical_ids else 0), len(doc_ids))
    scores, idx = knn.search(q_emb, d_emb, fetch, factory=factory, query_chunk_size=query_chunk_size,
                             corpus_chunk_size=corpus_chunk_size, similarity=similarity_of(encode))
    run: dict[str, dict[str, float]] = {}
    dropped = 0
    for row, qid in enumerate(qids):
        docs: dict[str, float] = {}
        for s, i in zip(scores[row].tolist(), idx[row].tolist()):
            if i < 0:
                continue
            if ignore_identical_ids and doc_ids[i] == qid:
                dropped += 1
                continue
            if len(docs) < k:
                docs[doc_ids[i]] = float(s)
        run[qid] = docs
    return run, dropped


def evaluate_retrieval(encode: Encode, rset: RetrievalSet, k_values: Sequence[int] = DEFAULT_K_VALUES,
                       ignore_identical_ids: bool | None = None, factory: str = "exact", *,
                       details: dict | None = None, per_query: dict | None = None) -> dict[str, float]:
    """Metrics `{name}/{metric}@{k}` for metric in ndcg, mrr, recall, map, precision.

    `ignore_identical_ids=None` takes the MTEB default for the set's name. When `details` is a dict,
    the conventions used and counts (queries, warnings) are written into it; when `per_query` is a dict, each
    metric's per-query values: {"{name}/{metric}@{k}": {query_id: value}}.
    """
    k_values = sorted(set(int(k) for k in k_values))
    if not k_values or k_values[0] < 1:
        raise ValueError(f"k_values must be positive integers, got {k_values}")
    source = "explicit"
    if ignore_identical_ids is None:
        ignore_identical_ids, source = default_ignore_identical_ids(rset.name)
    warnings = check_retrieval_set(rset)
    run, dropped = retrieve(encode, rset, max(k_values), ignore_identical_ids=ignore_identical_ids, factory=factory)
    per_query_metrics = evaluate_run(rset.qrels, run, k_values)
    means = mean_metrics(per_query_metrics)
    out = {f"{rset.name}/{key}": value for key, value in means.items()}
    if per_query is not None:
        per_query.update({f"{rset.name}/{key}": {q: m[key] for q, m in per_query_metrics.items()} for key in means})
    if details is not None:
        details.update({
            "dataset": rset.name, "split": rset.split, "k_values": k_values, "candidates": max(k_values),
            "ignore_identical_ids": ignore_identical_ids, "ignore_identical_ids_source": source,
            "identical_ids_dropped": dropped, "factory": factory, "n_corpus": len(rset.corpus),
            "n_queries_evaluated": len(per_query_metrics), "n_queries_with_qrels": len(rset.qrels),
            "document_text": 'title + " " + text', "mean_over": "evaluated queries (pytrec_eval/MTEB)",
            **warnings,
        })
    log.debug("%s (%s): ndcg@10 %s over %d queries", rset.name, rset.split,
             f"{means.get('ndcg@10', float('nan')):.4f}", len(per_query_metrics))
    return out
