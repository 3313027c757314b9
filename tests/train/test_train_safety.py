"""No lost work: a fresh run never replaces a previous one silently, checkpoints come by time as well
as by steps, Ctrl-C saves and prints one resume line, and `textcl train` puts its outputs where
`textcl run` does, with every saved path resolvable."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml
from train_helpers import make_examples, tiny_config

from textcl.cli import main
from textcl.config import load_recipe
from textcl.errors import ConfigError
from textcl.train import checkpoint as ckpt
from textcl.train import guard, loop


def _recipe(tmp_path: Path, model: Path, extra: str = "") -> Path:
    rows = [{"query": ex.query, "positive": ex.positives[0]} for ex in make_examples(24)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "recipe.yaml"
    path.write_text(f"output_dir: runs/a\nmodel: {{name_or_path: {model}, max_seq_length: 32}}\n"
                    f"data: {{train: pairs.jsonl}}\nmining: {{enabled: false}}\n"
                    f"train: {{batch_size: 4, lr: 1e-3, precision: fp32, max_steps: 4, log_every: 1}}\n{extra}")
    return path


def test_fresh_run_refuses_to_replace_a_previous_run(tiny_model_path, tmp_path, examples, caplog):
    out = tmp_path / "out"
    loop.train(tiny_config(tiny_model_path, out, "train.max_steps=2"), examples)
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    with pytest.raises(ConfigError) as err:
        loop.train(tiny_config(tiny_model_path, out, "train.max_steps=2"), examples)
    assert str(err.value) == (f"train.output_dir already holds a previous run (checkpoints up to step 2 in "
                              f"{out / 'checkpoints'}). Continue it with --resume, replace it with --overwrite, "
                              "or set train.output_dir to a new folder")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before  # nothing deleted
    result = loop.train(tiny_config(tiny_model_path, out, "train.max_steps=2"), examples, overwrite=True)
    assert result.steps == 2 and "--overwrite: replacing the previous run (checkpoints up to step 2" in caplog.text


def test_cli_refuses_then_overwrites(tiny_model_path, tmp_path, caplog):
    recipe = _recipe(tmp_path, tiny_model_path)
    assert main(["train", str(recipe)]) == 0
    assert main(["train", str(recipe)]) == 2
    assert "Continue it with --resume, replace it with --overwrite" in caplog.text
    assert main(["train", str(recipe), "--overwrite"]) == 0


def test_checkpoints_by_time_by_default():
    assert load_recipe().train.save_every_minutes == 10.0
    now = [0.0]
    trigger = guard.SaveTrigger(None, 10.0, None, clock=lambda: now[0])
    now[0] = 599.0
    assert trigger.check(7) == (False, False)
    now[0] = 600.0
    assert trigger.check(8) == (True, False)
    trigger.saved()
    assert trigger.check(9) == (False, False)
    assert guard.SaveTrigger(5, None, None).check(10) == (True, False)


def test_ctrl_c_saves_a_checkpoint_and_prints_one_resume_line(tiny_model_path, tmp_path, monkeypatch, capsys):
    recipe = _recipe(tmp_path, tiny_model_path)
    real = loop.forward_backward

    def press_ctrl_c_at_step_3(embed, batch, loss_cfg, **kwargs):
        press_ctrl_c_at_step_3.calls += 1
        if press_ctrl_c_at_step_3.calls == 3:
            os.kill(os.getpid(), signal.SIGINT)  # lands mid-step: the step finishes, then the checkpoint
        return real(embed, batch, loss_cfg, **kwargs)

    press_ctrl_c_at_step_3.calls = 0
    monkeypatch.setattr(loop, "forward_backward", press_ctrl_c_at_step_3)
    handler = signal.getsignal(signal.SIGINT)
    assert main(["train", str(recipe)]) == 130
    assert capsys.readouterr().out == f"interrupted at step 3; resume with: textcl train {recipe} --resume\n"
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    root = tmp_path / "runs" / "a" / "model" / "checkpoints"
    assert ckpt.find_resumable(root) == root / "step-00000003"
    monkeypatch.setattr(loop, "forward_backward", real)
    assert main(["train", str(recipe), "--resume"]) == 0
    assert json.loads((root / "step-00000004" / "trainer_state.json").read_text())["step"] == 4


def test_train_honours_output_dir_and_saves_resolvable_paths(tiny_model_path, tmp_path, monkeypatch):
    recipe = _recipe(tmp_path, tiny_model_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["train", str(recipe)]) == 0
    model_dir = tmp_path / "runs" / "a" / "model"  # the recipe's output_dir, as `textcl run` uses it
    assert (model_dir / "model.safetensors").is_file() and not (elsewhere / "out").exists()
    saved = yaml.safe_load((model_dir / "textcl_config.yaml").read_text())  # relative to the file's folder
    assert (saved["output_dir"], saved["train"]["output_dir"], saved["data"]["train"]) == (
        "..", ".", "../../../pairs.jsonl")
    here = load_recipe(model_dir / "textcl_config.yaml")
    monkeypatch.chdir(tmp_path)  # the saved config means the same files from any directory
    assert load_recipe(model_dir / "textcl_config.yaml") == here


def test_outputs_leak_no_local_path_and_keep_one_lean_checkpoint(tiny_model_path, tmp_path):
    recipe = _recipe(tmp_path, tiny_model_path, "eval: {}\n")
    assert main(["train", str(recipe)]) == 0
    model_dir = tmp_path / "runs" / "a" / "model"
    for name in ("README.md", "textcl_config.yaml"):
        assert str(tmp_path) not in (model_dir / name).read_text(), name
    card = (model_dir / "README.md").read_text()
    assert "base_model:" not in card and f"# Fine-tuned from {Path(tiny_model_path).name} with textcl" in card
    assert "train: ../../../pairs.jsonl" in card
    modes = {p.name: p.stat().st_mode & 0o777 for p in model_dir.iterdir() if p.is_file()}
    assert modes["model.safetensors"] == modes["README.md"] == 0o666 & ~_umask()
    steps = ckpt.list_checkpoints(model_dir / "checkpoints")
    assert [p.name for p in steps] == ["step-00000004"]  # keep_checkpoints: 1 by default
    assert not (steps[0] / "optimizer.pt").exists()  # pruned: the run has ended
    ckpt.verify_folder(steps[0])
    assert main(["train", str(recipe), "--resume"]) == 0  # an ended run still resumes (and rewrites the same model)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
