"""Every recipe in recipes/ loads with `load_recipe`, round-trips through `save_config`, and names input
data that exists (local paths) or looks like a hub id — so a recipe cannot rot unnoticed."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from textcl.config import RunConfig, load_recipe, save_config
from textcl.paths import absolute_paths, place_outputs

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RECIPES = sorted([*ROOT.glob("recipes/*.yaml"), *ROOT.glob("recipes/*.yml")])
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _inputs(cfg: RunConfig) -> list[tuple[str, str]]:
    e = cfg.eval
    out = [("data.train", cfg.data.train), ("index.corpus", cfg.index.corpus)]
    out += [(f"eval.{name}", v) for name in ("sts", "retrieval", "ood_sts", "ood_retrieval")
            for v in getattr(e, name)]
    return [(k, v) for k, v in out if v]


def test_docs_table_lists_every_recipe_and_only_those():
    listed = set(re.findall(r"^\| `([\w.-]+\.ya?ml)` \|", (ROOT / "docs" / "cli.md").read_text(), flags=re.M))
    assert listed == {p.name for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_loads_and_round_trips(path, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes are run from the repository root (make demo)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # bundled recipes use no deprecated key
        cfg = load_recipe(path)
    assert isinstance(cfg, RunConfig)
    save_config(cfg, tmp_path / "config.yaml")
    assert load_recipe(tmp_path / "config.yaml") == absolute_paths(cfg)  # defaults left relative: the cwd
    missing = []
    for key, value in _inputs(cfg):
        p = Path(value)
        if p.exists() or (not p.is_absolute() and HUB_ID.match(value) and not (ROOT / value).parent.exists()):
            continue
        if p.is_absolute() and SHARED in p.parents and not SHARED.is_dir():
            continue  # benchmark data absent on this machine
        missing.append(f"{key}={value}")
    assert not missing, f"{path.name}: input paths not found (relative to the recipe or the repo root): {missing}"


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_paths_derived_from_output_dir_follow_it(path, tmp_path, monkeypatch):
    """`--set output_dir=X` moves the model, mined file, index and caches with it: no recipe pins one of them."""
    monkeypatch.chdir(ROOT)
    cfg = place_outputs(load_recipe(path, [f"output_dir={tmp_path}"]))
    derived = {"train.output_dir": cfg.train.output_dir, "mining.output": cfg.mining.output,
               "index.output": cfg.index.output, "model.cache_dir": cfg.model.cache_dir}
    outside = {k: v for k, v in derived.items() if v is not None and tmp_path not in Path(v).parents}
    assert cfg.output_dir == str(tmp_path) and not outside, f"{path.name}: {outside}"
    mine = tmp_path / "elsewhere"  # a derived path the user sets is kept
    assert place_outputs(load_recipe(path, [f"output_dir={tmp_path}", f"train.output_dir={mine}"])).train.output_dir \
        == str(mine)
