"""A real BEIR set's quirks evaluate as the reference tools do (pytrec_eval over BEIR's loader): qrels
naming docs missing from the corpus are kept (misses), qrels of absent queries are dropped, a repeated
judgement keeps the last grade, header or not, CRLF, numeric-looking ids; strict mode raises."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from textcl.config import EvalConfig
from textcl.data.beir import load_beir
from textcl.errors import DataError
from textcl.eval import evaluate
from textcl.eval.retrieval import retrieve

pytrec_eval = pytest.importorskip("pytrec_eval")

DOCS = {"d1": "cat dog", "d2": "dog tree", 7: "tree river", "007": "river music", "d5": "music book cat"}
QUERIES = {"q1": "cat", "q2": "tree", "10": "river", "q4": "book"}
# (query, doc, grade): a doc missing from the corpus, a query missing from queries.jsonl, an exact
# repeat and a repeat with another grade (the last wins, as in BEIR's loader), numeric-looking ids.
QRELS = [("q1", "d1", 1), ("q1", "dX", 2), ("q1", "d1", 1), ("q2", "7", 1), ("q2", "d2", 1), ("q2", "d2", 2),
         ("10", "007", 1), ("10", "7", 1), ("q9", "d1", 1), ("q4", "d5", 1), ("q4", "gone", 1)]


def quirky_folder(folder: Path, header: bool) -> Path:
    (folder / "qrels").mkdir(parents=True)
    lines = [json.dumps({"_id": k, "title": "", "text": v}) for k, v in DOCS.items()]
    (folder / "corpus.jsonl").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in QUERIES.items()))
    rows = (["query-id\tcorpus-id\tscore"] if header else []) + ["\t".join(map(str, r)) for r in QRELS]
    (folder / "qrels" / "test.tsv").write_bytes(("\r\n".join(rows) + "\r\n").encode())
    return folder


def reference_qrels(folder: Path, header: bool) -> dict:
    """BEIR's GenericDataLoader: csv rows, the last grade of a pair wins; then only queries with text."""
    with open(folder / "qrels" / "test.tsv", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))[1 if header else 0:]
    qrels: dict = {}
    for qid, did, grade in rows:
        qrels.setdefault(qid, {})[did] = int(grade)
    return {q: docs for q, docs in qrels.items() if q in QUERIES}


@pytest.mark.parametrize("header", [True, False])
def test_quirky_beir_set_scores_like_pytrec_eval(tmp_path, keyword_encoder, caplog, header):
    folder = quirky_folder(tmp_path / "quirky", header)
    encode = keyword_encoder(["cat", "dog", "tree", "river", "music", "book"])
    rset = load_beir(folder, "test")
    assert rset.qrels == reference_qrels(folder, header)
    assert rset.qrels["q2"] == {"7": 1, "d2": 2} and "7" in rset.corpus and "007" in rset.corpus
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warning) == 1, warning  # once per file, with counts and examples
    assert ("2 repeated judgements (the last grade kept) (e.g. line" in warning[0]
            and "2 judgements of docs missing from the corpus (kept: relevant, never retrieved) (e.g. 'dX', 'gone')"
            in warning[0] and "1 judgements with an unknown query id (dropped) (e.g. 'q9')" in warning[0])
    ours = evaluate(encode, EvalConfig(retrieval=[str(folder)], k_values=[1, 3, 10]), "test")
    run, _ = retrieve(encode, rset, 10, ignore_identical_ids=False)
    ref = pytrec_eval.RelevanceEvaluator(reference_qrels(folder, header), {"ndcg_cut.10", "recall.3,10"}).evaluate(run)
    for ours_key, ref_key in (("ndcg@10", "ndcg_cut_10"), ("recall@3", "recall_3"), ("recall@10", "recall_10")):
        expected = sum(q[ref_key] for q in ref.values()) / len(ref)
        assert ours[f"quirky/{ours_key}"] == pytest.approx(expected, abs=1e-6), ours_key
    assert ours["quirky/recall@10"] < 1.0  # the missing docs count as misses


def test_strict_mode_raises_with_file_and_line(tmp_path):
    folder = quirky_folder(tmp_path / "quirky", header=True)
    with pytest.raises(DataError, match=r"qrels/test.tsv:3 field 'corpus-id': unknown doc id 'dX' \(not in "
                                        r"corpus.jsonl\)"):
        load_beir(folder, "test", on_unknown="raise")
    with pytest.raises(DataError, match=r"qrels/test.tsv:3 field 'corpus-id': unknown doc id 'dX'"):
        evaluate(lambda t, r="document": None, EvalConfig(retrieval=[str(folder)], strict=True), "test")
    dropped = load_beir(folder, "test", on_unknown="skip")  # training: no text to train on
    assert dropped.meta["skipped_qrels"] == {"unknown doc id": 2, "unknown query id": 1}


def test_repeated_corpus_and_query_ids_keep_the_last_and_warn_once_per_file(tmp_path, caplog):
    folder = tmp_path / "dups"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "old"}\n{"_id": "d1", "text": "new"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n')
    (folder / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    rset = load_beir(folder, "test")
    assert (rset.corpus["d1"].text, rset.queries["q1"]) == ("new", "b")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"{folder / 'corpus.jsonl'}: 1 repeated ids (the last one kept) (e.g. line 2 'd1'); "
                        "--strict (eval.strict: true) makes these errors",
                        f"{folder / 'queries.jsonl'}: 1 repeated ids (the last one kept) (e.g. line 2 'q1'); "
                        "--strict (eval.strict: true) makes these errors"]
    with pytest.raises(DataError, match=r"corpus.jsonl:2 field '_id': duplicate id 'd1'"):
        load_beir(folder, "test", on_unknown="raise")
