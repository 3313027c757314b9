"""One training step: this rank's shard of the next global batch -> forward + backward -> AdamW step, with
the non-finite and out-of-memory guards, and the data position advanced (exact resume restarts here).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from textcl.config import TrainConfig
from textcl.data.batching import Batch
from textcl.errors import TrainingError
from textcl.train import checkpoint as ckpt
from textcl.train.data import shard_batch
from textcl.train.trainer import Trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepResult:
    loss: float
    grad_norm: float
    finite: bool
    lr: float  # the top parameter group's (layer_lr_decay scales the rest)
    examples: int  # in the global batch
    end_of_epoch: bool
    last_step: bool


def train_step(trainer: Trainer, batches: list[Batch]) -> StepResult:
    """Train on `batches[state.batch_in_epoch]` (the epoch's global batches) and advance the position.

    A non-finite loss or gradient stops with a TrainingError naming the last good checkpoint, or with
    `train.nan_policy: skip` leaves the weights as they were and is counted in `state.skipped_steps`."""
    state, tc = trainer.state, trainer.config.train
    global_batch = batches[state.batch_in_epoch]
    t0 = time.perf_counter()
    loss, grad_norm, finite = optimizer_step(shard_batch(global_batch, trainer.rank, trainer.world),
                                             trainer.run_loss, tc, trainer.optimizer, trainer.scheduler,
                                             trainer.model, state.step + 1)
    trainer.step_times.append(time.perf_counter() - t0)
    state.step += 1
    state.batch_in_epoch += 1
    if not finite:
        if tc.nan_policy == "stop":
            last = ckpt.find_resumable(trainer.ckpt_root)
            raise TrainingError(
                f"non-finite loss ({loss}) or gradient norm ({grad_norm}) at step {state.step} "
                f"(epoch {state.epoch}, batch {state.batch_in_epoch - 1}); last good checkpoint: "
                f"{last or 'none'}. Lower train.lr, check the data, or set train.nan_policy=skip")
        state.skipped_steps += 1
        log.warning("step %d: non-finite loss/gradient, step skipped (%d so far)", state.step, state.skipped_steps)
    end_of_epoch = state.batch_in_epoch >= len(batches)
    if end_of_epoch:
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    return StepResult(loss=loss, grad_norm=grad_norm, finite=finite, lr=max(trainer.scheduler.get_last_lr()),
                      examples=len(global_batch), end_of_epoch=end_of_epoch,
                      last_step=state.step >= trainer.total_steps)


def optimizer_step(batch: Any, run_loss: Callable[[Any, int], float], tc: TrainConfig,
                   optimizer: torch.optim.Optimizer, scheduler: Any, model: torch.nn.Module,
                   step: int) -> tuple[float, float, bool]:
    """One optimizer step. Returns (loss, grad_norm, finite); a non-finite step leaves weights as they were."""
    optimizer.zero_grad(set_to_none=True)
    try:
        loss = run_loss(batch, step)
    except (torch.OutOfMemoryError, MemoryError) as exc:
        raise TrainingError(oom_advice(step, tc, exc)) from exc
    except RuntimeError as exc:
        if "out of memory" not in str(exc).lower():
            raise
        raise TrainingError(oom_advice(step, tc, exc)) from exc
    params = [p for p in model.parameters() if p.grad is not None]
    # max_norm=inf measures the norm (to detect inf/nan) without changing any gradient.
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, tc.max_grad_norm or math.inf))
    finite = math.isfinite(loss) and math.isfinite(grad_norm)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = torch.tensor([1.0 if finite else 0.0], device=params[0].device if params else "cpu")
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        finite = bool(flag.item() > 0)
    if finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()  # the schedule follows steps taken, skipped ones included
    return float(loss), grad_norm, finite


def oom_advice(step: int, tc: TrainConfig, exc: BaseException) -> str:
    chunk = tc.gradcache_chunk_size
    hint = (f"set train.gradcache_chunk_size lower than {chunk}" if chunk else
            "set train.gradcache_chunk_size (e.g. 8) to keep the batch size in less memory")
    return (f"out of memory at step {step} with train.batch_size={tc.batch_size}: {hint}, or use a "
            f"smaller train.batch_size / model.max_seq_length, or enable train.gradient_checkpointing "
            f"({type(exc).__name__}: {str(exc)[:200]})")
