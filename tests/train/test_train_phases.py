"""The training phases on their own, on the tiny BERT: set-up, one step, evaluate/select (best checkpoint,
early stopping), WiSE-FT mixing with the base model, and finish."""

from __future__ import annotations

import logging

import pytest
import torch
from train_helpers import tiny_config, weights

from textcl.errors import TrainingError
from textcl.soup import interpolate
from textcl.train.finish import finish
from textcl.train.loop import set_up
from textcl.train.selection import evaluate, mix_with_base, select, stop_early
from textcl.train.step import train_step

MOVING = ("train.warmup_ratio=0",)  # the first step already has the full learning rate


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_weights(saved: dict, state: dict, close: bool = False) -> bool:
    """A saved model folder's transformer weights (`embeddings...`) against a SentenceTransformer state
    dict (`0.<transformer attribute>.embeddings...`)."""
    tower = {k.split(".", 2)[2]: v for k, v in state.items() if k.startswith("0.") and k.count(".") >= 2}
    assert saved.keys() <= tower.keys() and saved
    same = torch.allclose if close else torch.equal
    return all(same(v, tower[k]) for k, v in saved.items())


def test_set_up_and_steps_advance_the_data_position(tiny_model_path, tmp_path, examples):
    trainer = set_up(tiny_config(tiny_model_path, tmp_path / "out", "train.max_steps=7", *MOVING), examples)
    base = _state(trainer.model)
    assert trainer.total_steps == 7 and trainer.state.step == 0 and trainer.evaluate_dev is None
    batches = trainer.make_epoch(0)
    assert len(batches) == 6  # 24 examples, batch 4
    first = train_step(trainer, batches)
    assert first.finite and first.examples == 4 and not first.end_of_epoch and not first.last_step
    assert (trainer.state.step, trainer.state.epoch, trainer.state.batch_in_epoch) == (1, 0, 1)
    assert first.lr == max(trainer.scheduler.get_last_lr()) and len(trainer.step_times) == 1
    assert any(not torch.equal(base[k], v) for k, v in trainer.model.state_dict().items())
    for _ in range(5):
        last = train_step(trainer, batches)
    assert last.end_of_epoch and (trainer.state.step, trainer.state.epoch, trainer.state.batch_in_epoch) == (6, 1, 0)
    assert train_step(trainer, trainer.make_epoch(1)).last_step


def test_select_keeps_the_best_weights_and_stops_after_patience(tiny_model_path, tmp_path, examples):
    scores = iter([0.2, 0.5, 0.4, 0.3])
    trainer = set_up(tiny_config(tiny_model_path, tmp_path / "out", "train.early_stopping_patience=2", *MOVING),
                     examples,
                     dev=lambda encode: {"toy/ndcg@10": next(scores)})
    best = trainer.ckpt_root / "best"
    batches = trainer.make_epoch(0)
    select(trainer, 0, evaluate(trainer, 0))
    assert (trainer.state.best_step, trainer.state.best_metric) == (0, 0.2) and best.is_dir()
    train_step(trainer, batches)
    select(trainer, 1, evaluate(trainer, 1))  # improved: checkpoints/best now holds the step-1 weights
    step1 = _state(trainer.model)
    assert trainer.state.best_step == 1 and not stop_early(trainer)
    for step in (2, 3):
        train_step(trainer, batches)
        select(trainer, step, evaluate(trainer, step))
    assert trainer.state.evals_without_improvement == 2 and stop_early(trainer)
    assert trainer.state.history[-1] == {"step": 3, "early_stopped": True}
    assert [h["metric"] for h in trainer.state.history if "eval" in h] == ["toy/ndcg@10"] * 4
    assert _same_weights(weights(best), step1) and not _same_weights(weights(best), _state(trainer.model))


def test_mix_with_base_replaces_the_best_checkpoint_when_a_mix_scores_higher(tiny_model_path, tmp_path, examples):
    scores = iter([0.1, 0.5, 0.4, 0.7])  # step 0, step 1 (best), then the mixes 0.25 and 0.5
    trainer = set_up(tiny_config(tiny_model_path, tmp_path / "out", "train.interpolate_base=[0.5, 0.25]",
                                 *MOVING),
                     examples, dev=lambda encode: {"toy/ndcg@10": next(scores)})
    base = _state(trainer.model)
    select(trainer, 0, evaluate(trainer, 0))
    train_step(trainer, trainer.make_epoch(0))
    select(trainer, 1, evaluate(trainer, 1))
    tuned = _state(trainer.model)
    assert any(not torch.equal(base[k], v) for k, v in tuned.items())
    mix_with_base(trainer)
    assert trainer.state.best_interpolation == 0.5 and trainer.state.best_metric == 0.7
    trials = [(h["interpolation"], h["step"]) for h in trainer.state.history if "interpolation" in h]
    assert trials == [(0.25, 1), (0.5, 1)]  # each mix is recorded at the step of the checkpoint it mixes
    assert _same_weights(weights(trainer.ckpt_root / "best"), interpolate(base, tuned, 0.5), close=True)
    result = finish(trainer)
    assert result.after == {"dev": {"toy/ndcg@10": 0.7}, "ood": {}}  # the mix's evaluation


def test_mix_with_base_needs_a_dev_evaluator_and_an_improvement(tiny_model_path, tmp_path, examples, caplog):
    caplog.set_level(logging.INFO)
    trainer = set_up(tiny_config(tiny_model_path, tmp_path / "a", "train.interpolate_base=[0.5]"), examples)
    mix_with_base(trainer)
    assert "no dev evaluator: interpolation skipped" in caplog.text
    trainer = set_up(tiny_config(tiny_model_path, tmp_path / "b", "train.interpolate_base=[0.5]"), examples,
                     dev=lambda encode: {"toy/ndcg@10": 0.3})
    select(trainer, 0, evaluate(trainer, 0))
    mix_with_base(trainer)
    assert "the base model scored best on dev" in caplog.text and trainer.state.best_interpolation is None


def test_finish_without_a_dev_evaluator_writes_the_last_weights(tiny_model_path, tmp_path, examples):
    out = tmp_path / "out"
    trainer = set_up(tiny_config(tiny_model_path, out, "train.max_steps=2", *MOVING), examples,
                     provenance={"data": "x"})
    batches = trainer.make_epoch(0)
    train_step(trainer, batches)
    train_step(trainer, batches)
    last = _state(trainer.model)
    result = finish(trainer)
    assert (result.steps, result.best_checkpoint, result.before, result.stopped_early) == (2, None, {}, False)
    assert _same_weights(weights(out), last)
    assert (out / "README.md").is_file() and (out / "textcl_config.yaml").is_file()


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_a_non_finite_step_stops_or_is_counted(tiny_model_path, tmp_path, examples, policy):
    trainer = set_up(tiny_config(tiny_model_path, tmp_path / "out", f"train.nan_policy={policy}"), examples)
    batches = trainer.make_epoch(0)
    assert train_step(trainer, batches).finite  # a normal first step (the optimizer has stepped once)
    trainer.run_loss = lambda batch, step: float("nan")  # the next step sees a NaN loss and no gradient
    before = _state(trainer.model)
    if policy == "stop":
        with pytest.raises(TrainingError, match=r"non-finite loss \(nan\).* at step 2 \(epoch 0, batch 1\)"):
            train_step(trainer, batches)
        return
    result = train_step(trainer, batches)
    assert not result.finite and trainer.state.skipped_steps == 1 and trainer.state.step == 2
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
