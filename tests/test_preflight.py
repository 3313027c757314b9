"""`textcl run` / `textcl train` check the recipe up front: in seconds, before any stage or model,
every problem at once with the key to change; model selection on the test split is warned about."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from textcl import model as model_module
from textcl.cli import main
from textcl.config import load_recipe
from textcl.errors import ConfigError
from textcl.preflight import check_recipe


def _project(root: Path, splits: tuple[str, ...] = ("test",)) -> Path:
    (root / "heldout" / "qrels").mkdir(parents=True)
    (root / "heldout" / "corpus.jsonl").write_text('{"_id": "d1", "text": "cat"}\n')
    (root / "heldout" / "queries.jsonl").write_text('{"_id": "q1", "text": "cat"}\n')
    for split in splits:
        (root / "heldout" / "qrels" / f"{split}.tsv").write_text("q1\td1\t1\n")
    (root / "train.jsonl").write_text('{"query": "a", "positive": "b"}\n')
    recipe = root / "r.yaml"
    recipe.write_text("data: {train: train.jsonl}\ntrain: {eval_every: 5}\neval: {retrieval: [heldout]}\n")
    return recipe


def test_run_without_a_dev_split_fails_in_seconds_naming_the_key(tmp_path, monkeypatch, caplog):
    def no_model(*args, **kwargs):
        raise AssertionError("no stage may run before the recipe is checked")

    monkeypatch.setattr(model_module, "load_model", no_model)
    recipe = _project(tmp_path)
    start = time.perf_counter()
    assert main(["run", str(recipe), "--set", f"output_dir={tmp_path / 'out'}"]) == 2
    assert time.perf_counter() - start < 5
    assert (f"eval.retrieval[0]: {tmp_path / 'heldout'} has no 'dev' split (it has: test); set eval.dev_split to "
            "one of them or remove the set from eval.sts/eval.retrieval") in caplog.text
    assert not (tmp_path / "out" / "stages").exists()  # nothing ran
    assert main(["train", str(recipe)]) == 2  # the same check for `textcl train`
    assert caplog.text.count("has no 'dev' split") == 2


def test_all_problems_at_once(tmp_path):
    recipe = _project(tmp_path)
    with pytest.raises(ConfigError) as err:
        check_recipe(load_recipe(recipe, ["data.train=nope.jsonl", "index.corpus=gone.jsonl", "eval.split=val"]))
    text = str(err.value)
    assert text.startswith("the recipe cannot run (4 problems):")
    assert "data.train: " in text and "nope.jsonl does not exist" in text and "gone.jsonl does not exist" in text
    assert "has no 'val' split (it has: test); set eval.split to one of them" in text


def test_dev_split_on_test_warns(tmp_path, caplog):
    recipe = _project(tmp_path)
    warnings = check_recipe(load_recipe(recipe, ["eval.dev_split=test"]))
    assert warnings == ["eval.dev_split = eval.split = 'test': model selection on the test split inflates the test "
                        "score; select on a dev split (eval.dev_split: dev)"]
    assert "inflates the test score" in caplog.text
    assert check_recipe(load_recipe(recipe, ["eval.dev_split=test"]), training=False) == []


def test_metric_for_best_must_name_an_in_domain_set(tmp_path):
    recipe = _project(tmp_path, splits=("dev", "test"))
    with pytest.raises(ConfigError, match=r"eval.metric_for_best: 'nfcorpus/ndcg@10' names no in-domain set \(they "
                                          r"are: heldout\); write it as SET/METRIC, e.g. 'heldout/ndcg@10'"):
        check_recipe(load_recipe(recipe, ["eval.metric_for_best=nfcorpus/ndcg@10"]))
    assert check_recipe(load_recipe(recipe, ["eval.metric_for_best=heldout/ndcg@10"])) == []
