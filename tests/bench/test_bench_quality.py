"""bench/bench_quality.py: settings are chosen on dev (never test), grids are valid recipes, records table."""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_quality as bq  # noqa: E402

from textcl.config import load_recipe  # noqa: E402


def _literal(text: str):
    """What a grid value means: null/true/false, an int, a float, else the text."""
    if text in ("null", "true", "false"):
        return {"null": None, "true": True, "false": False}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _row(label: str, dev: float, test: float, seed: int = 42, task: str = "nfcorpus", impl: str = "textcl") -> dict:
    e = bq.experiment(task, impl, label, seed, [f"train.lr={dev}"])
    return {**e, "best_dev": dev, "best_step": 10, "steps": 20, "wall_s": 1.0,
            "base": {bq.NF: 0.3, bq.STS: 0.8}, "test": {bq.NF: test, bq.STS: 0.8}}


def test_headline_setting_is_chosen_on_dev_not_test():
    rows = {r["id"]: r for r in [_row("a", dev=0.30, test=0.40), _row("b", dev=0.32, test=0.31),
                                 _row("c", dev=0.31, test=0.39, seed=1)]}  # other seeds never select
    assert bq.best_setting(rows, "nfcorpus")[0] == "b"
    assert bq.best_setting(rows, "nfcorpus", {"nfcorpus": "a"})[0] == "a"  # --setting forces one
    assert bq.best_setting(rows, "stsb") is None


@pytest.mark.parametrize("task,grid", [("nfcorpus", bq.NF_GRID), ("nfcorpus", bq.NF_EXTRA), ("stsb", bq.STS_GRID)])
def test_every_grid_setting_is_a_valid_recipe_override(task, grid):
    recipe = ROOT / "recipes" / ("nfcorpus.yaml" if task == "nfcorpus" else "stsb.yaml")
    base = bq.NF_BASE if task == "nfcorpus" else bq.STS_BASE
    for label, sets in grid.items():
        cfg = load_recipe(recipe, [*base, *sets])  # unknown keys / bad types raise ConfigError
        for key, value in (s.split("=", 1) for s in sets):  # and the value set is the value used
            section, name = key.split(".")
            assert getattr(getattr(cfg, section), name) == _literal(value), (label, key)
    assert bq.budget(bq.NF_GRID["pair rows, 1200 steps, lr 5e-5"]) == {"steps": 1200, "batch_size": 32, "lr": 5e-5}
    assert bq.budget(["train.epochs=4"])["steps"] == 4 * (2590 // 32)  # from the pinned base, not the recipe
    assert load_recipe(ROOT / "recipes" / "nfcorpus.yaml", bq.NF_BASE).mining.rows == "query"


def test_plan_runs_the_dev_winner_with_more_seeds_and_st_on_the_same_budget():
    args = argparse.Namespace(mode="full", tasks=["nfcorpus"], forced={}, seeds=None)
    stage1, stage2 = bq.plan(args, {})
    assert {e["label"] for e in stage1} == set(bq.NF_GRID) and not stage2
    winner = bq.experiment("nfcorpus", "textcl", "pair rows, 1200 steps, lr 5e-5", 42,
                           bq.NF_GRID["pair rows, 1200 steps, lr 5e-5"])
    rows = {winner["id"]: {**winner, "best_dev": 0.33}}
    _, stage2 = bq.plan(args, rows)
    assert sorted(e["seed"] for e in stage2 if e["impl"] == "textcl") == [1, 2]
    st = [e for e in stage2 if e["impl"] != "textcl"]
    assert sorted(e["seed"] for e in st) == [1, 2, 42]
    assert all(e["budget"] == {"steps": 1200, "batch_size": 32, "lr": 5e-5} for e in st)


def test_records_assemble_into_mean_and_std_tables(tmp_path):
    rows = [_row("b", dev=0.32, test=t, seed=s) for s, t in ((42, 0.30), (1, 0.32), (2, 0.34))]
    rows += [_row("a", dev=0.30, test=0.50), {**_row("a", 0.3, 0.3, seed=1), "error": "stopped at --time-limit"}]
    (tmp_path / "quality-x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "quality-x.meta.json").write_text(json.dumps({"machine": "M", "title": "T"}))
    out = tmp_path / "q.md"
    subprocess.run([sys.executable, str(ROOT / "bench" / "bench_quality.py"), "--records", str(tmp_path),
                    "--out", str(out)], check=True, capture_output=True)
    text = out.read_text()
    assert "## Fine-tuned quality: T" in text and "Machine: M." in text
    assert "| nfcorpus | textcl: b | 42,1,2 | 32.00 ± 2.00 | 30.00 |" in text  # dev winner b, not test-best a
    assert "stopped at --time-limit" in text


def test_committed_records_table():
    """The recorded GPU run names the dev-best settings (what the recipes use)."""
    rows = bq.load_results(ROOT / "bench" / "records" / "quality-1-h200.jsonl")
    assert bq.best_setting(rows, "nfcorpus")[0] == "pair rows, 1200 steps, lr 5e-5"
    assert bq.best_setting(rows, "stsb")[0] == "4 epochs, batch 32, lr 1e-4"
    nf = load_recipe(ROOT / "recipes" / "nfcorpus.yaml")
    assert (nf.mining.rows, nf.train.max_steps, nf.train.lr) == ("pair", 1200, 5e-5)
    sts = load_recipe(ROOT / "recipes" / "stsb.yaml")
    assert (sts.train.epochs, sts.train.batch_size, sts.train.lr) == (4, 32, 1e-4)


def test_cpu_recipe_is_the_recorded_cpu_budget_setting():
    """recipes/nfcorpus-cpu.yaml trains exactly what the recorded CPU run measured (paths aside)."""
    from dataclasses import asdict
    label = "CPU budget: 160 steps, lr 5e-5, symmetric loss"
    rows = bq.load_results(ROOT / "bench" / "records" / "quality-3-cpu-nfcorpus.jsonl")
    assert bq.best_setting(rows, "nfcorpus", {"nfcorpus": label})[0] == label
    bench = load_recipe(ROOT / "recipes" / "nfcorpus.yaml", [*bq.NF_BASE, *bq.NF_EXTRA[label]])
    recipe = load_recipe(ROOT / "recipes" / "nfcorpus-cpu.yaml")
    for section in ("model", "mining", "loss", "train"):
        a, b = asdict(getattr(bench, section)), asdict(getattr(recipe, section))
        diff = {k for k in a if a[k] != b[k]} - {"output", "output_dir"}
        assert not diff, (section, diff)


@pytest.mark.slow
def test_quick_mode_end_to_end_on_tiny_data(tmp_path, tiny_model_path, shared_data):
    """Both libraries train and are scored through the real code paths (tiny model, 400 documents)."""
    data = tmp_path / "data"
    (data / "stsbenchmark").mkdir(parents=True)
    (data / "nfcorpus" / "qrels").mkdir(parents=True)
    for name in ("sts-train.csv", "sts-dev.csv", "sts-test.csv"):
        lines = (shared_data / "stsbenchmark" / name).read_text().splitlines(True)[:200]
        (data / "stsbenchmark" / name).write_text("".join(lines))
    docs = [json.loads(x) for x in gzip.open(shared_data / "nfcorpus" / "corpus.jsonl.gz", "rt")][:400]
    ids = {d["_id"] for d in docs}
    with gzip.open(data / "nfcorpus" / "corpus.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(d) + "\n" for d in docs)
    qids = set()
    for split, name in (("train", "train.tsv.gz"), ("dev", "dev.tsv"), ("test", "test.tsv")):
        src = shared_data / "nfcorpus" / "qrels" / name
        lines = (gzip.open(src, "rt") if name.endswith(".gz") else open(src)).read().splitlines()
        keep = [lines[0]] + [x for x in lines[1:] if x.split("\t")[1] in ids]
        qids |= {x.split("\t")[0] for x in keep[1:]}
        (data / "nfcorpus" / "qrels" / f"{split}.tsv").write_text("\n".join(keep) + "\n")
    with open(data / "nfcorpus" / "queries.jsonl", "w") as f:
        f.writelines(x for x in (shared_data / "nfcorpus" / "queries.jsonl").read_text().splitlines(True) if json.loads(x)["_id"] in qids)
    out = tmp_path / "q.md"
    subprocess.run([sys.executable, str(ROOT / "bench" / "bench_quality.py"), "--mode", "quick", "--jobs", "2",
                    "--data", str(data), "--model", str(tiny_model_path), "--results", str(tmp_path / "res"),
                    "--out", str(out), "--set", "model.max_seq_length=64"], check=True, capture_output=True)
    rows = bq.load_results(tmp_path / "res" / "results.jsonl")
    assert {(r["task"], r["impl"]) for r in rows.values()} == {
        ("nfcorpus", "textcl"), ("nfcorpus", "sentence-transformers"), ("stsb", "textcl"),
        ("stsb", "sentence-transformers")}
    for r in rows.values():
        if r["impl"] != "textcl" and r["task"] == "nfcorpus":  # ST trained the quick plan's budget exactly
            assert r["steps"] == 6 and r["budget"] == {"steps": 6, "batch_size": 32, "lr": 2e-5}
    textcl_bases = {json.dumps(r["base"], sort_keys=True) for r in rows.values() if r["impl"] == "textcl"
                    and r["task"] == "nfcorpus"}
    assert len(textcl_bases) == 1  # every NFCorpus run starts from the same model, scored once the same way


def test_run_all_assemble_runs_nothing_and_regenerates_the_tables_from_records(monkeypatch):
    """`run_all.py --assemble` starts no bench and hands BENCHMARKS.md to bench/tables.py (records alone)."""
    import run_all
    calls = []
    monkeypatch.setattr(run_all.subprocess, "call", lambda *a, **k: calls.append(a) or 0)
    monkeypatch.setattr(run_all.tables, "main", lambda argv: calls.append(("tables", argv)) or 0)
    monkeypatch.setattr(sys, "argv", ["run_all.py", "--assemble"])
    assert run_all.main() == 0
    assert calls == [("tables", [])]
