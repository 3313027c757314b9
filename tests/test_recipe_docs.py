"""docs/recipes.md is what the config dataclasses generate, and every recipe key says what it does."""

from __future__ import annotations

from pathlib import Path

from textcl import recipe_docs

PAGE = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"


def test_recipe_reference_is_generated_from_the_code():
    assert PAGE.read_text(encoding="utf-8") == recipe_docs.render(), "docs/recipes.md is stale: run `make docs`"


def test_every_recipe_key_has_a_comment_next_to_its_field():
    missing = recipe_docs.undocumented()
    assert not missing, (f"recipe keys without a comment next to their field in textcl/config.py: {missing}; "
                         "write one (it becomes the key's line in docs/recipes.md), then run `make docs`")


def test_field_comments_join_the_lines_above_and_the_inline_comment():
    notes = recipe_docs.field_comments(recipe_docs.C.ModelConfig)
    assert notes["batch_size"] == "encoding batch size"
    assert notes["query_prompt"].startswith("Prompts prepended to queries")
