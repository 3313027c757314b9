"""bench/bench_generalisation.py: a finished run folder becomes a row (test and dev scores from summary.json,
the WiSE-FT choice from history.json), and the tables come from the records alone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_generalisation as bg  # noqa: E402

M = "nfcorpus/ndcg@10"


def test_summary_row_reads_test_dev_and_the_kept_mix(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({
        "before": {M: 0.30, "stsbenchmark/spearman_cosine": 0.82},
        "after": {M: 0.33, "stsbenchmark/spearman_cosine": 0.815},
        "train": {"steps": 240, "stopped_early": True, "dev_before": {"dev": {M: 0.29}},
                  "dev_after": {"dev": {M: 0.31}, "ood": {}}},
        "stages": {"train": {"status": "done", "seconds": 500.0}, "report": {"status": "done"}}}))
    significance = {"mean": 0.02, "se": 0.005, "n": 300, "t": 4.0, "kept": "tuned"}
    (tmp_path / "history.json").write_text(json.dumps([{"step": 0, "eval": {"dev": {M: 0.29}}},
                                                       {"forgetting_budget": 0.5, "chosen": 0.6},
                                                       {"step": 240, "significance": significance}]))
    (tmp_path / "config.yaml").write_text("seed: 1\ntrain:\n  corpus_scope: labelled\neval:\n  min_gain_se: 1.64\n")
    row = bg.summary_row(tmp_path)
    assert row == {"base_test": 0.30, "tuned_test": 0.33, "base_dev": 0.29, "tuned_dev": 0.31,
                   "base_stsb": 0.82, "tuned_stsb": 0.815, "steps": 240, "stopped_early": True,
                   "chosen_alpha": 0.6, "stages_s": {"train": 500.0, "report": None}, "stages_total_s": 500.0,
                   "min_gain_se": 1.64, "corpus_scope": "labelled", "significance": significance}
    (tmp_path / "config.yaml").unlink()  # a run from before the rule and the key
    assert (bg.summary_row(tmp_path)["min_gain_se"], bg.summary_row(tmp_path)["corpus_scope"]) == (0.0, "all")


def test_a_record_with_the_significance_rule_replaces_an_earlier_one_without():
    rows = [_rec("budget-50", 1, 0.31, 0.30), {**_rec("budget-50", 1, 0.31, 0.31), "min_gain_se": 1.64},
            {**_rec("budget-50", 1, 0.31, 0.50), "min_gain_se": 1.64}]  # a third record: the first with it counts
    assert "| N = 50 | recipe | 1 | 31.00 | 31.00 | +0.00 | +0.00 | 30.00 -> 32.00 | 601 |" in bg.table(rows)


def _rec(split: str, seed: int, base: float, tuned: float, method: str = "recipe") -> dict:
    """A record of a run; a recipe's trained with the corpus scope the recipe sets today."""
    return {"method": method, "split": split, "seed": seed, "base_test": base, "tuned_test": tuned,
            "base_dev": 0.30, "tuned_dev": 0.32, "wall_s": 600.0 + seed, "load_before": [3.0 + seed, 2.0, 1.0],
            **({"corpus_scope": bg.SCOPES[method]} if method in bg.SCOPES else {})}


def _old(record: dict) -> dict:
    """`record` as written before runs recorded their corpus scope."""
    return {k: v for k, v in record.items() if k != "corpus_scope"}


def test_table_gives_mean_std_gain_and_worst_seed_per_cell():
    rows = [_rec("new-docs", 1, 0.30, 0.31), _rec("new-docs", 2, 0.30, 0.33), _rec("new-docs", 3, 0.30, 0.32),
            _rec("new-docs", 1, 0.30, 0.99),  # a second record of seed 1: the first one counts
            _rec("budget-50", 1, 0.31, 0.30), _rec("budget-50", 1, 0.31, 0.35, method="adapter")]
    lines = bg.table(rows)
    assert "| new documents | recipe | 3 | 30.00 ± 0.00 | 32.00 ± 1.00 | +2.00 ± 1.00 | +1.00 | " \
           "30.00 ± 0.00 -> 32.00 ± 0.00 | 602 |" in lines
    assert "| N = 50 | recipe | 1 | 31.00 | 30.00 | -1.00 | -1.00 | 30.00 -> 32.00 | 601 |" in lines
    assert "| N = 50 | adapter | 1 | 31.00 | 35.00 | +4.00 | +4.00 | 30.00 -> 32.00 | 601 |" in lines
    assert "1-minute load average 4.0-6.0" in lines[-1]
    noted = bg.table([{**rows[0], "note": "resumed"}, {**rows[1], "note": "resumed"}])
    assert noted[-1] == "recipe new-docs seed 1, recipe new-docs seed 2: resumed."


def test_heldout_runs_add_the_held_out_set_to_the_recipes_own_out_of_domain_sets(tmp_path):
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.parent.mkdir()
    recipe.write_text("train:\n  max_ood_drop: 0.5\neval:\n  ood_retrieval: [../data/general]\n")
    leaf = tmp_path / "splits" / "new-docs-heldout" / "nfcorpus"
    sets, mixes = bg.heldout_overrides(recipe, leaf)
    assert sets == f"eval.ood_retrieval=[{tmp_path / 'data' / 'general'}, {leaf.parent / 'heldout'}]"
    assert mixes == "train.interpolate_base=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]"
    assert bg.heldout_overrides(bg.METHODS["recipe"], leaf)[0] == f"eval.ood_retrieval=[{leaf.parent / 'heldout'}]"
    assert "max_ood_drop: 0.5" in bg.METHODS["recipe"].read_text()  # the budget that watches the held-out set


def test_a_recorded_runs_folder_comes_from_its_command(tmp_path):
    run = {"method": "recipe", "split": "new-docs", "seed": 2,
           "run_command": "run recipes/nfcorpus-fast.yaml --set output_dir=/x/gen-se/recipe/new-docs-s2 --set seed=2"}
    assert bg.run_folder(run, tmp_path) == Path("/x/gen-se/recipe/new-docs-s2")
    assert bg.run_folder({**run, "run_command": ""}, tmp_path) == tmp_path / "recipe" / "new-docs-s2"


def test_runs_of_another_corpus_scope_than_the_recipes_today_are_shown_as_their_own_method(monkeypatch):
    monkeypatch.setitem(bg.SCOPES, "recipe", "labelled")
    rows = [_old(_rec("new-docs", 1, 0.30, 0.28)),  # before the key: scope all, read off the missing --set
            {**_old(_rec("new-docs-labelled", 1, 0.30, 0.31)),
             "run_command": "run r.yaml --set train.corpus_scope=labelled"},
            _old(_rec("new-docs-labelled-whole", 1, 0.30, 0.33)),  # a --whole record of that run: its split says so
            {**_rec("budget-50", 1, 0.30, 0.30), "corpus_scope": "labelled"},
            _old(_rec("budget-50", 1, 0.30, 0.29)),  # the same (split, seed) trained with scope all: kept beside it
            _rec("budget-50", 1, 0.30, 0.25, method="peer")]
    shown = {(r["method"], r["split"]): r["tuned_test"] for r in bg.cells(rows)}
    assert shown == {("recipe, corpus_scope: all", "new-docs"): 0.28, ("recipe", "new-docs"): 0.31,
                     ("recipe", "new-docs-whole"): 0.33, ("recipe", "budget-50"): 0.30,
                     ("recipe, corpus_scope: all", "budget-50"): 0.29, ("peer", "budget-50"): 0.25}
    lines = bg.table(rows)
    assert lines.index(next(x for x in lines if x.startswith("| new documents | recipe |"))) < \
        lines.index(next(x for x in lines if x.startswith("| new documents | recipe, corpus_scope: all |")))
    assert bg.scope_of("recipe") == "labelled" and bg.scope_of("recipe", ("train.corpus_scope=all",)) == "all"


def test_the_recipes_scopes_are_read_from_the_recipe_files():
    import yaml
    for method, recipe in bg.METHODS.items():
        assert bg.SCOPES[method] == yaml.safe_load(recipe.read_text())["train"].get("corpus_scope", "all")


def test_the_newest_significance_rule_wins_and_older_ones_are_named():
    plain = {**_rec("budget-50", 1, 0.31, 0.30), "min_gain_se": 1.64, "significance": {"t": 1.7, "kept": "tuned"}}
    assert bg.rule(plain) == 1 and bg.rule(_rec("budget-50", 1, 0.31, 0.31)) == 0
    maxt = {**plain, "tuned_test": 0.31, "significance": {"t": 1.7, "threshold": 2.3, "kept": "start"}}
    no_test = {**plain, "significance": None}  # the start stayed best on dev: no test under either rule
    assert bg.rule(maxt) == 2 and bg.rule(no_test) == 2
    assert [r["tuned_test"] for r in bg.kept_records([plain, maxt])] == [0.31]
    lines = bg.table([plain])
    assert any(x.startswith("Runs whose `eval.min_gain_se` test did not yet account") and "budget-50 seed 1." in x
               for x in lines)
    assert not any("did not yet account" in x for x in bg.table([maxt]))


def test_whole_scores_a_run_recorded_after_its_cells_last_whole_record_and_shows_that_one(tmp_path, monkeypatch):
    records = tmp_path / "generalisation.jsonl"
    rule2 = {"min_gain_se": 1.64, "significance": {"t": 3.0, "threshold": 2.3, "kept": "tuned"}}
    rows = [{**_rec("new-docs-labelled", 1, 0.30, 0.31), "written": "2026-12-03T10:00:00Z"},  # rule 0, scored
            {**_rec("new-docs-labelled-whole", 1, 0.30, 0.33), "written": "2026-12-03T11:00:00Z"},
            {**_rec("new-docs-labelled", 1, 0.30, 0.32), **rule2, "written": "2026-12-03T20:00:00Z"},  # a rerun
            {**_rec("new-docs-labelled", 2, 0.30, 0.31), **rule2, "written": "2026-12-03T10:00:00Z"},
            {**_rec("new-docs-labelled-whole", 2, 0.30, 0.34), "written": "2026-12-03T11:00:00Z"}]
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scored = []
    monkeypatch.setattr(bg, "pool_eval", lambda model, leaf, work, report: scored.append(model) or
                        (0.30 if model == "all-MiniLM-L6-v2" else 0.35))
    bg.whole_records(tmp_path, records)
    assert scored == ["all-MiniLM-L6-v2", str(tmp_path / "recipe" / "new-docs-labelled-s1" / "model")]
    new = bg.read_jsonl(records)[-1]
    assert (new["split"], new["seed"], new["tuned_test"], new["significance"]) == \
        ("new-docs-labelled-whole", 1, 0.35, rule2["significance"])
    shown = {(r["split"], r["seed"]): r["tuned_test"] for r in bg.cells(bg.read_jsonl(records))}
    assert shown[("new-docs-whole", 1)] == 0.35 and shown[("new-docs-whole", 2)] == 0.34
    bg.whole_records(tmp_path, records)  # nothing left to score
    assert len(scored) == 2


def test_pool_and_judged_score_each_shown_new_documents_run_once(tmp_path):
    records = tmp_path / "generalisation.jsonl"
    rows = [_rec("new-docs-labelled", 1, 0.30, 0.31), _rec("new-docs-labelled", 2, 0.30, 0.31),
            _rec("new-docs-labelled-pool", 1, 0.25, 0.26), _rec("new-docs", 1, 0.30, 0.29, method="peer"),
            _rec("budget-50", 1, 0.30, 0.31)]
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [(r["split"], r["seed"]) for r in bg._undiagnosed(records, "pool")] == [("new-docs-labelled", 2)]
    assert len(bg._undiagnosed(records, "judged")) == 2
    shown = {(r["method"], r["split"], r["seed"]) for r in bg.cells(rows)}
    assert ("recipe", "new-docs-pool", 1) in shown  # the recipes' scope today: shown under new-docs
