"""bench/bench_fast.py: the note on the dev scores behind the recipe's choices reads the records alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_fast as bf  # noqa: E402


def _row(variant: str, seed: int, dev: float | None) -> dict:
    return {"variant": variant, "seed": seed, "nfcorpus_dev_after": dev}


def test_each_alternative_is_compared_with_the_recipe_on_dev_once_both_have_dev_records():
    old = [_row("anchor2-budget", 42, None), _row("anchor5-budget", 42, None)]
    five = [_row("anchor5-budget-labelled", s, d) for s, d in ((42, 0.34), (1, 0.36))]
    two = [_row("anchor2-budget-labelled", s, d) for s, d in ((42, 0.33), (1, 0.33), (42, 0.99))]  # first per seed
    note = " ".join(bf._dev_note(old + five + two))
    assert "`similarity_anchor: 2` (the recipe: 5): 33.00 ± 0.00 vs 35.00 ± 1.41 (2 and 2 seeds; dev prefers the " \
           "recipe's)" in note and "corpus_positives" not in note  # the sample variant has no records yet
    assert "2 of 7 runs were recorded before" in note and "superseded by the dev comparisons" in note
    sample = [_row("sample-budget-labelled", s, 0.40) for s in (42, 1)]
    flipped = " ".join(bf._dev_note(five + sample))
    assert "`corpus_positives: sample` (the recipe: all): 40.00 ± 0.00 vs 35.00 ± 1.41 (2 and 2 seeds; dev prefers " \
           "the alternative)" in flipped and "recorded before" not in flipped
    only_old = " ".join(bf._dev_note(old + five))  # no alternative re-run: no comparison yet
    assert "which is test selection" in only_old and "superseded" not in only_old


def test_only_the_recipe_and_its_listed_variants_can_be_run(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["bench_fast.py", "--variant", "anchor2-budget", "--results", str(tmp_path / "r")])
    with pytest.raises(SystemExit):
        bf.main()
    assert not (tmp_path / "r").exists()
    assert bf.VARIANT_SETS[bf.RECIPE_VARIANT] == () and set(bf.ALTERNATIVES) <= set(bf.VARIANT_SETS) <= set(bf.VARIANTS)
