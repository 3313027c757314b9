"""bench/bench_full_corpus.py: a finished run folder (or one stopped by hand: its last checkpoint) becomes a
record with its settings and dev curve, and the records become the section's table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_full_corpus as bfc  # noqa: E402


def _eval(step: int, dev: float) -> dict:
    return {"step": step, "metric": "nfcorpus/ndcg@10", "eval": {"dev": {"nfcorpus/ndcg@10": dev}}}


def _run(folder: Path, finished: bool) -> Path:
    folder.mkdir()
    train = {"tune": "both", "lr": 1e-5, "corpus_refresh_every": 5, "corpus_positives": "sample", "max_steps": 20}
    (folder / "config.yaml").write_text(yaml.safe_dump({"seed": 42, "model": {"name_or_path": "base"},
                                                        "train": train}))
    history = [_eval(0, 0.3021), {"step": 10, "loss": 7.0}, _eval(20, 0.2996)]
    if finished:
        (folder / "history.json").write_text(json.dumps(history))
        (folder / "summary.json").write_text(json.dumps({"stages": {"train": {"seconds": 123.4}},
                                                         "train": {"steps": 20}, "after": {"nfcorpus/ndcg@10": 0.3159}}))
    else:
        ckpt = folder / "model" / "checkpoints" / "step-00000020"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text(json.dumps({"history": history}))
    return folder


def test_finished_and_stopped_runs_become_rows_with_their_dev_curves(tmp_path):
    done = bfc.collect("refresh 5", _run(tmp_path / "a", True), "idle")
    stopped = bfc.collect("stopped", _run(tmp_path / "b", False), "")
    assert done["dev"] == [[0, 0.3021], [20, 0.2996]] == stopped["dev"]
    assert done["settings"]["corpus_refresh_every"] == 5 and done["train_s"] == 123.4 and stopped["train_s"] is None
    table = "\n".join(bfc.section([done, stopped]))
    assert "| refresh 5 | both | 1e-05 | 5 | 20 | base | 0: 30.21, 20: 29.96 | 31.59 | 123 | idle |" in table
    assert "| stopped | both | 1e-05 | 5 | 20 | base | 0: 30.21, 20: 29.96 | — | — |  |" in table
