"""What the training phases share: `Trainer`, everything set-up builds (model, optimizer, schedule, state,
batches, loss, evaluators), passed explicitly to the step, evaluate/select and finish phases; and
`TrainResult`, what a run returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer

from textcl.config import RunConfig
from textcl.data.batching import Batch
from textcl.models import Encoder, MemoEncoder, RoutedEncoder
from textcl.train.checkpoint import TrainerState
from textcl.train.corpus import TrainingCorpus
from textcl.train.evaluation import Evaluator


@dataclass
class TrainResult:
    output_dir: str
    best_checkpoint: str | None
    history: list[dict]
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    skipped_steps: int = 0
    stopped_early: bool = False


@dataclass
class Trainer:
    """A training run between set-up and finish.

    `model` is the plain SentenceTransformer whose weights train (the accelerate-wrapped copy lives
    inside `run_loss`); `encoder` encodes with it for evaluation (routed to `documents`, the frozen base
    tower, with query-side training); `run_loss(batch, step)` does forward + backward and returns the
    loss; `make_epoch(epoch)` gives the epoch's global batches.
    """

    config: RunConfig
    accelerator: Any
    model: SentenceTransformer
    optimizer: torch.optim.Optimizer
    scheduler: Any
    state: TrainerState
    make_epoch: Callable[[int], list[Batch]]
    total_steps: int
    run_loss: Callable[[Any, int], float]
    encoder: Encoder | RoutedEncoder
    evaluate_dev: Evaluator | None = None
    evaluate_ood: Evaluator | None = None
    evaluate_ood_dev: Evaluator | None = None  # forgetting budget only (train.max_ood_drop)
    documents: MemoEncoder | None = None
    corpus: TrainingCorpus | None = None
    provenance: dict = field(default_factory=dict)
    step_times: list[float] = field(default_factory=list)

    @property
    def out_dir(self) -> Path:
        return Path(self.config.train.output_dir)

    @property
    def ckpt_root(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def rank(self) -> int:
        return int(self.accelerator.process_index)

    @property
    def world(self) -> int:
        return int(self.accelerator.num_processes)
