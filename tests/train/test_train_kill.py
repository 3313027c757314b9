"""SIGKILL in the middle of an epoch, while a checkpoint is being written; resume; bitwise equal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from train_helpers import make_examples, tiny_config, weights

from textcl.train import checkpoint as ckpt
from textcl.train.loop import train

CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {helpers!r})
    from train_helpers import make_examples, tiny_config
    from textcl.train import checkpoint as ckpt
    from textcl.train.loop import train

    real = ckpt.save_safetensors_model
    def save(model, path, *args, **kwargs):
        real(model, path, *args, **kwargs)
        if "step-00000006" in str(path):  # weights of checkpoint 6 are half-way to disk: die now
            os.kill(os.getpid(), signal.SIGKILL)
    ckpt.save_safetensors_model = save
    train(tiny_config({model!r}, {out!r}, "train.max_steps=8"), make_examples(40))
""")


def test_sigkill_mid_epoch_then_resume_is_bitwise_equal(tiny_model_path, tmp_path):
    examples = make_examples(40)  # 10 batches per epoch: steps 4-6 are mid-epoch
    killed = tmp_path / "killed"
    code = CHILD.format(helpers=str(Path(__file__).parent), model=str(tiny_model_path), out=str(killed))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    root = killed / "checkpoints"
    assert list(root.glob(".tmp-step-00000006-*")), "the kill should land while step 6 is being written"
    assert ckpt.find_resumable(root) == root / "step-00000004"
    assert not (killed / "model.safetensors").exists()

    resumed = train(tiny_config(tiny_model_path, killed, "train.max_steps=8"), examples, resume=True)
    straight = train(tiny_config(tiny_model_path, tmp_path / "straight", "train.max_steps=8"), examples)
    assert resumed.steps == straight.steps == 8
    a, b = weights(tmp_path / "straight"), weights(killed)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not list(root.glob(".tmp-*"))  # stale temporary folders are cleaned on the next save
