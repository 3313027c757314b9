"""Checkpoint files: atomic replace, checksum verification, ENOSPC safety, RNG round trip."""

from __future__ import annotations

import errno
import random

import numpy as np
import pytest
import torch

from textcl.errors import TrainingError
from textcl.train import checkpoint as ckpt


def _parts():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))  # before opt.step(), as training does
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def test_save_load_roundtrip_restores_everything(tmp_path):
    model, opt, sched = _parts()
    state = ckpt.TrainerState(step=7, epoch=1, batch_in_epoch=3, best_metric=0.5, history=[{"step": 7}])
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    folder = ckpt.save_checkpoint(tmp_path / "step-00000007", model=model, optimizer=opt, scheduler=sched,
                                  state=state)
    expect = (random.random(), np.random.rand(), torch.rand(1).item())
    assert (tmp_path / "latest").read_text().strip() == "step-00000007"

    model2, opt2, sched2 = _parts()
    with torch.no_grad():
        for p in model2.parameters():
            p.add_(1.0)
    loaded = ckpt.load_checkpoint(folder, model=model2, optimizer=opt2, scheduler=sched2)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expect
    assert loaded.step == 7 and loaded.batch_in_epoch == 3 and loaded.history == [{"step": 7}]
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    assert opt2.state_dict()["state"][0]["exp_avg"].equal(opt.state_dict()["state"][0]["exp_avg"])
    assert sched2.state_dict()["last_epoch"] == sched.state_dict()["last_epoch"]


def test_corrupted_checkpoint_is_rejected_and_previous_one_used(tmp_path):
    model, opt, sched = _parts()
    good = ckpt.save_checkpoint(tmp_path / "step-00000002", model=model, optimizer=opt, scheduler=sched,
                                state=ckpt.TrainerState(step=2))
    bad = ckpt.save_checkpoint(tmp_path / "step-00000004", model=model, optimizer=opt, scheduler=sched,
                               state=ckpt.TrainerState(step=4))
    with open(bad / "optimizer.pt", "r+b") as fh:  # flip one byte
        fh.seek(10)
        byte = fh.read(1)
        fh.seek(10)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(TrainingError, match="checksum mismatch for 'optimizer.pt'"):
        ckpt.verify_folder(bad)
    assert ckpt.find_resumable(tmp_path) == good


def test_half_written_checkpoint_is_never_resumed(tmp_path):
    model, opt, sched = _parts()
    good = ckpt.save_checkpoint(tmp_path / "step-00000002", model=model, optimizer=opt, scheduler=sched,
                                state=ckpt.TrainerState(step=2))
    # What a kill during writing leaves: a temporary folder, and (worst case) a renamed folder
    # without checksums.json (impossible with atomic_folder, but resume must not trust it either).
    (tmp_path / ".tmp-step-00000004-123").mkdir()
    (tmp_path / ".tmp-step-00000004-123" / "model.safetensors").write_bytes(b"partial")
    (tmp_path / "step-00000006").mkdir()
    (tmp_path / "step-00000006" / "model.safetensors").write_bytes(b"partial")
    assert ckpt.find_resumable(tmp_path) == good


def test_disk_full_while_saving_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = _parts()
    good = ckpt.save_checkpoint(tmp_path / "step-00000002", model=model, optimizer=opt, scheduler=sched,
                                state=ckpt.TrainerState(step=2))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full)
    with pytest.raises(TrainingError, match="no space left on device.*previous checkpoint is intact"):
        ckpt.save_checkpoint(tmp_path / "step-00000004", model=model, optimizer=opt, scheduler=sched,
                             state=ckpt.TrainerState(step=4))
    assert not (tmp_path / "step-00000004").exists()
    assert not list(tmp_path.glob(".tmp-*"))
    ckpt.verify_folder(good)
    assert ckpt.find_resumable(tmp_path) == good


def test_replacing_a_folder_is_atomic_on_failure(tmp_path):
    target = tmp_path / "best"
    ckpt.atomic_folder(target, lambda tmp: (tmp / "a.txt").write_text("one"))

    def broken(tmp):
        (tmp / "a.txt").write_text("two")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(TrainingError, match="no space left"):
        ckpt.atomic_folder(target, broken)
    assert (target / "a.txt").read_text() == "one"
    ckpt.verify_folder(target)


def test_optimizer_file_is_loaded_with_weights_only(tmp_path, monkeypatch):
    model, opt, sched = _parts()
    folder = ckpt.save_checkpoint(tmp_path / "step-00000001", model=model, optimizer=opt, scheduler=sched,
                                  state=ckpt.TrainerState(step=1))
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "load", spy)
    ckpt.load_checkpoint(folder, model=model, optimizer=opt, scheduler=sched)
    assert calls and all(c is True for c in calls)


def test_prune_keeps_newest(tmp_path):
    model, opt, sched = _parts()
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path / f"step-{step:08d}", model=model, optimizer=opt, scheduler=sched,
                             state=ckpt.TrainerState(step=step))
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000004", "step-00000003"]
