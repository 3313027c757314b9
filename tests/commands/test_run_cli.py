"""`textcl run`'s printed follow-up commands work when pasted into a shell without an activated venv."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from textcl.commands import run as run_command


def test_follow_up_command_uses_the_venv_path_when_textcl_is_not_on_path(tmp_path, monkeypatch):
    script = Path(sys.executable).parent / "textcl"
    if not script.is_file():
        pytest.skip("textcl is not installed beside this interpreter")
    monkeypatch.chdir(script.parent.parent.parent)  # e.g. the project root holding .venv/
    monkeypatch.setattr(run_command.shutil, "which", lambda name: None)
    assert run_command.cli_name() == str(Path(script.parent.parent.name) / "bin" / "textcl")
    monkeypatch.setattr(run_command.shutil, "which", lambda name: str(script))
    assert run_command.cli_name() == "textcl"
