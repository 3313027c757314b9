"""The training loop: batches -> forward_backward -> AdamW step, on accelerate, readable top to bottom.

Around the step: held-out evaluation every `eval_every` steps with best-checkpoint selection and
early stopping, atomic checkpoints with exact resume, non-finite and out-of-memory guards, and a
final output folder that holds the BEST model and loads with `SentenceTransformer(path)`.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed

from textcl import progress
from textcl.config import RunConfig, save_config
from textcl.distributed import freeze_unused_parameters
from textcl.errors import ConfigError, TrainingError
from textcl.eval.metrics import is_primary
from textcl.model import Encoder, MemoEncoder, RoutedEncoder, load_model, router_model
from textcl.train import checkpoint as ckpt
from textcl.train import guard
from textcl.train.card import write_model_card
from textcl.train.components import (
    build_accelerator,
    build_optimizer,
    build_scheduler,
    enable_gradient_checkpointing,
    make_embed,
)
from textcl.train.corpus import TrainingCorpus, build_training_corpus, embed_corpus
from textcl.train.data import epoch_batch_maker, shard_batch, uses_corpus_negatives
from textcl.train.evaluation import build_evaluators, pick_metric
from textcl.train.objective import CorpusNegatives, corpus_forward_backward, forward_backward

log = logging.getLogger(__name__)

Callback = Callable[[dict], Any]  # called after every step with an event dict; return True to stop


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
    tc = config.train
    check_corpus_settings(config)
    out_dir = Path(tc.output_dir)
    ckpt_root = out_dir / "checkpoints"
    accelerator, precision = build_accelerator(tc.precision)
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    set_seed(config.seed)  # the one place random generators are seeded

    if examples is None:
        from textcl.train.data import load_training_data
        examples, provenance = load_training_data(config)
    bad_alphas = [a for a in tc.interpolate_base if not 0.0 < a < 1.0]
    if bad_alphas:
        raise ConfigError(f"train.interpolate_base: each value is the fine-tuned share of an interpolation with "
                          f"the base model and must lie strictly between 0 and 1, got {bad_alphas}")
    if tc.batch_size < world:
        raise ConfigError(f"train.batch_size={tc.batch_size} is the global batch; it must be >= the "
                          f"{world} processes")
    make_epoch = epoch_batch_maker(config, examples)
    total_steps = tc.max_steps or sum(len(make_epoch(e)) for e in range(tc.epochs))
    if total_steps < 1:
        raise ConfigError(f"nothing to train: {len(examples)} examples give no batch of "
                          f"batch_size={tc.batch_size}")

    # --- model, optimizer, schedule (state restored before accelerate wraps the model)
    model = load_model(config.model.name_or_path, device=str(accelerator.device),
                       trust_remote_code=config.model.trust_remote_code,
                       max_seq_length=config.model.max_seq_length)
    if tc.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    documents, corpus = _corpus_setup(config, examples, precision, accelerator)
    optimizer = build_optimizer(model, tc)
    scheduler = build_scheduler(optimizer, tc, total_steps)
    state = ckpt.TrainerState(world_size=world, resume_settings=ckpt.resume_settings(config, len(examples), world))
    resume_from = ckpt.resume_path(resume, ckpt_root)
    if resume_from is not None:
        state = ckpt.load_checkpoint(resume_from, model=model, optimizer=optimizer, scheduler=scheduler)
        ckpt.check_resume_settings(state.resume_settings, ckpt.resume_settings(config, len(examples), world),
                                   resume_from)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", resume_from, state.step, state.epoch,
                 state.batch_in_epoch)
    else:
        guard.guard_previous_run(out_dir, ckpt_root, overwrite, remove=main)
    accelerator.wait_for_everyone()
    if world > 1:  # DDP needs a gradient for every trainable parameter; BERT's pooler gets none
        model.eval()  # no dropout: the probe must not consume random numbers (exact resume)
        frozen = freeze_unused_parameters(model, lambda: make_embed(model, model, config.model)(["probe"], "query"))
        log.info("frozen parameters that receive no gradient: %s", frozen)
    ddp_model = accelerator.prepare_model(model)
    model.train()
    embed = make_embed(ddp_model, model, config.model)
    no_sync = (lambda: accelerator.no_sync(ddp_model)) if world > 1 else None
    encoder: Encoder | RoutedEncoder = Encoder(
        model, precision=precision, batch_size=config.model.batch_size, show_progress=False,
        query_prompt=config.model.query_prompt, document_prompt=config.model.document_prompt)
    if documents is not None:  # query-side: documents keep the frozen base tower (encoded once)
        encoder = RoutedEncoder(encoder, documents)
    run_loss = _loss_runner(config, embed, corpus, no_sync, rank)
    evaluate_dev, evaluate_ood = build_evaluators(config, dev, ood)
    if main:
        save_config(config, out_dir / "textcl_config.yaml")

    def evaluate(step: int) -> dict:
        """Dev (and ood) metrics on the main process, broadcast so every rank takes the same decision."""
        metrics: dict = {}
        if main and evaluate_dev is not None:
            model.eval()
            metrics = {"dev": evaluate_dev(encoder), "ood": evaluate_ood(encoder) if evaluate_ood else {}}
            model.train()
        metrics = _broadcast(accelerator, metrics)
        if metrics:
            log.info("eval at step %d: %s", step, _short(metrics))
        return metrics

    def save_best(step: int, metrics: dict) -> None:
        """Keep the best model by the dev metric; count evaluations without improvement."""
        key, value = pick_metric(metrics["dev"], config.eval.metric_for_best)
        state.history.append({"step": step, "eval": metrics, "metric": key})
        if state.best_metric is None or value > state.best_metric:
            state.best_metric, state.best_step, state.evals_without_improvement = value, step, 0
            if main:
                ckpt.atomic_folder(ckpt_root / "best", lambda tmp: model.save(str(tmp), create_model_card=False))
        else:
            state.evals_without_improvement += 1

    def save(step: int) -> None:
        if main:
            ckpt.save_checkpoint(ckpt_root / f"step-{step:08d}", model=model, optimizer=optimizer,
                                 scheduler=scheduler, state=state)
            ckpt.prune_checkpoints(ckpt_root, tc.keep_checkpoints)
        accelerator.wait_for_everyone()

    # --- the base model's held-out numbers (also the baseline the best checkpoint has to beat)
    if state.step == 0 and evaluate_dev is not None:
        save_best(0, evaluate(0))

    trigger = guard.SaveTrigger(tc.save_every, tc.save_every_minutes, interrupt, accelerator.device)
    step_times: list[float] = []
    window_examples, window_start = 0, time.perf_counter()
    stop = state.step >= total_steps
    bar = progress.bar(total=total_steps, initial=state.step, desc="train", unit="step", enabled=main)
    while not stop:
        batches = make_epoch(state.epoch)
        if not batches:
            raise ConfigError(f"epoch {state.epoch} has no batch: too few examples for batch_size={tc.batch_size}")
        while state.batch_in_epoch < len(batches) and not stop:
            global_batch = batches[state.batch_in_epoch]
            batch = shard_batch(global_batch, rank, world)
            t0 = time.perf_counter()
            loss, grad_norm, finite = _train_step(batch, run_loss, config, optimizer, scheduler, model,
                                                  state.step + 1)
            step_times.append(time.perf_counter() - t0)
            state.step += 1
            state.batch_in_epoch += 1
            window_examples += len(global_batch)
            if not finite:
                if tc.nan_policy == "stop":
                    last = ckpt.find_resumable(ckpt_root)
                    raise TrainingError(
                        f"non-finite loss ({loss}) or gradient norm ({grad_norm}) at step {state.step} "
                        f"(epoch {state.epoch}, batch {state.batch_in_epoch - 1}); last good checkpoint: "
                        f"{last or 'none'}. Lower train.lr, check the data, or set train.nan_policy=skip")
                state.skipped_steps += 1
                log.warning("step %d: non-finite loss/gradient, step skipped (%d so far)", state.step,
                            state.skipped_steps)
            end_of_epoch = state.batch_in_epoch >= len(batches)
            if end_of_epoch:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            last_step = state.step >= total_steps
            lr = max(scheduler.get_last_lr())  # the top group (layer_lr_decay scales the rest)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            if state.step % tc.log_every == 0 or last_step:
                elapsed = time.perf_counter() - window_start
                entry = {"step": state.step, "epoch": state.epoch, "loss": loss, "lr": lr,
                         "grad_norm": grad_norm, "examples_per_s": window_examples / max(elapsed, 1e-9)}
                state.history.append(entry)
                log.log(logging.DEBUG if not bar.disable else logging.INFO,  # the bar shows it already
                        "step %d/%d loss %.4f lr %.2e grad_norm %.3f %.1f examples/s", state.step,
                        total_steps, loss, lr, grad_norm, entry["examples_per_s"])
                window_examples, window_start = 0, time.perf_counter()

            event = {"step": state.step, "epoch": state.epoch, "loss": loss, "lr": lr, "finite": finite,
                     "examples": len(global_batch)}
            stop_requested = any(bool(cb(event)) for cb in callbacks or ())
            evaluate_now = evaluate_dev is not None and (
                (tc.eval_every is not None and state.step % tc.eval_every == 0)
                or (tc.eval_every is None and end_of_epoch) or last_step or stop_requested)
            if evaluate_now:
                save_best(state.step, evaluate(state.step))
                patience = tc.early_stopping_patience
                if patience is not None and state.evals_without_improvement >= patience:
                    log.info("early stopping at step %d: no dev improvement in %d evaluations (best %.4f "
                             "at step %s)", state.step, patience, state.best_metric, state.best_step)
                    state.history.append({"step": state.step, "early_stopped": True})
                    stop = True
            stop = stop or last_step or stop_requested
            if corpus is not None and tc.corpus_refresh_every and state.step % tc.corpus_refresh_every == 0 \
                    and not stop:
                _refresh_corpus(corpus, encoder, model, tc.corpus_dtype)
            periodic, interrupted = trigger.check(state.step)
            if stop or evaluate_now or end_of_epoch or periodic or interrupted:
                save(state.step)
                trigger.saved()
            if interrupted:
                bar.close()
                raise trigger.stop(state.step, ckpt_root)
            if end_of_epoch:  # the next epoch gets its own order and sampled positives
                break
    bar.close()

    if tc.interpolate_base:
        if evaluate_dev is None:
            log.warning("train.interpolate_base is set but there is no dev evaluator: interpolation skipped")
        elif not state.best_step:
            log.info("train.interpolate_base: the base model scored best on dev; no interpolation to try")
        else:
            _interpolate_with_base(config, model, state, ckpt_root, evaluate, accelerator)
    result = _finish(config, model, state, ckpt_root, provenance, step_times, main, documents)
    if main:  # a run that ended (not one a callback paused) needs no optimizer state to resume
        ckpt.finish_run(ckpt_root, out_dir, prune=state.step >= total_steps or result.stopped_early)
    accelerator.wait_for_everyone()
    return result


def _interpolate_with_base(config: RunConfig, model: Any, state: ckpt.TrainerState, ckpt_root: Path,
                           evaluate: Callable[[int], dict], accelerator: Any) -> None:
    """WiSE-FT (Wortsman et al., 2022): score (1 - a) * base + a * best checkpoint on dev for every a in
    train.interpolate_base, like any checkpoint; the best of them replaces checkpoints/best if it beats it.

    Every rank sets the same weights (evaluation runs on the main process and is broadcast)."""
    from textcl.soup import interpolate

    accelerator.wait_for_everyone()  # checkpoints/best is written by the main process
    mc = config.model
    base = load_model(mc.name_or_path, device="cpu", trust_remote_code=mc.trust_remote_code,
                      max_seq_length=mc.max_seq_length).state_dict()
    tuned = load_model(str(ckpt_root / "best"), device="cpu", trust_remote_code=mc.trust_remote_code,
                       max_seq_length=mc.max_seq_length).state_dict()
    best_alpha = None
    for alpha in sorted(set(config.train.interpolate_base)):
        model.load_state_dict(interpolate(base, tuned, alpha))
        metrics = evaluate(state.step)
        key, value = pick_metric(metrics["dev"], config.eval.metric_for_best)
        # "step" is the interpolated checkpoint's step: the entry describes that checkpoint, mixed with the base
        state.history.append({"step": state.best_step, "interpolation": alpha, "eval": metrics, "metric": key})
        log.info("interpolation %.2f x best (step %s) + %.2f x base: dev %s %.4f (best so far %.4f)", alpha,
                 state.best_step, 1 - alpha, key, value, state.best_metric)
        if value > state.best_metric:
            state.best_metric, best_alpha = value, alpha
            if accelerator.is_main_process:
                ckpt.atomic_folder(ckpt_root / "best", lambda tmp: model.save(str(tmp), create_model_card=False))
    state.best_interpolation = best_alpha
    log.info("train.interpolate_base: %s", f"kept {best_alpha} x fine-tuned + {1 - best_alpha:.2f} x base"
             if best_alpha is not None else "no interpolation beat the best checkpoint; it stays the model")
    accelerator.wait_for_everyone()


def _loss_runner(config: RunConfig, embed: Callable, corpus: TrainingCorpus | None,
                 no_sync: Callable | None, rank: int) -> Callable[[Any, int], float]:
    """`run(batch, step) -> loss`: forward + backward with in-batch negatives, or against the corpus."""
    tc = config.train
    if corpus is None:
        return lambda batch, step: forward_backward(embed, batch, config.loss, chunk_size=tc.gradcache_chunk_size,
                                                    no_sync=no_sync)
    how = CorpusNegatives(query_side=tc.tune == "query", candidates=tc.corpus_candidates, samples=tc.corpus_samples)

    def run(batch: Any, step: int) -> float:
        # Uniform draws are seeded by (seed, step) and rank: a resumed run draws the same documents.
        rng = np.random.default_rng([config.seed, step, rank])
        return corpus_forward_backward(embed, batch, corpus, config.loss, how, rng)

    return run


def check_corpus_settings(config: RunConfig) -> None:
    """Refuse settings that corpus-wide negatives / query-side training cannot honour (before any work)."""
    tc = config.train
    if not uses_corpus_negatives(config):
        return
    if config.loss.name != "infonce":
        raise ConfigError(f"train.tune=query / train.negatives=corpus train on (query, positive) rows with "
                          f"loss.name=infonce, not {config.loss.name}")
    if config.loss.symmetric:
        raise ConfigError("loss.symmetric adds a positive -> in-batch-queries term, which corpus negatives do "
                          "not use; set loss.symmetric: false with train.negatives: corpus / train.tune: query")
    if tc.gradcache_chunk_size:
        raise ConfigError("train.gradcache_chunk_size is for large in-batch negatives; corpus negatives need "
                          "no cache (unset it)")
    if tc.corpus_candidates is not None and tc.corpus_candidates < 1:
        raise ConfigError(f"train.corpus_candidates must be >= 1 (or unset for the exact softmax), got "
                          f"{tc.corpus_candidates}")
    if tc.tune == "query" and tc.corpus_refresh_every:
        raise ConfigError("train.corpus_refresh_every re-embeds the corpus with the trained model, but with "
                          "train.tune: query documents keep the base model; unset it")


def _corpus_setup(config: RunConfig, examples: Sequence, precision: str,
                  accelerator: Any) -> tuple[MemoEncoder | None, TrainingCorpus | None]:
    """With corpus negatives: the training corpus embedded once by the frozen base model, and (tune=query)
    that model's memoised encoder, which then encodes every document of evaluation too."""
    tc, mc = config.train, config.model
    if not uses_corpus_negatives(config):
        return None, None
    base = load_model(mc.name_or_path, device=str(accelerator.device), trust_remote_code=mc.trust_remote_code,
                      max_seq_length=mc.max_seq_length)
    base.requires_grad_(False)
    documents = MemoEncoder(Encoder(base, precision=precision, batch_size=mc.batch_size, cache_dir=mc.cache_dir,
                                    show_progress=accelerator.is_main_process,
                                    query_prompt=mc.query_prompt, document_prompt=mc.document_prompt))
    corpus = build_training_corpus(config, examples, documents)
    return (documents if tc.tune == "query" else None), corpus


def _refresh_corpus(corpus: TrainingCorpus, encoder: Any, model: torch.nn.Module, dtype_choice: str) -> None:
    """ANCE-style refresh (tune=both): re-embed the corpus with the weights being trained."""
    was_training = model.training
    model.eval()
    corpus.embeddings = embed_corpus(corpus.texts, encoder, dtype_choice)
    model.train(was_training)
    log.info("re-embedded the training corpus (%d documents) with the current weights", len(corpus))


def _train_step(batch: Any, run_loss: Callable[[Any, int], float], config: RunConfig,
                optimizer: torch.optim.Optimizer, scheduler: Any, model: torch.nn.Module,
                step: int) -> tuple[float, float, bool]:
    """One optimizer step. Returns (loss, grad_norm, finite); a non-finite step leaves weights as they were."""
    tc = config.train
    optimizer.zero_grad(set_to_none=True)
    try:
        loss = run_loss(batch, step)
    except (torch.OutOfMemoryError, MemoryError) as exc:
        raise TrainingError(_oom_advice(step, tc, exc)) from exc
    except RuntimeError as exc:
        if "out of memory" not in str(exc).lower():
            raise
        raise TrainingError(_oom_advice(step, tc, exc)) from exc
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


def _oom_advice(step: int, tc: Any, exc: BaseException) -> str:
    chunk = tc.gradcache_chunk_size
    hint = (f"set train.gradcache_chunk_size lower than {chunk}" if chunk else
            "set train.gradcache_chunk_size (e.g. 8) to keep the batch size in less memory")
    return (f"out of memory at step {step} with train.batch_size={tc.batch_size}: {hint}, or use a "
            f"smaller train.batch_size / model.max_seq_length, or enable train.gradient_checkpointing "
            f"({type(exc).__name__}: {str(exc)[:200]})")


def _finish(config: RunConfig, model: Any, state: ckpt.TrainerState, ckpt_root: Path,
            provenance: dict | None, step_times: list[float], main: bool,
            documents: MemoEncoder | None = None) -> TrainResult:
    """Write the BEST model (or the last one without an evaluator), the model card and the config.

    Query-side training (`documents` set) writes a Router model: the tuned query tower and the base
    document tower."""
    out_dir = Path(config.train.output_dir)
    best_dir = ckpt_root / "best"
    evals = [h for h in state.history if "eval" in h]
    before = evals[0]["eval"] if evals and evals[0]["step"] == 0 else {}
    after = next((h["eval"] for h in evals if h["step"] == state.best_step
                  and h.get("interpolation") == state.best_interpolation), {})
    if main and documents is not None:
        if best_dir.is_dir():
            ckpt.verify_folder(best_dir)
            mc = config.model
            model = load_model(str(best_dir), device="cpu", trust_remote_code=mc.trust_remote_code,
                               max_seq_length=mc.max_seq_length)
        router_model(model, documents.inner.model).save(str(out_dir), create_model_card=False)
        if state.best_step == 0:
            log.warning("training never improved the dev metric; %s holds the base model", out_dir)
    elif main:
        if best_dir.is_dir():
            ckpt.verify_folder(best_dir)
            for item in best_dir.iterdir():
                if item.name == ckpt.CHECKSUMS:
                    continue
                if item.is_dir():
                    shutil.copytree(item, out_dir / item.name, dirs_exist_ok=True)
                else:
                    shutil.copy2(item, out_dir / item.name)
            if state.best_step == 0:
                log.warning("training never improved the dev metric; %s holds the base model", out_dir)
        else:
            model.save(str(out_dir), create_model_card=False)
    if main:
        write_model_card(out_dir, config=config, state=state, before=before, after=after,
                         provenance=provenance or {})
        save_config(config, out_dir / "textcl_config.yaml")
    early = any(h.get("early_stopped") for h in state.history)
    if step_times:
        log.info("trained %d steps, median step %.3f s", state.step, sorted(step_times)[len(step_times) // 2])
    return TrainResult(output_dir=str(out_dir), best_checkpoint=str(best_dir) if best_dir.is_dir() else None,
                       history=state.history, before=before, after=after, steps=state.step,
                       skipped_steps=state.skipped_steps, stopped_early=early)


def _broadcast(accelerator: Any, obj: dict) -> dict:
    if accelerator.num_processes == 1:
        return obj
    from accelerate.utils import broadcast_object_list
    box = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]


def _short(metrics: dict) -> str:
    flat = {f"{part}/{k}": v for part, d in metrics.items() for k, v in d.items()}
    keys = [k for k in flat if is_primary(k)] or list(flat)[:6]
    return ", ".join(f"{k} {100 * flat[k]:.2f}" for k in keys)  # points, like every textcl table
