"""The README stays short and its walk-through and Python API stay true: the recipe it writes loads (its paths
exist), the names its Python block imports exist, and every docs/ page it links to is there."""

from __future__ import annotations

import ast
import importlib
import os
import re
from pathlib import Path

from textcl.config import load_recipe

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_is_read_in_five_minutes():
    assert len(README.splitlines()) <= 150


def test_walk_through_recipe_loads_with_existing_paths():
    walk = next(b for b in _blocks("bash") if "my-recipe.yaml" in b)
    recipe = re.search(r"<<'EOF'\n(.*?)\nEOF", walk, flags=re.S).group(1)
    path = ROOT / f"my-recipe.test-{os.getpid()}.yaml"  # beside the README, as the walk-through writes it
    path.write_text(recipe + "\n", encoding="utf-8")
    try:
        config = load_recipe(path)
    finally:
        path.unlink()
    for p in (config.data.train, *config.eval.retrieval, config.index.corpus):
        assert Path(p).exists(), p
    assert config.train.tune == "query"


def test_python_block_imports_exist():
    code = next(b for b in _blocks("python") if "load_recipe" in b)
    for node in ast.parse(code).body:
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module}.{alias.name}"


def test_linked_docs_exist():
    for link in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)\)", README):
        assert (ROOT / link).is_file(), link
