"""`textcl run`'s printed follow-up commands work when pasted into a shell without an activated venv."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from textcl import pipeline
from textcl.cli import main
from textcl.commands import run as run_command
from textcl.errors import TrainingInterrupted


def test_follow_up_command_uses_the_venv_path_when_textcl_is_not_on_path(tmp_path, monkeypatch):
    script = Path(sys.executable).parent / "textcl"
    if not script.is_file():
        pytest.skip("textcl is not installed beside this interpreter")
    monkeypatch.chdir(script.parent.parent.parent)  # e.g. the project root holding .venv/
    monkeypatch.setattr(run_command.shutil, "which", lambda name: None)
    assert run_command.cli_name() == str(Path(script.parent.parent.name) / "bin" / "textcl")
    monkeypatch.setattr(run_command.shutil, "which", lambda name: str(script))
    assert run_command.cli_name() == "textcl"


def test_ctrl_c_in_the_train_stage_prints_one_resume_line(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(7, "out/model/checkpoints/step-00000007")

    monkeypatch.setattr(pipeline, "run_pipeline", interrupted)
    monkeypatch.setattr(run_command, "cli_name", lambda: "textcl")
    assert main(["run", "recipes/quickstart.yaml", "--set", "seed=1"]) == 130
    assert capsys.readouterr().out == "interrupted at step 7; resume with: textcl run recipes/quickstart.yaml --set seed=1\n"
