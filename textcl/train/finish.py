"""Finish a run: the output folder gets the BEST model (or the last one without a dev evaluator; a Router
model with query-side training), the model card and the config; ended runs drop optimizer state.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from textcl.config import save_config
from textcl.models import load_configured_model, router_model
from textcl.models.lora import LORA_DIR, has_lora, merged_copy, save_lora
from textcl.train import checkpoint as ckpt
from textcl.train.card import write_model_card
from textcl.train.trainer import Trainer, TrainResult

log = logging.getLogger(__name__)


def finish(trainer: Trainer) -> TrainResult:
    """Write the output folder (main process) and return the run's result; every rank returns it."""
    state = trainer.state
    evals = [h for h in state.history if "eval" in h]
    before = evals[0]["eval"] if evals and evals[0]["step"] == 0 else {}
    after = next((h["eval"] for h in evals if h["step"] == state.best_step
                  and h.get("interpolation") == state.best_interpolation), {})
    if trainer.main:
        write_model(trainer)
        write_model_card(trainer.out_dir, config=trainer.config, state=state, before=before, after=after,
                         provenance=trainer.provenance or {})
        save_config(trainer.config, trainer.out_dir / "textcl_config.yaml")
    early = any(h.get("early_stopped") for h in state.history)
    if trainer.step_times:
        times = sorted(trainer.step_times)
        log.info("trained %d steps, median step %.3f s", state.step, times[len(times) // 2])
    best_dir = trainer.ckpt_root / "best"
    result = TrainResult(output_dir=str(trainer.out_dir), best_checkpoint=str(best_dir) if best_dir.is_dir() else None,
                         history=state.history, before=before, after=after, steps=state.step,
                         skipped_steps=state.skipped_steps, stopped_early=early)
    if trainer.main:  # a run that ended (not one a callback paused) needs no optimizer state to resume
        ckpt.finish_run(trainer.ckpt_root, trainer.out_dir, prune=state.step >= trainer.total_steps or early)
    trainer.accelerator.wait_for_everyone()
    return result


def write_model(trainer: Trainer) -> None:
    """The model of the output folder: checkpoints/best (verified) or the current weights; with query-side
    training (`trainer.documents`) a Router of the tuned query tower and the base document tower."""
    out_dir, best_dir, state = trainer.out_dir, trainer.ckpt_root / "best", trainer.state
    if best_dir.is_dir():
        ckpt.verify_folder(best_dir)
    if trainer.documents is not None:
        model = load_configured_model(trainer.config.model, best_dir, device="cpu") if best_dir.is_dir() \
            else merged_copy(trainer.model)
        router_model(model, trainer.documents.inner.model).save(str(out_dir), create_model_card=False)
        _write_lora(trainer, best_dir, out_dir / LORA_DIR)
    elif best_dir.is_dir():
        for item in best_dir.iterdir():
            if item.name == ckpt.CHECKSUMS:
                continue
            if item.is_dir():
                shutil.copytree(item, out_dir / item.name, dirs_exist_ok=True)
            else:
                shutil.copy2(item, out_dir / item.name)
    else:
        trainer.model.save(str(out_dir), create_model_card=False)
    if best_dir.is_dir() and state.best_step == 0:
        log.warning("training never improved the dev metric; %s holds the base model", out_dir)


def _write_lora(trainer: Trainer, best_dir: Path, target: Path) -> None:
    """The kept query tower's LoRA updates alone (peft's adapter folder), when it has them: a WiSE-FT mix is
    saved merged only."""
    shutil.rmtree(target, ignore_errors=True)
    if best_dir.is_dir():
        if (best_dir / LORA_DIR).is_dir():
            shutil.copytree(best_dir / LORA_DIR, target)
    elif has_lora(trainer.model):
        save_lora(trainer.model, target, trainer.config.train.lora, trainer.config.model.name_or_path)
