"""bench/bench_towers.py: the table shows the runs of the corpus scope the recipes set today once there are any,
and picks LoRA's lr among those runs only."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_towers as bt  # noqa: E402


def _run(method: str, seed: int, test: float, scope: str | None, lr: float | None = None, dev: float = 0.33) -> dict:
    return {"method": method, "seed": seed, "test_before": 0.30, "test_after": test, "dev_before": 0.29,
            "dev_after": dev, "train_s": 10.0, "output_bytes": 2_000_000, "transformer_bytes": 1_000_000,
            "lora_bytes": None, "threads": 2, "load_avg_1m": [1.5, 1.6],
            "run_command": f"textcl run recipes/x.yaml --set seed={seed}",
            **({"lora_lr": lr} if lr is not None else {}), **({"corpus_scope": scope} if scope else {})}


def test_table_shows_todays_scope_and_chooses_loras_lr_among_those_runs():
    assert bt.SCOPE == "labelled"
    old = [_run("adapter", 42, 0.34, None), _run("lora", 42, 0.36, None, lr=0.01, dev=0.40)]
    new = [_run("adapter", 42, 0.35, "labelled"), _run("adapter", 1, 0.37, "labelled"),
           _run("lora", 42, 0.31, "labelled", lr=0.001, dev=0.31), _run("lora", 42, 0.32, "labelled", lr=0.003, dev=0.32)]
    lines = bt.table(old + new)
    adapter = next(x for x in lines if x.startswith("| linear adapter"))
    assert "| 42,1 | 36.00 ± 1.41 |" in adapter  # the scope-all adapter run is not among them
    lora = next(x for x in lines if x.startswith("| LoRA"))
    assert "lr 0.003 chosen on dev" in lora and "| 32.00 |" in lora  # 0.01 (best dev, but scope all) is not a choice
    assert not any("trained with `train.corpus_scope: all`" in x for x in lines)
    assert any("trained with `train.corpus_scope: all`" in x for x in bt.table(old))  # only old runs: shown, and said
