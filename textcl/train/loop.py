"""The training loop, readable top to bottom: set up -> fit (step, evaluate/select, checkpoint) -> WiSE-FT
mixing -> finish, on accelerate.

`train()` is those four calls; each phase is a function of a `Trainer` (textcl.train.trainer) and can be
used on its own: `set_up` here, `train_step` in step.py, `evaluate` / `select` / `stop_early` /
`mix_with_base` in selection.py, `finish` in finish.py. Around the step `fit` adds held-out evaluation
every `eval_every` steps, early stopping, atomic checkpoints with exact resume and Ctrl-C handling.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from accelerate.utils import set_seed

from textcl import progress
from textcl.config import RunConfig, save_config
from textcl.distributed import all_gather_object, freeze_unused_parameters
from textcl.errors import ConfigError
from textcl.models import (
    MemoEncoder,
    RoutedEncoder,
    adopt_rule,
    encoder_for,
    load_configured_model,
    model_rule,
)
from textcl.train import checkpoint as ckpt
from textcl.train import guard, tracking
from textcl.train.components import (
    build_accelerator,
    build_optimizer,
    build_scheduler,
    enable_gradient_checkpointing,
    make_embed,
)
from textcl.train.corpus import TrainingCorpus, build_training_corpus, embed_corpus
from textcl.train.data import epoch_batch_maker, load_training_data
from textcl.train.evaluation import build_evaluators, build_ood_dev
from textcl.train.finish import finish
from textcl.train.objective import build_loss, forward_backward
from textcl.train.selection import evaluate, keep_base_unless_significant, mix_with_base, select, stop_early
from textcl.train.sharded import shard_loss
from textcl.train.start import start_model
from textcl.train.step import StepResult, train_step
from textcl.train.trainer import Trainer, TrainResult

__all__ = ["Trainer", "TrainResult", "fit", "set_up", "train"]

log = logging.getLogger(__name__)

Callback = Callable[[dict], Any]  # called after every step with an event dict; return True to stop


@guard.interruptible
def train(config: RunConfig, examples: Sequence | None = None, *, dev: Callable | None = None,
          ood: Callable | None = None, callbacks: Sequence[Callback] | None = None,
          resume: bool | str = False, provenance: dict | None = None, overwrite: bool = False,
          interrupt: guard.Interrupt | None = None) -> TrainResult:
    """Fine-tune `config.model` on `examples` (Example, ScoredPair or str, by `config.loss.name`).

    `dev` / `ood` are `encode -> {metric: value}` callables; by default they come from
    `config.eval` (dev split, and the out-of-domain sets). `resume=True` continues from
    `output_dir/checkpoints/latest`, a string from that checkpoint folder. A fresh run refuses to
    replace a previous run's work unless `overwrite`. Ctrl-C saves a checkpoint and raises
    TrainingInterrupted.
    """
    trainer = set_up(config, examples, dev=dev, ood=ood, resume=resume, provenance=provenance,
                     overwrite=overwrite)
    try:
        fit(trainer, callbacks, interrupt)
        mix_with_base(trainer)
        keep_base_unless_significant(trainer)
        return finish(trainer)
    finally:
        trainer.accelerator.end_training()  # flush and close the trackers, also after an error or Ctrl-C


def set_up(config: RunConfig, examples: Sequence | None = None, *, dev: Callable | None = None,
           ood: Callable | None = None, resume: bool | str = False, provenance: dict | None = None,
           overwrite: bool = False) -> Trainer:
    """Everything before the first step: data and batches, model, optimizer and schedule (restored from a
    checkpoint when resuming), the loss and the evaluators. Seeds the random generators (once)."""
    tc = config.train
    config.check()  # also run by load_recipe and the pre-flight check; a config built by hand gets it here
    log_with, project_dir = tracking.trackers(config)
    accelerator, precision = build_accelerator(tc.precision, log_with=log_with, project_dir=project_dir)
    set_seed(config.seed)  # the one place random generators are seeded
    if examples is None:
        examples, provenance = load_training_data(config)
    make_epoch, total_steps = _batches(config, examples, accelerator.num_processes)
    resume_from = ckpt.resume_path(resume, Path(tc.output_dir) / "checkpoints")
    # --- model, optimizer, schedule (state restored before accelerate wraps the model)
    model = start_model(config, device=str(accelerator.device))  # + train.init_adapter, train.lora
    adopt_rule(model, model_rule(model, config.model))  # the saved model encodes as it was trained
    if tc.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    documents, corpus = _corpus_setup(config, examples, precision, accelerator, resume_from)
    optimizer = build_optimizer(model, tc)
    scheduler = build_scheduler(optimizer, tc, total_steps)
    state = _start_state(config, len(examples), accelerator, resume_from, overwrite,
                         (model, optimizer, scheduler))
    accelerator.wait_for_everyone()
    world = accelerator.num_processes
    if world > 1:  # DDP needs a gradient for every trainable parameter; BERT's pooler gets none
        model.eval()  # no dropout: the probe must not consume random numbers (exact resume)
        frozen = freeze_unused_parameters(model, lambda: make_embed(model, model, config.model)(["probe"], "query"))
        log.info("frozen parameters that receive no gradient: %s", frozen)
    ddp_model = accelerator.prepare_model(model)
    model.train()
    embed = make_embed(ddp_model, model, config.model)
    no_sync = (lambda: accelerator.no_sync(ddp_model)) if world > 1 else None
    encoder = encoder_for(model, config.model, precision=precision, scoring=True, cache=False,  # weights change
                          show_progress=False)
    if documents is not None:  # query-side: documents keep the frozen base tower (encoded once)
        encoder = RoutedEncoder(encoder, documents)
    evaluate_dev, evaluate_ood = build_evaluators(config, dev, ood)
    evaluate_ood_dev = build_ood_dev(config)
    if accelerator.is_main_process:
        save_config(config, Path(tc.output_dir) / "textcl_config.yaml")
    tracking.start(accelerator, config)
    provenance = {**(provenance or {}), "text_rule": encoder.rule.describe()}  # prompts + similarity, for the card
    return Trainer(config=config, accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler,
                   state=state, make_epoch=make_epoch, total_steps=total_steps,
                   run_loss=_loss_runner(config, embed, corpus, documents, no_sync, accelerator.process_index,
                                         encoder.rule.similarity),
                   encoder=encoder, evaluate_dev=evaluate_dev, evaluate_ood=evaluate_ood,
                   evaluate_ood_dev=evaluate_ood_dev, documents=documents,
                   corpus=corpus, provenance=provenance or {})


def _batches(config: RunConfig, examples: Sequence, world: int) -> tuple[Callable, int]:
    """(make_epoch, total steps), after the settings that depend on the data and the process count."""
    tc = config.train
    if tc.batch_size < world:
        raise ConfigError(f"train.batch_size={tc.batch_size} is the global batch; it must be >= the "
                          f"{world} processes")
    make_epoch = epoch_batch_maker(config, examples)
    total_steps = tc.max_steps or sum(len(make_epoch(e)) for e in range(tc.epochs))
    if total_steps < 1:
        raise ConfigError(f"nothing to train: {len(examples)} examples give no batch of "
                          f"batch_size={tc.batch_size}")
    return make_epoch, total_steps


def _start_state(config: RunConfig, n_examples: int, accelerator: Any, resume_from: Path | None, overwrite: bool,
                 restore: tuple[Any, Any, Any]) -> ckpt.TrainerState:
    """A fresh state (refusing to replace a previous run unless `overwrite`), or the state of checkpoint
    `resume_from` with model, optimizer and scheduler (`restore`) loaded from it."""
    world = accelerator.num_processes
    settings = ckpt.resume_settings(config, n_examples, world)
    ckpt_root = Path(config.train.output_dir) / "checkpoints"
    if resume_from is None:
        guard.guard_previous_run(Path(config.train.output_dir), ckpt_root, overwrite,
                                 remove=accelerator.is_main_process)
        return ckpt.TrainerState(world_size=world, resume_settings=settings)
    model, optimizer, scheduler = restore
    state = ckpt.load_checkpoint(resume_from, model=model, optimizer=optimizer, scheduler=scheduler,
                                 rank=accelerator.process_index)
    ckpt.check_resume_settings(state.resume_settings, settings, resume_from)
    log.info("resumed from %s at step %d (epoch %d, batch %d)", resume_from, state.step, state.epoch,
             state.batch_in_epoch)
    return state


def fit(trainer: Trainer, callbacks: Sequence[Callback] | None = None,
        interrupt: guard.Interrupt | None = None) -> None:
    """Train until max_steps / the last epoch, early stopping, a callback returning True, or Ctrl-C (a
    checkpoint, then TrainingInterrupted). The base model is evaluated first (the baseline to beat)."""
    tc, state = trainer.config.train, trainer.state
    if state.step == 0 and trainer.evaluate_dev is not None:
        select(trainer, 0, evaluate(trainer, 0))
    trigger = guard.SaveTrigger(tc.save_every, tc.save_every_minutes, interrupt, trainer.accelerator.device)
    window = _LogWindow()
    stop = state.step >= trainer.total_steps
    bar = progress.bar(total=trainer.total_steps, initial=state.step, desc="train", unit="step",
                       enabled=trainer.main)
    while not stop:
        batches = trainer.make_epoch(state.epoch)
        if not batches:
            raise ConfigError(f"epoch {state.epoch} has no batch: too few examples for batch_size={tc.batch_size}")
        while state.batch_in_epoch < len(batches) and not stop:
            # Before the step, not after the previous one: a run resumed at a refresh step refreshes too.
            if trainer.corpus is not None and tc.corpus_refresh_every and state.step \
                    and state.step % tc.corpus_refresh_every == 0 and state.corpus_refreshed_at != state.step:
                _refresh_corpus(trainer)
            step = train_step(trainer, batches)
            bar.update(1)
            bar.set_postfix(loss=f"{step.loss:.4f}", lr=f"{step.lr:.2e}")
            window.record(trainer, step, quiet=not bar.disable)
            event = {"step": state.step, "epoch": state.epoch, "loss": step.loss, "lr": step.lr,
                     "finite": step.finite, "examples": step.examples}
            stop_requested = any(bool(cb(event)) for cb in callbacks or ())
            evaluate_now = trainer.evaluate_dev is not None and (
                (tc.eval_every is not None and state.step % tc.eval_every == 0)
                or (tc.eval_every is None and step.end_of_epoch) or step.last_step or stop_requested)
            if evaluate_now:
                select(trainer, state.step, evaluate(trainer, state.step))
                stop = stop_early(trainer)
            stop = stop or step.last_step or stop_requested
            periodic, interrupted = trigger.check(state.step)
            if stop or evaluate_now or step.end_of_epoch or periodic or interrupted:
                save_checkpoint(trainer)
                trigger.saved()
            if interrupted:
                bar.close()
                raise trigger.stop(state.step, trainer.ckpt_root)
            if step.end_of_epoch:  # the next epoch gets its own order and sampled positives
                break
    bar.close()


class _LogWindow:
    """Every `log_every` steps (and the last): a history entry with loss, lr, gradient norm and throughput."""

    def __init__(self) -> None:
        self.examples, self.start = 0, time.perf_counter()

    def record(self, trainer: Trainer, step: StepResult, quiet: bool) -> None:
        self.examples += step.examples
        state = trainer.state
        if state.step % trainer.config.train.log_every != 0 and not step.last_step:
            return
        elapsed = time.perf_counter() - self.start
        entry = {"step": state.step, "epoch": state.epoch, "loss": step.loss, "lr": step.lr,
                 "grad_norm": step.grad_norm, "examples_per_s": self.examples / max(elapsed, 1e-9)}
        state.history.append(entry)
        tracking.log_step(trainer.accelerator, entry)
        log.log(logging.DEBUG if quiet else logging.INFO,  # the bar shows it already
                "step %d/%d loss %.4f lr %.2e grad_norm %.3f %.1f examples/s", state.step,
                trainer.total_steps, step.loss, step.lr, step.grad_norm, entry["examples_per_s"])
        self.examples, self.start = 0, time.perf_counter()


def save_checkpoint(trainer: Trainer) -> None:
    """checkpoints/step-N (main process; older ones pruned to keep_checkpoints); every rank waits for it."""
    rng_states = all_gather_object(ckpt.rng_state())  # each rank resumes its own dropout and draws
    if trainer.main:
        refreshed = trainer.corpus is not None and trainer.state.corpus_refreshed_at is not None
        ckpt.save_checkpoint(trainer.ckpt_root / f"step-{trainer.state.step:08d}", model=trainer.model,
                             optimizer=trainer.optimizer, scheduler=trainer.scheduler, state=trainer.state,
                             corpus_embeddings=trainer.corpus.embeddings if refreshed else None,
                             rng_states=rng_states)
        ckpt.prune_checkpoints(trainer.ckpt_root, trainer.config.train.keep_checkpoints)
    trainer.accelerator.wait_for_everyone()


def _loss_runner(config: RunConfig, embed: Callable, corpus: TrainingCorpus | None, documents: MemoEncoder | None,
                 no_sync: Callable | None, rank: int, similarity: str) -> Callable[[Any, int], float]:
    """`run(batch, step) -> loss`: forward + backward of the run's loss (`build_loss`)."""
    loss, chunk = shard_loss(build_loss(config, corpus, documents, similarity)), config.train.gradcache_chunk_size

    def run(batch: Any, step: int) -> float:
        # Uniform draws are seeded by (seed, step) and rank: a resumed run draws the same documents.
        rng = np.random.default_rng([config.seed, step, rank])
        return forward_backward(embed, batch, loss, chunk_size=chunk, no_sync=no_sync, rng=rng)

    return run


def _corpus_setup(config: RunConfig, examples: Sequence, precision: str, accelerator: Any,
                  resume_from: Path | None) -> tuple[MemoEncoder | None, TrainingCorpus | None]:
    """With corpus negatives: the training corpus embedded once by the frozen base model, and (tune=query)
    that model's memoised encoder, which then encodes every document of evaluation too. Resuming a run whose
    corpus was refreshed (tune=both): the checkpoint's embeddings instead."""
    tc, mc = config.train, config.model
    if not tc.uses_corpus_negatives:
        return None, None
    saved = ckpt.load_corpus_embeddings(resume_from) if resume_from is not None else None
    if saved is not None and tc.tune == "both":
        corpus = build_training_corpus(config, examples, None)
        if saved.shape[0] != len(corpus):
            raise ConfigError(f"cannot resume from {resume_from}: its corpus embeddings have {saved.shape[0]} rows, "
                              f"the training corpus has {len(corpus)} documents; restore the corpus or start a "
                              "fresh run in another train.output_dir")
        corpus.embeddings = saved
        log.info("the training corpus embeddings come from %s (refreshed during training)", resume_from)
        return None, corpus.to(accelerator.device)
    base = load_configured_model(mc, device=str(accelerator.device))
    base.requires_grad_(False)
    adopt_rule(base, model_rule(base, mc))  # the Router's document side carries the same prompts
    documents = MemoEncoder(encoder_for(base, mc, precision=precision, show_progress=accelerator.is_main_process))
    world = accelerator.num_processes  # train.corpus_shard: each process embeds and holds its 1/world of the rows
    shard = (accelerator.process_index, world) if tc.corpus_shard and world > 1 else None
    corpus = build_training_corpus(config, examples, documents, shard).to(accelerator.device)  # moved once
    return (documents if tc.tune == "query" else None), corpus


def _refresh_corpus(trainer: Trainer) -> None:
    """ANCE-style refresh (tune=both): re-embed the corpus with the weights being trained; from now on every
    checkpoint holds these embeddings, so a resumed run continues with them."""
    corpus, model = trainer.corpus, trainer.model
    was_training = model.training
    model.eval()
    corpus.embeddings = embed_corpus(corpus.texts, trainer.encoder, trainer.config.train.corpus_dtype)
    corpus.to(trainer.accelerator.device)
    model.train(was_training)
    trainer.state.corpus_refreshed_at = trainer.state.step
    log.info("re-embedded the training corpus (%d documents) with the current weights", len(corpus))


