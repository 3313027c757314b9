"""Experiment tracking through accelerate's trackers (`train.report_to`): the packages each needs, the flat
run configuration they record, and the scalars of a log step and of an evaluation. history.json is kept
whatever is tracked; with `report_to: []` every call here is a no-op.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict
from pathlib import Path
from typing import Any

from textcl.config import TRACKERS, RunConfig
from textcl.errors import ConfigError

PROJECT = "textcl"  # accelerate's project name: TensorBoard events go to <output_dir>/runs/textcl


def trackers(config: RunConfig) -> tuple[list[str] | None, str]:
    """(accelerate's `log_with`, its `project_dir`) for `train.report_to`; a tracker whose package is not
    installed is an error naming the extra that installs it."""
    report_to = list(config.train.report_to)
    missing = [t for t in report_to if importlib.util.find_spec(t) is None]
    if missing:
        extras = ",".join(TRACKERS[t] for t in missing)
        raise ConfigError(f"train.report_to: {', '.join(missing)} is not installed; install it with "
                          f"pip install 'textcl[{extras}]' (or remove it from train.report_to)")
    return report_to or None, str(Path(config.train.output_dir) / "runs")


def start(accelerator: Any, config: RunConfig) -> None:
    """Open the trackers (main process) with the run's settings as flat hyper-parameters."""
    if config.train.report_to:
        accelerator.init_trackers(PROJECT, config=hyperparameters(config))


def hyperparameters(config: RunConfig) -> dict[str, int | float | str | bool]:
    """Every recipe key as "section.key" -> a scalar (lists, dicts and None as text: TensorBoard's hparams take
    scalars only)."""
    out: dict[str, int | float | str | bool] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            out[prefix] = value if isinstance(value, int | float | str | bool) else str(value)

    walk("", asdict(config))
    return out


def log_step(accelerator: Any, entry: dict) -> None:
    """A history log entry's loss, lr, gradient norm and throughput as train/* scalars at its step."""
    accelerator.log({f"train/{k}": entry[k] for k in ("loss", "lr", "grad_norm", "examples_per_s") if k in entry},
                    step=entry["step"])


def log_evaluation(accelerator: Any, step: int, metrics: dict) -> None:
    """Every number of an evaluation ({"dev": {...}, "ood": {...}}) as "dev/<metric>", "ood/<metric>"."""
    scalars = {f"{part}/{key}": value for part, values in metrics.items() for key, value in values.items()
               if isinstance(value, int | float) and not isinstance(value, bool)}
    if scalars:
        accelerator.log(scalars, step=step)
