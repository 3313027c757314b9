"""bench/bench_adapter.py: records become the section's table, the lr chosen on dev (not on test)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_adapter as ba  # noqa: E402


def _rec(seed: int, lr: float, dev: float, test: float, cold: bool = False) -> dict:
    return {"seed": seed, "lr": lr, "test_before": 0.3159, "test_after": test, "dev_base": 0.30, "dev_best": dev,
            "best_step": 100, "steps": 200, "steps_per_epoch": 41, "train_s": 12.0, "eval_s": 3.0, "wall_s": 300.0 if cold
            else 60.0, "cold": cold, "precision": "fp32", "threads": 1, "command": f"textcl run x --set seed={seed}",
            "commit": "abc", "machine": "cpu, 2 cores", "load_avg_1m": [5.0, 6.0]}


def test_table_marks_the_lr_best_on_dev_and_reports_test_mean_std(tmp_path):
    rows = [_rec(42, 1e-3, 0.34, 0.35, cold=True), _rec(1, 1e-3, 0.34, 0.34), _rec(42, 1e-4, 0.35, 0.33),
            _rec(1, 1e-4, 0.35, 0.33)]
    text = "\n".join(ba.table(rows))
    assert "| 0.0001 **(chosen on dev)** | 42,1 | 35.00 ± 0.00 | 33.00 ± 0.00 | 100, 100 (41) | 12.0 | 3.0 |" in text
    assert "| 0.001 | 42,1 | 34.00 ± 0.00 | 34.50 ± 0.71 |" in text
    assert "300 s cold" in text and "all 4 runs: 480 s" in text and "load average 5.0-6.0" in text
    (tmp_path / "adapter.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert ba.load_records(tmp_path) == rows and ba.load_records(tmp_path / "none") == []
