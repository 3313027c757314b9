"""`textcl check`: counts and the load report for examples, scored pairs, BEIR folders and texts;
bad data exits 2 with the file:line message, or is counted with --on-error skip."""

from __future__ import annotations

import json
import logging

from textcl.cli import main


def test_check_examples_with_column_mapping(tmp_path, capsys):
    path = tmp_path / "faq.csv"
    path.write_text("question,answer,bad1,bad2\nq1,a1,n1,n2\nq2,a2,n3,\n", encoding="utf-8")
    assert main(["check", str(path), "--columns", "query=question,positive=answer,negative=bad1+bad2"]) == 0
    out = capsys.readouterr().out
    assert "examples: 2" in out and "negatives per example: min 1, median 1.5, max 2 (total 3" in out
    assert "columns: query=question, positive=answer, negative=['bad1', 'bad2']" in out
    assert "empty optional cell 'bad2' (read as none)" in out


def test_check_bad_rows_raise_or_are_counted(tmp_path, capsys, caplog):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"query": "q", "positive": "p"}) + "\n{oops\n", encoding="utf-8")
    with caplog.at_level(logging.ERROR):
        assert main(["check", str(path)]) == 2
    assert f"{path}:2: malformed JSON" in caplog.text
    assert main(["check", str(path), "--on-error", "skip"]) == 0
    out = capsys.readouterr().out
    assert "examples: 1" in out and "skipped: 1" in out and "malformed JSON" in out


def test_check_shared_benchmarks(shared_data, capsys):
    assert main(["check", str(shared_data / "stsbenchmark"), "--split", "dev"]) == 0
    assert "scored pairs: 1500" in capsys.readouterr().out
    assert main(["check", str(shared_data / "nfcorpus"), "--split", "dev"]) == 0
    out = capsys.readouterr().out
    assert "corpus: 3633 documents" in out and "queries: 3237" in out and "qrels rows (dev): 11385" in out


def test_check_scored_table_and_texts(tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"sentence1": "a", "sentence2": "b", "score": 0.5}) + "\n", encoding="utf-8")
    assert main(["check", str(pairs)]) == 0
    out = capsys.readouterr().out
    assert "looks like a similarity score" in out and "scored pairs: 1" in out
    texts = tmp_path / "t.txt"
    texts.write_text("one\n\ntwo\n", encoding="utf-8")
    assert main(["check", str(texts)]) == 0
    out = capsys.readouterr().out
    assert "texts: 2" in out and "1  empty line" in out


def test_wrong_columns_name_the_training_roles_and_how_to_map_them(tmp_path, caplog):
    path = tmp_path / "faq.csv"
    path.write_text("frage,antwort\nwie?,so.\n")
    assert main(["check", str(path)]) == 2
    assert caplog.records[-1].getMessage() == (
        f"{path}: no column for role(s) query, positive; available columns: frage, antwort; map them with "
        "--columns query=COLUMN,positive=COLUMN (in a recipe: data.columns: {query: COLUMN, positive: COLUMN}); "
        "or, for scored pairs, roles sentence1, sentence2, score")
    assert main(["check", str(path), "--columns", "query=frage,positive=antwort"]) == 0
