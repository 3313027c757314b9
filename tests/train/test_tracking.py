"""train.report_to: a short run with TensorBoard writes an event file whose scalars (loss, lr, grad norm per log
step; every dev and OOD metric per evaluation) are read back and equal history.json's; a tracker whose package
is missing, or an unknown one, is an error that says what to do; turning a tracker on re-trains nothing."""

from __future__ import annotations

import importlib.util

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from train_helpers import tiny_config

from textcl.config import TrainConfig
from textcl.errors import ConfigError
from textcl.pipeline.stages import train_inputs
from textcl.train import tracking
from textcl.train.loop import train


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    files = list(folder.rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file under {folder}"
    acc = EventAccumulator(str(files[0].parent))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_event_file_holds_the_training_and_evaluation_scalars(tiny_model_path, tmp_path, examples):
    dev_scores = iter([0.1, 0.2, 0.3])
    out = tmp_path / "out"
    config = tiny_config(tiny_model_path, out, "train.report_to=[tensorboard]", "train.max_steps=4",
                         "train.eval_every=2")
    result = train(config, examples, dev=lambda encode: {"toy/ndcg@10": next(dev_scores)},
                   ood=lambda encode: {"far/spearman_cosine": 0.5})
    got = scalars(out / "runs")
    logged = [h for h in result.history if "loss" in h]
    for key in ("loss", "lr", "grad_norm"):
        assert [s for s, _ in got[f"train/{key}"]] == [1, 2, 3, 4]
        assert [v for _, v in got[f"train/{key}"]] == pytest.approx([h[key] for h in logged], rel=1e-6)
    assert got["dev/toy/ndcg@10"] == [(0, pytest.approx(0.1)), (2, pytest.approx(0.2)), (4, pytest.approx(0.3))]
    assert [s for s, _ in got["ood/far/spearman_cosine"]] == [0, 2, 4]


def test_no_tracker_writes_no_event_file(tiny_model_path, tmp_path, examples):
    out = tmp_path / "out"
    train(tiny_config(tiny_model_path, out, "train.max_steps=2"), examples)
    assert not (out / "runs").exists()


def test_a_missing_tracker_package_names_the_extra(tiny_model_path, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    config = tiny_config(tiny_model_path, tmp_path / "out", "train.report_to=[tensorboard, wandb]")
    with pytest.raises(ConfigError, match=r"train.report_to: wandb is not installed; install it with pip install "
                                          r"'textcl\[wandb\]'"):
        tracking.trackers(config)


def test_an_unknown_tracker_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train.report_to: unknown tracker\(s\) \['neptune'\]; use any of "
                                          r"\['tensorboard', 'mlflow', 'wandb'\]"):
        TrainConfig(report_to=["neptune"])


def test_report_to_is_not_part_of_the_train_stage_hash(tiny_model_path, tmp_path):
    plain = tiny_config(tiny_model_path, tmp_path / "out")
    tracked = tiny_config(tiny_model_path, tmp_path / "out", "train.report_to=[tensorboard]")
    assert train_inputs(plain) == train_inputs(tracked)
