"""Numerical and resource faults during training: clear errors, last good checkpoint kept."""

from __future__ import annotations

import errno

import pytest
import torch
from train_helpers import tiny_config

from textcl.errors import ConfigError, TrainingError
from textcl.train import checkpoint as ckpt
from textcl.train import loop
from textcl.train.finish import finish
from textcl.train.objective import forward_backward as real_forward_backward


def _poison_at(steps: set[int], counter: list[int]):
    """forward_backward that makes the loss (and so every gradient) NaN at the given steps."""
    def fb(embed, batch, loss_cfg, **kwargs):
        counter[0] += 1
        if counter[0] in steps:
            def nan_embed(texts, role):
                return embed(texts, role) * float("nan")
            return real_forward_backward(nan_embed, batch, loss_cfg, **kwargs)
        return real_forward_backward(embed, batch, loss_cfg, **kwargs)
    return fb


def test_nan_stops_with_step_and_keeps_last_good_checkpoint(tiny_model_path, tmp_path, examples, monkeypatch):
    monkeypatch.setattr(loop, "forward_backward", _poison_at({3}, [0]))
    out = tmp_path / "out"
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\).* at step 3 .*step-00000002"):
        loop.train(tiny_config(tiny_model_path, out), examples)
    assert ckpt.find_resumable(out / "checkpoints") == out / "checkpoints" / "step-00000002"
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["step-00000002"]


def test_nan_policy_skip_counts_and_leaves_weights_untouched(tiny_model_path, tmp_path, examples, monkeypatch):
    monkeypatch.setattr(loop, "forward_backward", _poison_at({2}, [0]))
    seen = {}
    trainer = loop.set_up(tiny_config(tiny_model_path, tmp_path / "out", "train.nan_policy=skip",
                                      "train.max_steps=3"), examples)

    def snapshot(event):  # weights right after step 1 and after the poisoned step 2 must match
        seen[event["step"]] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    loop.fit(trainer, callbacks=[snapshot])
    result = finish(trainer)
    assert result.skipped_steps == 1 and result.steps == 3
    assert all(torch.equal(seen[1][k], seen[2][k]) for k in seen[1])
    assert any(not torch.equal(seen[2][k], seen[3][k]) for k in seen[2])
    assert "skipped non-finite: 1" in (tmp_path / "out" / "README.md").read_text()


def test_out_of_memory_suggests_gradcache_or_smaller_batch(tiny_model_path, tmp_path, examples, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loop, "forward_backward", oom)
    with pytest.raises(TrainingError, match=r"out of memory at step 1 .*train.gradcache_chunk_size.*smaller "
                                            r"train.batch_size"):
        loop.train(tiny_config(tiny_model_path, tmp_path / "out"), examples)


def test_disk_full_during_training_keeps_previous_checkpoint(tiny_model_path, tmp_path, examples, monkeypatch):
    calls = [0]
    real_save = ckpt.save_safetensors_model

    def save(model, path, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:  # the second checkpoint (step 4) hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(model, path, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_safetensors_model", save)
    out = tmp_path / "out"
    with pytest.raises(TrainingError, match="could not write checkpoint .*step-00000004: no space left"):
        loop.train(tiny_config(tiny_model_path, out), examples)
    assert ckpt.find_resumable(out / "checkpoints") == out / "checkpoints" / "step-00000002"
    assert not list((out / "checkpoints").glob(".tmp-*"))


def test_resume_refuses_changed_settings(tiny_model_path, tmp_path, examples):
    out = tmp_path / "out"
    loop.train(tiny_config(tiny_model_path, out, "train.max_steps=2"), examples)
    with pytest.raises(ConfigError, match=r"settings changed \(batch_size: 4 -> 8"):
        loop.train(tiny_config(tiny_model_path, out, "train.max_steps=2", "train.batch_size=8"), examples,
                   resume=True)
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        loop.train(tiny_config(tiny_model_path, tmp_path / "empty"), examples, resume=True)


def test_resume_settings_are_compared_as_saved(tiny_model_path, tmp_path):
    """Equal settings resume; a changed one, or one the checkpoint lacks, is refused naming the key."""
    current = ckpt.resume_settings(tiny_config(tiny_model_path, tmp_path), 10, 1)
    ckpt.check_resume_settings(dict(current), current, tmp_path)  # no error
    decayed = ckpt.resume_settings(tiny_config(tiny_model_path, tmp_path, "train.layer_lr_decay=0.8"), 10, 1)
    with pytest.raises(ConfigError, match=r"settings changed \(layer_lr_decay: 1.0 -> 0.8\)"):
        ckpt.check_resume_settings(current, decayed, tmp_path)
    lacking = {k: v for k, v in current.items() if k != "layer_lr_decay"}
    with pytest.raises(ConfigError, match=r"settings changed \(layer_lr_decay: None -> 1.0\)"):
        ckpt.check_resume_settings(lacking, current, tmp_path)
