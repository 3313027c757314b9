"""What keeps a run's work from being lost: a fresh run never replaces a previous one silently,
checkpoints come every N steps and/or M minutes, and Ctrl-C saves one before stopping.
"""

from __future__ import annotations

import functools
import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from textcl.errors import ConfigError, TrainingInterrupted
from textcl.train.checkpoint import list_checkpoints

log = logging.getLogger(__name__)


def guard_previous_run(out_dir: Path, ckpt_root: Path, overwrite: bool, remove: bool = True) -> None:
    """Refuse to start a fresh run over a previous run's work (its checkpoints, or a model trained in
    `out_dir`) unless `overwrite`; with it, remove the old checkpoints (where `remove`) and say so."""
    steps = list_checkpoints(ckpt_root)
    if steps:
        what = f"checkpoints up to step {int(steps[0].name.split('-')[1])} in {ckpt_root}"
    elif (ckpt_root / "best").is_dir() or (Path(out_dir) / "textcl_config.yaml").is_file():
        what = f"a model trained by textcl in {out_dir}"
    else:
        return
    if not overwrite:
        raise ConfigError(f"train.output_dir already holds a previous run ({what}). Continue it with --resume, "
                          f"replace it with --overwrite, or set train.output_dir to a new folder")
    if remove:
        log.warning("--overwrite: replacing the previous run (%s)", what)
        shutil.rmtree(ckpt_root, ignore_errors=True)


class SaveTrigger:
    """When to write a periodic checkpoint: every `every_steps` steps and/or `every_minutes` minutes
    (None = off), or at once after a Ctrl-C (see `interruptible`). Every rank takes the same decision."""

    def __init__(self, every_steps: int | None, every_minutes: float | None, interrupt: Interrupt | None,
                 device: Any = "cpu", clock: Callable[[], float] = time.monotonic):
        self.every_steps, self.interrupt, self.device, self.clock = every_steps, interrupt, device, clock
        self.every_seconds = every_minutes * 60 if every_minutes else None
        self.last = clock()

    def check(self, step: int) -> tuple[bool, bool]:
        """(a periodic checkpoint is due, Ctrl-C was pressed) after `step`."""
        due = bool(self.every_steps and step % self.every_steps == 0) or (
            self.every_seconds is not None and self.clock() - self.last >= self.every_seconds)
        stop = bool(self.interrupt and self.interrupt.requested)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flags = torch.tensor([float(due), float(stop)], device=self.device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)  # one rank's Ctrl-C stops all
            due, stop = bool(flags[0] > 0), bool(flags[1] > 0)
        return due, stop

    def saved(self) -> None:
        self.last = self.clock()

    def stop(self, step: int, root: Path) -> TrainingInterrupted:
        """The error to raise once the interrupt's checkpoint (`root/step-N`) is written."""
        folder = Path(root) / f"step-{step:08d}"
        return TrainingInterrupted(step, str(folder) if folder.is_dir() else None)


class Interrupt:
    """A Ctrl-C request: the first SIGINT asks for a checkpoint and a stop after the current step; a
    second one stops at once (KeyboardInterrupt)."""

    requested = False

    def handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupt: saving a checkpoint after this step (Ctrl-C again to stop without saving)")


def interruptible(fn: Callable) -> Callable:
    """Give `fn` an `interrupt=Interrupt()` that SIGINT sets while `fn` runs (main thread only)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("interrupt") is not None or threading.current_thread() is not threading.main_thread():
            return fn(*args, **kwargs)
        interrupt = Interrupt()
        previous = signal.signal(signal.SIGINT, interrupt.handle)
        try:
            return fn(*args, interrupt=interrupt, **kwargs)
        finally:
            signal.signal(signal.SIGINT, previous)
    return wrapper
