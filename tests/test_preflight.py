"""`textcl run` / `textcl train` check the recipe up front: in seconds, before any stage or model,
every problem at once with the key to change: settings that cannot run together, missing inputs and
splits, model selection on the test split (unless allowed); a recipe prompt that replaces the model's
own is warned about."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from textcl import pipeline
from textcl.cli import main
from textcl.config import load_recipe
from textcl.errors import ConfigError, TrainingInterrupted
from textcl.models import load as model_module
from textcl.preflight import check_recipe, saved_prompts
from textcl.train import loop


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


SELECTION_HINT = "or allow it with eval.allow_test_selection: true (flag --allow-test-selection)"


def test_selecting_the_checkpoint_on_the_test_split_is_an_error_unless_allowed(tmp_path, caplog):
    recipe = _project(tmp_path)
    with pytest.raises(ConfigError) as err:
        check_recipe(load_recipe(recipe, ["eval.dev_split=test"]))
    assert str(err.value) == ("the recipe cannot run (1 problem):\n  eval.dev_split = eval.split = 'test': selecting "
                              "the checkpoint on the test split inflates the test score; select on a dev split "
                              f"(eval.dev_split: dev), {SELECTION_HINT}")
    warnings = check_recipe(load_recipe(recipe, ["eval.dev_split=test", "eval.allow_test_selection=true"]))
    assert warnings == ["eval.dev_split = eval.split = 'test': selecting the checkpoint on the test split inflates "
                        "the test score (allowed by eval.allow_test_selection)"]
    assert "inflates the test score" in caplog.text
    assert check_recipe(load_recipe(recipe, ["eval.dev_split=test"]), training=False) == []


def test_a_one_file_in_domain_set_is_an_error_unless_allowed(tmp_path):
    recipe = _project(tmp_path, splits=("dev", "test"))
    pairs = tmp_path / "faq.jsonl"
    pairs.write_text('{"query": "cat", "positive": "a cat"}\n')
    with pytest.raises(ConfigError) as err:
        check_recipe(load_recipe(recipe, [f"eval.retrieval=[{pairs}]"]))
    assert (f"eval.retrieval[0]: {pairs} is one file: training would select its best checkpoint on the rows the test "
            "table reports, inflating the test score; give a folder with a separate dev split for selection, "
            f"{SELECTION_HINT}") in str(err.value)
    allowed = check_recipe(load_recipe(recipe, [f"eval.retrieval=[{pairs}]", "eval.allow_test_selection=true"]))
    assert [w.split(": ", 1)[0] for w in allowed] == ["eval.retrieval[0]"]
    assert check_recipe(load_recipe(recipe, [f"eval.ood_sts=[{pairs}]"])) == []  # out-of-domain: never selects


@pytest.mark.parametrize("command", ["run", "train"])
def test_allow_test_selection_flag_sets_the_key(tmp_path, monkeypatch, capsys, command):
    seen = []

    def capture(config, *args, **kwargs):
        seen.append(config.eval.allow_test_selection)
        raise TrainingInterrupted(1, "checkpoint")

    monkeypatch.setattr(pipeline, "run_pipeline", capture)
    monkeypatch.setattr(loop, "train", capture)
    recipe = _project(tmp_path, splits=("dev", "test"))
    assert main([command, str(recipe), "--allow-test-selection", "--set", "eval.dev_split=test"]) == 130
    assert main([command, str(recipe)]) == 130
    assert seen == [True, False]
    assert "--set eval.allow_test_selection=true" in capsys.readouterr().out.splitlines()[0]  # the resume line


def test_cli_refuses_test_selection_naming_the_key_and_the_flag(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(model_module, "load_model", _no_model)
    recipe = _project(tmp_path)
    assert main(["train", str(recipe), "--set", "eval.dev_split=test"]) == 2
    assert SELECTION_HINT in caplog.text


def _no_model(*args, **kwargs):
    raise AssertionError("no stage may run before the recipe is checked")


@pytest.mark.parametrize("bad, message", [
    (["train.similarity_anchor=1"], "train.similarity_anchor holds the query tower's similarities"),
    (["train.max_ood_drop=0.5", "train.interpolate_base=[0.5]"], "train.max_ood_drop needs out-of-domain sets"),
    (["train.negatives=corpus", "loss.name=cosent"], "loss.name=infonce, not cosent"),
])
def test_settings_that_cannot_run_together_fail_before_any_stage(tmp_path, monkeypatch, caplog, bad, message):
    monkeypatch.setattr(model_module, "load_model", _no_model)
    recipe = _project(tmp_path, splits=("dev", "test"))
    out = tmp_path / "out"
    assert main(["run", str(recipe), "--set", f"output_dir={out}", *(x for b in bad for x in ("--set", b))]) == 2
    assert message in caplog.text
    assert not (out / "stages").exists() and not (out / "similarity_base.json").exists()  # eval_base never ran


def test_a_config_built_by_hand_is_checked_before_any_stage(tmp_path, monkeypatch):
    monkeypatch.setattr(model_module, "load_model", _no_model)
    recipe = _project(tmp_path, splits=("dev", "test"))
    config = load_recipe(recipe, [f"output_dir={tmp_path / 'out'}"])
    bad = replace(config, train=replace(config.train, tune="query"), loss=replace(config.loss, symmetric=True))
    with pytest.raises(ConfigError, match="loss.symmetric adds a positive -> in-batch-queries term"):
        pipeline.run_pipeline(bad)
    assert not (tmp_path / "out" / "stages").exists()


def test_every_problem_of_a_recipe_at_once(tmp_path):
    recipe = _project(tmp_path, splits=("dev", "test"))
    with pytest.raises(ConfigError) as err:
        load_recipe(recipe, ["train.similarity_anchor=1", "train.interpolate_base=[1.5]"])
    text = str(err.value)
    assert text.startswith(f"{recipe}: 2 settings cannot run together:\n  train.interpolate_base: ")
    assert "\n  train.similarity_anchor holds" in text


def _model_folder(root: Path, settings: dict) -> Path:
    root.mkdir()
    (root / "config_sentence_transformers.json").write_text(json.dumps(settings))
    return root


@pytest.mark.parametrize("settings, role, expected", [
    ({"prompts": {"query": "query: ", "passage": "passage: "}}, "document", "passage: "),
    ({"prompts": {"query": "q: ", "document": "d: ", "passage": "p: ", "corpus": "c: "}}, "document", "d: "),
    ({"prompts": {"retrieval": "r: ", "corpus": "c: "}, "default_prompt_name": "retrieval"}, "query", "r: "),
    ({"prompts": {"retrieval": "r: ", "corpus": "c: "}, "default_prompt_name": "retrieval"}, "document", "c: "),
    ({"prompts": {"retrieval": "r: "}, "default_prompt_name": "retrieval"}, "document", "r: "),
    ({"prompts": {"clustering": "k: "}}, "query", ""),
])
def test_saved_prompts_follow_sentence_transformers_encode_query_and_encode_document(settings, role, expected):
    assert saved_prompts(settings)[role] == expected


def test_a_recipe_prompt_that_replaces_the_models_own_is_warned_about(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(model_module, "load_model", _no_model)
    model = _model_folder(tmp_path / "e5", {"prompts": {"query": "query: ", "passage": "passage: "},
                                            "default_prompt_name": None})
    config = load_recipe(None, [f"model.name_or_path={model}"])

    def warnings(query: str | None, document: str | None) -> list[str]:
        mc = replace(config.model, query_prompt=query, document_prompt=document)
        return check_recipe(replace(config, model=mc), training=False, evaluating=False)

    settings = model / "config_sentence_transformers.json"
    assert warnings("search: ", "passage: ") == [
        f"model.query_prompt = 'search: ' replaces the model's own query prompt 'query: ' ({settings}); leave "
        "model.query_prompt unset to encode as the model expects"]
    assert "replaces the model's own query prompt" in caplog.text
    assert [w.split(" = ")[0] for w in warnings("", "")] == ["model.query_prompt", "model.document_prompt"]
    assert warnings(None, None) == [] and warnings("query: ", None) == []  # None: the model's own prompts
    plain = _model_folder(tmp_path / "plain", {"prompts": {}, "default_prompt_name": None})
    assert check_recipe(load_recipe(None, [f"model.name_or_path={plain}", "model.query_prompt=x"]),
                        training=False, evaluating=False) == []


def test_metric_for_best_must_name_an_in_domain_set(tmp_path):
    recipe = _project(tmp_path, splits=("dev", "test"))
    with pytest.raises(ConfigError, match=r"eval.metric_for_best: 'nfcorpus/ndcg@10' names no in-domain set \(they "
                                          r"are: heldout\); write it as SET/METRIC, e.g. 'heldout/ndcg@10'"):
        check_recipe(load_recipe(recipe, ["eval.metric_for_best=nfcorpus/ndcg@10"]))
    assert check_recipe(load_recipe(recipe, ["eval.metric_for_best=heldout/ndcg@10"])) == []
