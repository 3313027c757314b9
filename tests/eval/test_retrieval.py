"""Retrieval evaluation on hand-checkable data (keyword encoder), bad input, and `evaluate` over the
configured sets with its results file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from textcl.config import EvalConfig
from textcl.errors import ConfigError, DataError
from textcl.eval import dataset_name, evaluate, evaluate_sets
from textcl.eval.results import build_results, format_results, write_results
from textcl.eval.retrieval import default_ignore_identical_ids, evaluate_retrieval
from textcl.types import Document, RetrievalSet

KEYWORDS = ["cat", "dog", "car", "tree", "river"]


def write_beir(folder: Path, corpus: dict, queries: dict, qrels: list[tuple], split: str = "test") -> Path:
    folder.mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": t, "text": x}) + "\n"
                                                 for k, (t, x) in corpus.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n"
                                                  for k, v in queries.items()))
    (folder / "qrels").mkdir()
    (folder / "qrels" / f"{split}.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels))
    return folder


def toy_set(name: str = "toy") -> RetrievalSet:
    corpus = {"d1": Document("", "cat cat"), "d2": Document("dog", "dog"), "d3": Document("car", ""),
              "d4": Document("", "tree river"), "q2": Document("", "dog car")}
    queries = {"q1": "cat", "q2": "dog car", "q3": "river"}
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 2, "d3": 1}, "q3": {"d4": 1}}
    return RetrievalSet(name, corpus, queries, qrels)


def test_retrieval_hand_checked(keyword_encoder):
    enc = keyword_encoder(KEYWORDS)
    details: dict = {}
    m = evaluate_retrieval(enc, toy_set(), [1, 3], ignore_identical_ids=False, details=details)
    # q1 -> d1 first; q3 -> d4 first; q2 -> its own id "q2" ("dog car") is the exact match, ranked first.
    assert m["toy/mrr@1"] == pytest.approx(2 / 3)
    assert details["identical_ids_dropped"] == 0 and details["n_queries_evaluated"] == 3
    m2 = evaluate_retrieval(enc, toy_set(), [1, 3], ignore_identical_ids=True, details=details)
    assert m2["toy/mrr@1"] == pytest.approx(1.0)
    assert details["identical_ids_dropped"] == 1 and details["ignore_identical_ids_source"] == "explicit"
    assert m2["toy/recall@3"] == pytest.approx(1.0)


@pytest.mark.parametrize("name, ignore", [("ArguAna", True), ("quora", True), ("FiQA2018", True),
                                          ("nfcorpus", False), ("scifact", False)])
def test_identical_id_default_is_mteb_s_for_the_dataset(name, ignore):
    assert default_ignore_identical_ids(name)[0] is ignore


def test_identical_ids_are_kept_for_a_set_mteb_does_not_list():
    value, source = default_ignore_identical_ids("my-private-set")
    assert value is False and "not in the MTEB table" in source


# ---------------------------------------------------------------- bad input


def test_empty_corpus_is_an_error(keyword_encoder):
    rset = RetrievalSet("empty", {}, {"q": "cat"}, {"q": {"d": 1}})
    with pytest.raises(DataError, match="empty corpus"):
        evaluate_retrieval(keyword_encoder(KEYWORDS), rset, [10])


def test_qrels_for_unknown_docs_are_counted(keyword_encoder, caplog):
    rset = toy_set()
    rset.qrels["q1"]["ghost"] = 1
    details: dict = {}
    m = evaluate_retrieval(keyword_encoder(KEYWORDS), rset, [3], ignore_identical_ids=True, details=details)
    assert details["qrels_unknown_doc_ids"] == 1
    assert "not in the corpus" in caplog.text
    assert m["toy/recall@3"] == pytest.approx((0.5 + 1 + 1) / 3)  # ghost stays relevant, as in pytrec_eval


def test_qrels_for_unknown_docs_in_beir_folder(tmp_path, keyword_encoder):
    folder = write_beir(tmp_path / "toy", {"d1": ("", "cat")}, {"q1": "cat"}, [("q1", "d1", 1), ("q1", "zz", 1)])
    cfg = EvalConfig(retrieval=[str(folder)], k_values=[1])
    assert evaluate(keyword_encoder(KEYWORDS), cfg, "test")["toy/recall@1"] == 0.5  # zz: relevant, never found
    with pytest.raises(DataError, match="unknown doc id 'zz'"):
        evaluate(keyword_encoder(KEYWORDS), dataclasses.replace(cfg, strict=True), "test")


def test_mismatched_split_names_available_splits(tmp_path, keyword_encoder, shared_data):
    folder = write_beir(tmp_path / "toy", {"d1": ("", "cat")}, {"q1": "cat"}, [("q1", "d1", 1)], split="dev")
    with pytest.raises(DataError, match=r"missing qrels/test.tsv \(available splits: dev\)"):
        evaluate(keyword_encoder(KEYWORDS), EvalConfig(retrieval=[str(folder)]), "test")
    with pytest.raises(DataError, match=r"sts-validation.csv"):
        evaluate(keyword_encoder(KEYWORDS), EvalConfig(sts=[str(shared_data / "stsbenchmark")]), "validation")


def test_qrels_queries_all_unknown_is_an_error(keyword_encoder):
    rset = RetrievalSet("x", {"d": Document("", "cat")}, {"a": "cat"}, {"b": {"d": 1}})
    with pytest.raises(DataError, match="wrong split or mismatched files"):
        evaluate_retrieval(keyword_encoder(KEYWORDS), rset, [1])


# ---------------------------------------------------------------- evaluate + results file


def test_evaluate_config_and_results(tmp_path, keyword_encoder):
    folder = write_beir(tmp_path / "arguana", {"d1": ("", "cat"), "q1": ("", "cat"), "d2": ("", "dog")},
                        {"q1": "cat", "q2": "dog"}, [("q1", "d1", 1), ("q2", "d2", 1)])
    sick = tmp_path / "sick.tsv"
    sick.write_text("pair_ID\tsentence_A\tsentence_B\trelatedness_score\tSemEval_set\n"
                    "1\tcat\tcat\t5.0\tTEST\n2\tcat\tdog\t1.0\tTEST\n3\tcar\tcar dog\t3.5\tTEST\n"
                    "4\tcat\tcat\t1.0\tTRAIN\n")
    cfg = EvalConfig(sts=[str(sick)], retrieval=[str(folder)], k_values=[1, 10])
    enc = keyword_encoder(KEYWORDS)
    flat = evaluate(enc, cfg, "test")
    assert flat["arguana/ndcg@10"] == pytest.approx(1.0)  # ArguAna default drops the self-match q1
    assert "sick/spearman_cosine" in flat
    results = evaluate_sets(enc, cfg, "test")
    report = build_results(results, {"name_or_path": "kw", "fingerprint": "abc", "precision": "fp32"})
    rec = next(r for r in report["results"] if r["key"] == "arguana/ndcg@10")
    assert rec["k"] == 10 and rec["ignore_identical_ids"] is True and rec["split"] == "test"
    assert rec["precision"] == "fp32" and rec["model_fingerprint"] == "abc"
    assert "MTEB default" in rec["ignore_identical_ids_source"]
    path = write_results(report, tmp_path / "out" / "report.json")
    assert json.loads(path.read_text())["sets"][0]["conventions"]["n_pairs"] == 3
    table = format_results(report)
    assert "arguana" in table and "ndcg@10 100.00" in table


def test_dataset_name(tmp_path, shared_data):
    assert dataset_name(shared_data / "nfcorpus") == "nfcorpus"
    assert dataset_name(shared_data / "stsbenchmark" / "sts-test.csv") == "stsbenchmark"
    assert dataset_name(tmp_path / "sick.tsv") == "sick"


def test_faiss_flat_equals_exact(keyword_encoder):
    enc = keyword_encoder(KEYWORDS)
    exact = evaluate_retrieval(enc, toy_set(), [1, 3], ignore_identical_ids=True)
    flat = evaluate_retrieval(enc, toy_set(), [1, 3], ignore_identical_ids=True, factory="Flat")
    assert flat == pytest.approx(exact)


def test_invalid_factory_string_is_a_config_error_naming_it(keyword_encoder):
    with pytest.raises(ConfigError, match="invalid FAISS factory string 'NoSuchIndex'"):
        evaluate_retrieval(keyword_encoder(KEYWORDS), toy_set(), [1], ignore_identical_ids=False,
                           factory="NoSuchIndex")
