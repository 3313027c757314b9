"""bench/tables.py: BENCHMARKS.md and the README's results block are what bench/records/ generate, and every
table function is pure (same records -> same text; no clock, no /proc, no git, no file read)."""

from __future__ import annotations

import builtins
import copy
import datetime
import os
import pathlib
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import tables  # noqa: E402


@pytest.fixture(scope="module")
def records():
    return tables.read_records(tables.RECORDS)


def test_benchmarks_md_is_what_the_records_generate(records):
    assert (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8") == tables.benchmarks_md(records), \
        "BENCHMARKS.md is stale or edited by hand: run `make bench-tables`"


def test_readme_results_block_is_what_the_records_generate(records):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert tables.START in text and tables.END in text, "README.md lost its results markers: run `make bench-tables`"
    block = text.split(tables.START, 1)[1].split(tables.END, 1)[0].strip("\n").split("\n")
    assert block == tables.readme_block(records), "README.md's results block is stale: run `make bench-tables`"
    assert len(block) <= 10 and "[BENCHMARKS.md](BENCHMARKS.md)" in block[-1]


def test_the_header_prints_no_number():
    header = tables.benchmarks_md({})
    assert header.startswith("# Benchmarks") and tables.MARK.format("") not in header
    assert not re.search(r"(?<![\w.])\d", header), "the fixed header must not carry a figure, a date or a machine"


def _forbid(*_a, **_k):
    raise AssertionError("a table function read a clock, the machine, a file or a subprocess")


class _NoDatetime:
    def __getattr__(self, name):
        _forbid()


def test_every_table_function_is_pure(records, monkeypatch):
    """Rendering twice from the same records gives the same text, leaves the records unchanged, and reads
    nothing: clocks, load average, /proc, files and subprocesses all raise while the tables render."""
    before = copy.deepcopy(records)
    first = {name: render(records) for name, render in tables.SECTIONS.items()}
    for name in ("time", "perf_counter", "process_time", "monotonic", "gmtime", "localtime", "strftime"):
        monkeypatch.setattr(time, name, _forbid)
    monkeypatch.setattr(datetime, "datetime", _NoDatetime())
    monkeypatch.setattr(datetime, "date", _NoDatetime())
    monkeypatch.setattr(os, "getloadavg", _forbid)
    monkeypatch.setattr(os, "cpu_count", _forbid)
    monkeypatch.setattr(platform, "processor", _forbid)
    monkeypatch.setattr(subprocess, "run", _forbid)
    monkeypatch.setattr(builtins, "open", _forbid)
    monkeypatch.setattr(pathlib.Path, "read_text", _forbid)
    monkeypatch.setattr(pathlib.Path, "exists", _forbid)
    second = {name: render(records) for name, render in tables.SECTIONS.items()}
    block = tables.readme_block(records)
    text = tables.benchmarks_md(records)
    monkeypatch.undo()
    assert second == first and records == before
    assert block == tables.readme_block(records) and text == tables.benchmarks_md(records)
    assert all(lines for lines in first.values() if lines is not None)


def _fast(seed, before, after, variant=tables.bench_fast.RECIPE_VARIANT):
    keys = ("nfcorpus", "stsb", "stsb_qd", "stsb-retrieval")
    return {"seed": seed, "variant": variant, "wall_s": 100.0, "steps": 10, "best_step": 5,
            **{f"{k}_before": before for k in keys}, **{f"{k}_after": after for k in keys}}


def _peer(seed, ndcg):
    return {"row": "st-documented", "seed": seed, "quick": False, "ndcg@10": ndcg, "budget_s": 1200.0, "clock": "cpu"}


def test_readme_block_from_small_records_matches_values_worked_by_hand():
    scope = tables.bench_generalisation.SCOPES["recipe"]
    assert scope == "labelled"  # else the "before" cell below is the recipe as it is today
    records = {
        # recipe test 0.30 and 0.32 -> 31.00 ± 1.41 (stdev of 30, 32 = sqrt(2)); a second record of seed 1 is ignored
        "fast.jsonl": [_fast(1, 0.25, 0.30), _fast(2, 0.25, 0.32), _fast(1, 0.25, 0.99), _fast(3, 0.25, 0.5, "all")],
        # the last record per seed counts: 20 and 24 -> 22.00 ± 2.83
        "fast_peer.jsonl": [_peer(1, 99.0), _peer(1, 20.0), _peer(2, 24.0)],
        # lr 1e-3 has the better mean dev (0.5 vs 0.4): its test 0.40, 0.42 -> 41.00 ± 1.41
        "adapter.jsonl": [{"lr": 1e-4, "dev_best": 0.4, "test_after": 0.9, "test_before": 0.25},
                          {"lr": 1e-3, "dev_best": 0.6, "test_after": 0.40, "test_before": 0.25},
                          {"lr": 1e-3, "dev_best": 0.4, "test_after": 0.42, "test_before": 0.25}],
        # new documents, the recipe as it is today (its corpus scope): gains 0.12 - 0.10 = 2 points and 0.13 - 0.10 =
        # 3 points -> 2.50 ± 0.71; the recipe before it set corpus_scope: labelled (a record without the key): -1.00;
        # added after training (new-docs-later): not in the README
        "generalisation.jsonl": [{"split": "new-docs", "method": "recipe", "seed": s, "base_test": 0.10, "tuned_test": t,
                                  "corpus_scope": scope} for s, t in ((1, 0.12), (2, 0.13))]
        + [{"split": "new-docs", "method": "recipe", "seed": 1, "base_test": 0.10, "tuned_test": 0.09},
           {"split": "new-docs-later", "method": "adapter", "seed": 1, "base_test": 0.10, "tuned_test": 0.11}]
        # label budget: N = 50, recipe gains 0 and 1 point -> 0.50 ± 0.71, peer -1 point; N = 150, recipe +2, no
        # peer; N = 500 not run: "-"; the seeds column counts them per budget
        + [{"split": "budget-50", "method": "recipe", "seed": s, "base_test": 0.30, "tuned_test": t,
            "corpus_scope": scope} for s, t in ((1, 0.30), (2, 0.31))]
        + [{"split": "budget-50", "method": "peer", "seed": 1, "base_test": 0.30, "tuned_test": 0.29},
           {"split": "budget-150", "method": "recipe", "seed": 1, "base_test": 0.30, "tuned_test": 0.32,
            "corpus_scope": scope}],
        "any_model.jsonl": [{"row": "prompted MiniLM", "textcl": 0.3, "reference": 0.3, "diff_points": 0.0}],
    }
    assert tables.readme_block(records) == [
        "| NFCorpus test nDCG@10 x100 | mean ± std | seeds |", "|---|---|---|",
        "| base all-MiniLM-L6-v2 | 25.00 | - |",
        "| query-side recipe (`nfcorpus-fast.yaml`) | 31.00 ± 1.41 | 2 |",
        "| linear query adapter (`nfcorpus-adapter.yaml`, lr 0.001 chosen on dev) | 41.00 ± 1.41 | 2 |",
        "| sentence-transformers, documented hard negatives, 1200 cpu-s budget (untuned) | 22.00 ± 2.83 | 2 |",
        "| new documents (added to the corpus, never labelled), gain over base (recipe); before the recipes set "
        "`train.corpus_scope: labelled` (recipe) | +2.50 ± 0.71; -1.00 | 2; 1 |",
        "| label budget, gain over base with N = 50 / 150 / 500 train queries (recipe; peer) | "
        "+0.50 ± 0.71 / +2.00 / -; -1.00 / - / - | 2 / 1 / 0; 1 / 0 / 0 |",
        "",
        "A prompted model through `textcl eval` scores 30.00, sentence-transformers + pytrec_eval 30.00 "
        "(+0.0000 points). Details, machines and commands: [BENCHMARKS.md](BENCHMARKS.md)."]


def test_label_budget_row_ends_with_every_train_query_when_each_method_has_that_cell():
    scope = tables.bench_generalisation.SCOPES["recipe"]
    records = {"generalisation.jsonl": [
        {"split": "budget-50", "method": m, "seed": 1, "base_test": 0.30, "tuned_test": 0.31, "corpus_scope": scope}
        for m in ("recipe", "peer")]}
    # budget-50 gains +1 each; every train query: recipe 3 and 5 points -> 4.00 ± 1.41, peer 1 point
    assert tables._budget_row(records, {"recipe": [3.0, 5.0], "peer": [1.0]}) == (
        "| label budget, gain over base with N = 50 / 150 / 500 / all train queries (recipe; peer) | "
        "+1.00 / - / - / +4.00 ± 1.41; +1.00 / - / - / +1.00 | 1 / 0 / 0 / 2; 1 / 0 / 0 / 1 |")
    # a method without the whole-data cell: no "all" column
    assert "/ all train" not in tables._budget_row(records, {"recipe": [3.0]})


def test_replace_block_rewrites_between_the_markers_or_adds_them_under_a_results_heading():
    fresh = tables.replace_block("# Title\n\ntext\n", ["a", "b"])
    assert fresh == f"# Title\n\ntext\n\n## Results\n\n{tables.START}\na\nb\n{tables.END}\n"
    again = tables.replace_block(fresh + "\n## After\n", ["c"])
    assert again == f"# Title\n\ntext\n\n## Results\n\n{tables.START}\nc\n{tables.END}\n\n## After\n"


def test_sections_leave_out_benches_without_records():
    text = tables.benchmarks_md({"fast.jsonl": [_fast(1, 0.25, 0.30)]})
    assert text.count("<!-- bench: ") == 1 and "<!-- bench: fast -->" in text
    assert "Query-side fine-tuning on NFCorpus" in text and "| NFCorpus test nDCG@10 | 25.00 | 30.00 (1 seed) |" in text


def test_a_section_shows_the_runs_of_the_recipes_scope_today_or_says_its_runs_are_older():
    from common import scope_note, shown_runs
    old, new = {"seed": 1}, {"seed": 2, "corpus_scope": "labelled"}  # `old`: recorded before the key existed
    assert shown_runs([old, new], "labelled") == [new] and shown_runs([old], "labelled") == [old]
    assert scope_note([new], "r.yaml") == []
    assert scope_note([old, new], "r.yaml")[1].startswith("1 of the 2 runs here trained with `train.corpus_scope: all`, "
                                                         "before `r.yaml` set `labelled`")
