"""Your own data as a retrieval set: a pairs file (query, positive[, ids]) plus an optional extra
corpus; every positive is relevant for its query."""

from __future__ import annotations

import json

import pytest

from textcl.config import EvalConfig
from textcl.data.retrieval import load_retrieval_set
from textcl.errors import DataError
from textcl.eval import evaluate

FAQ = ("question;answer\r\nreset the vpn token;open the vpn portal and press reset\r\n"
       "printer jams;open the printer tray and remove the paper\r\n"
       "reset the vpn token;call the help desk about the vpn\r\n")


def test_pairs_file_with_extra_corpus_is_a_retrieval_set(tmp_path, keyword_encoder):
    (tmp_path / "faq.csv").write_text(FAQ)
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"_id": "x1", "text": "the vpn client release notes"}) + "\n"
                     + json.dumps({"_id": "x2", "text": "Open the printer tray and remove the paper"}) + "\n")
    rset = load_retrieval_set(tmp_path / "faq.csv", extra_corpus=extra)
    assert rset.name == "faq" and rset.queries == {"q1": "reset the vpn token", "q2": "printer jams"}
    assert rset.qrels == {"q1": {"p1": 1, "p3": 1}, "q2": {"p2": 1}}  # rows with the same query merge
    assert sorted(rset.corpus) == ["p1", "p2", "p3", "x1"]  # x2 repeats a positive's text: left out
    encode = keyword_encoder(["vpn", "printer", "reset", "token", "paper"])
    metrics = evaluate(encode, EvalConfig(retrieval=[str(tmp_path / "faq.csv")], extra_corpus=str(extra),
                                          k_values=[1, 2]))
    assert metrics["faq/recall@2"] == 1.0 and metrics["faq/ndcg@2"] > 0.5


def test_folder_that_is_no_set_says_what_is_expected(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match=r"folder: not a retrieval set: expected a BEIR folder \(corpus.jsonl, "
                                        r"queries.jsonl, qrels/SPLIT.tsv\) or a pairs file"):
        load_retrieval_set(tmp_path / "folder")
    (tmp_path / "folder" / "qrels").mkdir()
    with pytest.raises(DataError, match=r"folder: missing corpus.jsonl"):
        load_retrieval_set(tmp_path / "folder")
