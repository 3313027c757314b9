"""Recipes: unknown keys name the key and the closest valid one, overrides are type-checked, paths
resolve relative to the recipe (overrides: to the working directory), and saved configs round-trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from textcl.config import RunConfig, load_recipe, save_config
from textcl.errors import ConfigError
from textcl.paths import absolute_paths


def recipe(tmp_path, text: str, name: str = "r.yaml"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_recipe():
    cfg = load_recipe()
    assert isinstance(cfg, RunConfig) and cfg.train.lr == 2e-5 and cfg.loss.name == "infonce"


@pytest.mark.parametrize("text, message", [
    ("trian:\n  lr: 1.0e-5\n", r"r.yaml: unknown key 'trian'; did you mean 'train'\?"),
    ("train:\n  learning_rate: 1.0e-5\n", r"unknown key 'train.learning_rate'"),
    ("train:\n  lrr: 1.0e-5\n", r"r.yaml: unknown key 'train.lrr'; did you mean 'lr'\?"),
    ("mining:\n  num_negative: 3\n", r"unknown key 'mining.num_negative'; did you mean 'num_negatives'\?"),
    ("train:\n  zzzz: 1\n", r"unknown key 'train.zzzz'; valid keys: output_dir, batch_size, lr"),
])
def test_unknown_keys_name_key_and_closest(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(recipe(tmp_path, text))


def test_scientific_notation_without_dot_is_a_number(tmp_path):
    # YAML 1.1 reads `2e-5` as a string; recipes and `--set train.lr=2e-5` must still work.
    assert load_recipe(recipe(tmp_path, "train:\n  lr: 3e-5\n")).train.lr == 3e-5
    assert load_recipe(None, ["train.lr=2e-5"]).train.lr == 2e-5
    assert load_recipe(None, ["train.lr=1"]).train.lr == 1.0 and isinstance(load_recipe(None, ["train.lr=1"]).train.lr,
                                                                         float)


@pytest.mark.parametrize("override, message", [
    ("train.lr=fast", r"^--set train.lr=fast: train.lr: expected a number, got 'fast'$"),
    ("train.max_steps=abc", r"^--set train.max_steps=abc: train.max_steps: expected an integer \(or null\), got 'abc'$"),
    ("train.max_steps=0", r"train.max_steps must be a positive integer \(or null\), got 0"),
    ("train.max_steps=-3", r"train.max_steps must be a positive integer \(or null\), got -3"),
    ("train.save_every_minutes=0", r"train.save_every_minutes must be > 0 \(or null: off\), got 0.0"),
    ("train.learning_rate=1e-4", r"unknown key 'train.learning_rate'; did you mean 'lr'\?"),
    ("train.num_train_epochs=2", r"unknown key 'train.num_train_epochs'; did you mean 'epochs'\?"),
    ("train.batch_size=3.5", r"train.batch_size: expected an integer, got 3.5"),
    ("train.batch_size=true", r"train.batch_size: expected an integer, got True"),
    ("loss.name=triplet", r"loss.name: expected one of \['infonce', 'cosent', 'simcse'\], got 'triplet'"),
    ("model.trust_remote_code=yes please", r"model.trust_remote_code: expected true or false"),
    ("eval.k_values=[1, two]", r"eval.k_values\[1\]: expected an integer, got 'two'"),
    ("train.lrr=1", r"unknown key 'train.lrr'; did you mean 'lr'\?"),
    ("train", r"override 'train' must look like section.key=value"),
    ("train.lr.x=1", r"train.lr: expected a number, got \{'x': 1\}"),
])
def test_overrides_are_type_checked(override, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(None, [override])


def test_a_bad_override_is_not_blamed_on_the_recipe(tmp_path):
    path = recipe(tmp_path, "train:\n  lr: 1e-5\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(path, ["train.max_steps=ten"])
    assert str(err.value) == "--set train.max_steps=ten: train.max_steps: expected an integer (or null), got 'ten'"
    with pytest.raises(ConfigError, match=r"r.yaml: train.max_steps must be a positive integer \(or null\), got 0"):
        load_recipe(recipe(tmp_path, "train:\n  max_steps: 0\n"))


def test_nested_overrides_and_empty_sections(tmp_path):
    path = recipe(tmp_path, "train:\ndata:\n  columns:\n    query: q\n")  # `train:` is an empty section
    cfg = load_recipe(path, ["train.batch_size=8", "data.columns.positive=answer", "mining.factory=IVF16,Flat",
                             "model.max_seq_length=null", "eval.k_values=[1, 10]"])
    assert cfg.train.batch_size == 8 and cfg.data.columns == {"query": "q", "positive": "answer"}
    assert cfg.mining.factory == "IVF16,Flat" and cfg.model.max_seq_length is None and cfg.eval.k_values == [1, 10]


def test_old_factory_keys_still_load_with_a_warning_naming_the_new_key(tmp_path, caplog):
    path = recipe(tmp_path, "mining:\n  index: HNSW32\neval:\n  search: Flat\n")
    with pytest.warns(DeprecationWarning) as caught:
        cfg = load_recipe(path, ["mining.index=IVF16,Flat"])
    assert cfg.mining.factory == "IVF16,Flat" and cfg.eval.factory == "Flat"
    messages = sorted({str(w.message) for w in caught})
    assert messages == ["recipe key eval.search is deprecated; use eval.factory",
                        "recipe key mining.index is deprecated; use mining.factory"]
    assert "recipe key mining.index is deprecated; use mining.factory" in caplog.text
    with pytest.raises(ConfigError, match="mining.index and mining.factory are the same setting; keep only "
                                          "mining.factory"):
        load_recipe(recipe(tmp_path, "mining:\n  index: HNSW32\n  factory: Flat\n"))


def test_paths_resolve_relative_to_recipe_and_overrides_to_cwd(tmp_path, monkeypatch):
    (tmp_path / "recipes" / "data").mkdir(parents=True)
    (tmp_path / "recipes" / "data" / "pairs.jsonl").write_text("{}\n")
    (tmp_path / "mine.jsonl").write_text("{}\n")
    path = recipe(tmp_path, "data:\n  train: data/pairs.jsonl\neval:\n  sts: [../sts, /abs/sts]\n"
                            "  retrieval: [org/dataset]\nmining:\n  output: ./mined.jsonl\n", "recipes/r.yaml")
    monkeypatch.chdir(tmp_path)
    cfg = load_recipe(path)
    assert cfg.data.train == str(tmp_path / "recipes" / "data" / "pairs.jsonl")  # exists next to the recipe
    assert cfg.eval.sts == [str(tmp_path / "sts"), "/abs/sts"]  # ./ and ../ always resolve; absolute untouched
    assert cfg.eval.retrieval == ["org/dataset"]  # a hub id is not a path
    assert cfg.mining.output == str(tmp_path / "recipes" / "mined.jsonl")
    over = load_recipe(path, ["data.train=./mine.jsonl", "mining.output=mine.jsonl"])
    assert over.data.train == str(tmp_path / "mine.jsonl") == over.mining.output  # relative to the cwd


def test_one_path_rule_whether_or_not_the_file_exists(tmp_path, monkeypatch):
    """Relative paths resolve against the recipe's folder, existing or not; only hub-capable keys keep hub ids."""
    (tmp_path / "recipes" / "models" / "mine").mkdir(parents=True)
    path = recipe(tmp_path, "model: {name_or_path: models/mine}\ndata: {train: pairs.jsonl}\n"
                            "mining: {output: mined.jsonl, cross_encoder: cross-encoder/ms-marco}\n"
                            "eval: {retrieval: [hf://org/set, heldout/, org/dataset.jsonl]}\n"
                            "index: {corpus: org/corpus, output: idx}\noutput_dir: runs/a\n", "recipes/r.yaml")
    monkeypatch.chdir(tmp_path)
    cfg = load_recipe(path)
    here = tmp_path / "recipes"
    assert cfg.mining.output == str(here / "mined.jsonl")  # an output that does not exist yet
    assert cfg.data.train == str(here / "pairs.jsonl")  # a missing input: still the recipe's folder
    assert cfg.model.name_or_path == str(here / "models" / "mine")  # exists beside the recipe: a path
    assert cfg.mining.cross_encoder == "cross-encoder/ms-marco"  # org/name naming nothing here: a hub id
    assert cfg.eval.retrieval == ["hf://org/set", str(here / "heldout"), str(here / "org" / "dataset.jsonl")]
    assert cfg.index.corpus == str(here / "org" / "corpus")  # not a hub-capable key: always a path
    assert (cfg.index.output, cfg.output_dir) == (str(here / "idx"), str(here / "runs" / "a"))
    assert load_recipe(None, ["model.name_or_path=all-MiniLM-L6-v2"]).model.name_or_path == "all-MiniLM-L6-v2"
    assert load_recipe(None, ["data.train=~/x.jsonl"]).data.train == str(Path.home() / "x.jsonl")


def test_invalid_recipes(tmp_path):
    with pytest.raises(ConfigError, match=r"recipe not found: .*nope.yaml"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"r.yaml: invalid YAML"):
        load_recipe(recipe(tmp_path, "train: [unclosed\n"))
    with pytest.raises(ConfigError, match=r"r.yaml: a recipe must be a mapping of sections"):
        load_recipe(recipe(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match=r"r.yaml: train: expected a mapping, got 5"):
        load_recipe(recipe(tmp_path, "train: 5\n"))


def test_save_config_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_recipe(recipe(tmp_path, "seed: 7\ntrain:\n  lr: 5e-5\n  batch_size: 16\ndata:\n  columns: {query: q}\n"
                                       "eval:\n  k_values: [1, 5]\n"), ["loss.temperature=0.02"])
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, out)
    monkeypatch.chdir(tmp_path / "run")  # saved paths are absolute: they load the same from anywhere
    back = load_recipe(out)
    assert back == absolute_paths(cfg, tmp_path) and back.output_dir == str(tmp_path / "out" / "run")
    assert dataclasses.asdict(back) == dataclasses.asdict(absolute_paths(cfg, tmp_path))
