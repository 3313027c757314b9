"""The one loader of training rows and the one "is this a BEIR folder" rule (textcl.data.training, data.beir)."""

from __future__ import annotations

import json

import pytest

from textcl.config import load_recipe
from textcl.data.beir import is_beir_folder
from textcl.data.io import load_examples
from textcl.data.training import load_mining_source, load_training_rows
from textcl.errors import DataError
from textcl.types import Example, RetrievalSet, ScoredPair


def _beir(folder, *, qrels=True, corpus=True, queries=True):
    folder.mkdir()
    if corpus:
        (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "one"}\n{"_id": "d2", "text": "two"}\n')
    if queries:
        (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "first"}\n')
    if qrels:
        (folder / "qrels").mkdir()
        (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return folder


def test_one_beir_rule_and_a_partial_folder_names_what_it_lacks(tmp_path):
    assert is_beir_folder(_beir(tmp_path / "full")) and is_beir_folder(str(tmp_path / "full"))
    only_qrels = _beir(tmp_path / "qrels_only", corpus=False, queries=False)
    assert is_beir_folder(only_qrels) and not is_beir_folder(tmp_path / "full" / "corpus.jsonl")
    (tmp_path / "plain").mkdir()
    assert not is_beir_folder(tmp_path / "plain") and not is_beir_folder(tmp_path / "absent")
    with pytest.raises(DataError, match="missing corpus.jsonl"):
        load_examples(only_qrels)


def test_training_rows_by_loss_cut_to_max_examples(tmp_path):
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"query": f"q{i}", "positive": f"p{i}"}) + "\n"
                                                  for i in range(5)))
    (tmp_path / "scored.jsonl").write_text("".join(json.dumps({"sentence1": f"a{i}", "sentence2": f"b{i}",
                                                               "score": i / 4}) + "\n" for i in range(5)))
    (tmp_path / "texts.txt").write_text("one\ntwo\nthree\n")
    cfg = load_recipe(None, ["data.max_examples=3"]).data
    rows, report = load_training_rows(cfg, "infonce", path=tmp_path / "pairs.jsonl")
    assert rows == load_examples(tmp_path / "pairs.jsonl")[0][:3] and report.kept == 5
    pairs, report = load_training_rows(cfg, "cosent", path=tmp_path / "scored.jsonl")
    assert [p.sentence1 for p in pairs] == ["a0", "a1", "a2"] and isinstance(pairs[0], ScoredPair) and report is None
    assert load_training_rows(cfg, "simcse", path=tmp_path / "texts.txt") == (["one", "two", "three"], None)


def test_mining_source_is_the_retrieval_set_unless_rows_are_asked_for(tmp_path):
    folder = _beir(tmp_path / "beir")
    cfg = load_recipe(None, [f"data.train={folder}"]).data
    source = load_mining_source(cfg)
    assert isinstance(source, RetrievalSet) and source.qrels == {"q1": {"d1": 1}}
    rows = load_mining_source(cfg, as_rows=True)  # textcl mine --pairs: rows, even from a BEIR folder
    assert rows == [Example("first", ("one",), query_id="q1", positive_ids=("d1",))]
