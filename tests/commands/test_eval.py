"""`textcl eval` end to end on the tiny model: flags, recipe eval: section, report file, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from textcl.cli import main
from textcl.models import load as model_module


def _beir(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                                 for i, t in enumerate(["the cat", "a dog", "red car", "tea"])))
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "cat"}\n{"_id": "q2", "text": "car"}\n')
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\nq2\td2\t2\n")
    return folder


def _sick(path: Path) -> Path:
    path.write_text("pair_ID\tsentence_A\tsentence_B\trelatedness_score\n1\tthe cat\tthe cat\t5.0\n"
                    "2\tthe cat\ta dog\t2.0\n3\tred car\ttea\t1.0\n")
    return path


def test_cli_flags_write_report(tmp_path, tiny_model_path, capsys):
    beir, sick = _beir(tmp_path / "scifact"), _sick(tmp_path / "sick.tsv")
    out = tmp_path / "report.json"
    rc = main(["eval", "--model", str(tiny_model_path), "--retrieval", str(beir), "--sts", str(sick),
               "--precision", "fp32", "--k", "1", "--k", "10", "--output", str(out), "--no-progress"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["model"]["precision"] == "fp32" and len(report["model"]["fingerprint"]) == 64
    keys = {r["key"] for r in report["results"]}
    assert {"scifact/ndcg@10", "scifact/mrr@1", "sick/spearman_cosine"} <= keys
    rec = next(r for r in report["results"] if r["key"] == "scifact/ndcg@10")
    assert rec["ignore_identical_ids"] is False and "MTEB default" in rec["ignore_identical_ids_source"]
    assert "scifact" in capsys.readouterr().out


def test_cli_recipe_eval_section(tmp_path, tiny_model_path):
    _beir(tmp_path / "data" / "arguana")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model:\n  name_or_path: {tiny_model_path}\n  precision: fp32\n"
                      "eval:\n  retrieval: [data/arguana]\n  k_values: [1, 5]\n")
    out = tmp_path / "rep.json"
    assert main(["eval", "--recipe", str(recipe), "--output", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["sets"][0]["conventions"]["ignore_identical_ids"] is True  # ArguAna: MTEB default
    assert {r["k"] for r in report["results"]} == {1, 5}


def test_cli_errors_are_clear(tmp_path, tiny_model_path, caplog):
    assert main(["eval", "--model", str(tiny_model_path)]) == 2
    assert "nothing to evaluate" in caplog.text
    assert main(["eval", "--model", str(tiny_model_path), "--retrieval", str(tmp_path / "missing")]) == 2
    assert "missing: retrieval set not found" in caplog.text


def test_eval_checks_inputs_before_loading_the_model(tmp_path, monkeypatch, caplog):
    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load before the inputs are checked")

    monkeypatch.setattr(model_module, "load_model", no_model)
    (tmp_path / "notes.md").write_text("# notes\n")
    assert main(["eval", "--model", "all-MiniLM-L6-v2", "--retrieval", str(tmp_path / "notes.md")]) == 2
    assert f"{tmp_path / 'notes.md'}: cannot detect the format from suffix '.md'" in caplog.text
    (tmp_path / "one.jsonl").write_text('{"text": "no query column"}\n')
    assert main(["eval", "--model", "all-MiniLM-L6-v2", "--retrieval", str(tmp_path / "one.jsonl")]) == 2
    assert "one.jsonl" in caplog.records[-1].getMessage() and "query" in caplog.records[-1].getMessage()
