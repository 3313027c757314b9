"""The train stage under `launcher:` (e.g. `accelerate launch --multi_gpu`): training runs in the
processes the launcher starts (`python -m textcl.commands.train_worker`); rank 0 writes the result.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from textcl.config import RunConfig, save_config
from textcl.errors import TrainingError

log = logging.getLogger(__name__)

WORKER = "textcl.commands.train_worker"


def launch_training(out: Path, cfg: RunConfig, resume: bool) -> dict:
    """Train in subprocesses started by `cfg.launcher`; returns the TrainResult as a dict."""
    config_path, result_path = out / "stages" / "train_config.yaml", out / "stages" / "train_result.json"
    save_config(cfg, config_path)
    result_path.unlink(missing_ok=True)
    cmd = [*resolve_launcher(shlex.split(cfg.launcher)), "-m", WORKER, str(config_path), str(result_path)]
    cmd += ["--resume"] if resume else []
    log.info("train: launching %s", " ".join(cmd))
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0 or not result_path.is_file():
        raise TrainingError(f"the training processes failed (exit code {proc.returncode}): {' '.join(cmd)}; "
                            "their log is above. Re-running `textcl run` resumes from the last checkpoint")
    return json.loads(result_path.read_text(encoding="utf-8"))


def resolve_launcher(argv: list[str]) -> list[str]:
    """"python" is this interpreter; "accelerate" the one next to it when it is not on PATH (a venv)."""
    if argv and argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    beside = Path(sys.executable).parent / argv[0] if argv else None
    if argv and shutil.which(argv[0]) is None and beside is not None and beside.is_file():
        return [str(beside), *argv[1:]]
    return argv
