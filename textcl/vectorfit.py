"""A query adapter from vector files alone (`textcl adapter fit` / `textcl adapter eval`): query and document
vectors from any model (an API, a vector-database export), training pairs or qrels, dev qrels for selection.
The same adapter, loss, batches and evaluator as `train.tune: adapter`; only the known positives come by id (no
texts here, so no same-text masking).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from textcl.adapter import AdapterFit, AdapterSettings, QueryTargets, fit_adapter
from textcl.adapter_files import AdaptedEncode, adapted, apply_adapter
from textcl.compress import Compressed, compress, rescore
from textcl.data.vectors import Vectors, read_judgements, read_vectors, vector_retrieval_set
from textcl.errors import DataError
from textcl.eval.metrics import evaluate_run, mean_metrics
from textcl.eval.retrieval import DEFAULT_K_VALUES, evaluate_retrieval

log = logging.getLogger(__name__)


@dataclass
class VectorSet:
    """Query and document vectors (unit rows when `normalize`: cosine similarity) and their dataset name."""

    queries: Vectors
    documents: Vectors
    name: str
    normalize: bool
    compressed: Compressed | None = None  # documents as a compressed index holds them (`compress`)
    float_documents: np.ndarray | None = None  # the float vectors, kept for rescoring a compressed search

    def compress(self, spec: str, seed: int = 0) -> Compressed:
        """Replace the document vectors by what a `spec` index returns (textcl.compress): the adapter then trains
        against them and scoring searches them; the float vectors stay in `float_documents`."""
        self.float_documents = self.documents.matrix
        self.compressed = compress(self.documents.matrix, spec, seed)
        self.documents.matrix = self.compressed.dequantised
        log.info("documents compressed as %s: %d bytes (float32: %d, %.1fx smaller)", self.compressed.spec,
                 self.compressed.nbytes, self.float_documents.nbytes, self.float_documents.nbytes / self.compressed.nbytes)
        return self.compressed

    @classmethod
    def read(cls, queries: str, documents: str, name: str, normalize: bool) -> VectorSet:
        q, d = read_vectors(queries), read_vectors(documents)
        if q.dim != d.dim:
            raise DataError(f"query vectors have {q.dim} dimensions, document vectors ({documents}) {d.dim}", queries)
        if normalize:  # cosine: score unit vectors (a no-op for vectors that already are)
            for v in (q, d):
                v.matrix = v.matrix / np.maximum(np.linalg.norm(v.matrix, axis=1, keepdims=True), 1e-12)
        return cls(q, d, name, normalize)


def targets_from_judgements(qrels: dict[str, dict[str, int]], vs: VectorSet) -> tuple[list[str], QueryTargets]:
    """(training query ids, their targets): every grade > 0 document with a vector is a positive and is left out
    of the query's denominator; queries with no such document are left out (logged)."""
    ids, pos_rows, pos_cols = [], [], []
    for qid, docs in qrels.items():
        cols = sorted({vs.documents.row[d] for d, g in docs.items() if g > 0 and d in vs.documents.row})
        if qid not in vs.queries.row or not cols:
            continue
        pos_rows += [len(ids)] * len(cols)
        pos_cols += cols
        ids.append(qid)
    if len(ids) < len(qrels):
        log.warning("%d of %d training queries have no vector or no relevant document with a vector: left out",
                    len(qrels) - len(ids), len(qrels))
    if not ids:
        raise DataError("no training query has a vector and a relevant document with a vector")
    pairs = (torch.tensor(pos_rows, dtype=torch.long), torch.tensor(pos_cols, dtype=torch.long))
    return ids, QueryTargets(n=len(ids), positives=pairs, exclude=pairs)


def score(vs: VectorSet, qrels: dict[str, dict[str, int]], *, split: str = "test",
          k_values: Sequence[int] = DEFAULT_K_VALUES, ignore_identical_ids: bool | None = None,
          adapter: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """textcl's retrieval metrics of the vectors (queries through `adapter` (W, b) when given): the evaluator of
    `textcl eval`, on vectors instead of a model."""
    rset, encode = vector_retrieval_set(vs.queries, vs.documents, qrels, vs.name, split)
    if adapter is not None:
        weight, bias = adapter
        encode = AdaptedEncode(encode, lambda q: apply_adapter(q, weight, bias, vs.normalize))
    return evaluate_retrieval(encode, rset, k_values, ignore_identical_ids)


def score_rescored(vs: VectorSet, qrels: dict[str, dict[str, int]], depth: int, k_values: Sequence[int] = DEFAULT_K_VALUES,
                   adapter: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """Metrics when each query's top-`depth` from the compressed index is re-ranked with the float document
    vectors (`VectorSet.float_documents`): the compressed index finds candidates, the float vectors order them."""
    if vs.compressed is None or vs.float_documents is None:
        raise DataError("rescoring needs compressed documents with their float vectors kept (--compression)")
    qids = [q for q in qrels if q in vs.queries.row]
    q = vs.queries.matrix[[vs.queries.row[x] for x in qids]]
    if adapter is not None:
        q = apply_adapter(q, adapter[0], adapter[1], vs.normalize)
    _, rows = vs.compressed.search(q, max(depth, max(k_values)))
    scores, rows = rescore(q, rows, vs.float_documents)
    run = {qid: {vs.documents.ids[r]: float(s) for s, r in zip(srow, rrow) if r >= 0}
           for qid, srow, rrow in zip(qids, scores, rows)}
    means = mean_metrics(evaluate_run(qrels, run, sorted(set(k_values))))
    return {f"{vs.name}/{key}": value for key, value in means.items()}


def fit_vectors(vs: VectorSet, train: dict[str, dict[str, int]], dev: dict[str, dict[str, int]] | None,
                settings: AdapterSettings, *, k_values: Sequence[int] = DEFAULT_K_VALUES,
                ignore_identical_ids: bool | None = None, metric: str | None = None,
                labelled_only: bool = False) -> AdapterFit:
    """Train an adapter on the training judgements, evaluated (and selected) on `dev` when given;
    `labelled_only`: against the documents a training judgement names only (as `train.corpus_scope: labelled`)."""
    ids, targets = targets_from_judgements(train, vs)
    queries = torch.from_numpy(vs.queries.matrix[[vs.queries.row[q] for q in ids]])
    documents = torch.from_numpy(vs.documents.matrix)
    if labelled_only:
        cols = torch.unique(targets.positives[1])
        remap = torch.full((len(documents),), -1, dtype=torch.long)
        remap[cols] = torch.arange(len(cols))
        targets = QueryTargets(n=targets.n, positives=(targets.positives[0], remap[targets.positives[1]]),
                               exclude=(targets.exclude[0], remap[targets.exclude[1]]))
        log.info("corpus scope labelled: training against the %d of %d documents a training judgement names",
                 len(cols), len(documents))
        documents = documents[cols]
    evaluate = None
    if dev:
        rset, lookup = vector_retrieval_set(vs.queries, vs.documents, dev, vs.name, "dev")

        def evaluate(adapter: torch.nn.Module) -> dict[str, float]:
            return evaluate_retrieval(adapted(lookup, adapter), rset, k_values, ignore_identical_ids)
    log.info("adapter from vectors: %d training queries, %d documents of dim %d%s", len(ids),
             len(vs.documents.ids), vs.documents.dim, f", {len(dev)} dev queries" if dev else ", no dev set")
    return fit_adapter(queries, documents, targets, settings, evaluate, metric or (f"{vs.name}/ndcg@10" if dev else None))


def read_qrels(path: str, vs: VectorSet, *, training: bool) -> dict[str, dict[str, int]]:
    """Judgements for training (unknown ids dropped: nothing to train on) or evaluation (as pytrec_eval: a
    document without a vector stays relevant and counts as a miss)."""
    return read_judgements(path, vs.queries, vs.documents, on_unknown="skip" if training else "warn")
