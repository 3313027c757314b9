"""Evaluate and select: held-out metrics during training, the best checkpoint by the dev metric, early
stopping, and WiSE-FT mixing with the base model after training. Every rank takes the same decision
(evaluation runs on the main process and is broadcast).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from accelerate.utils import broadcast_object_list

from textcl.eval.metrics import is_primary
from textcl.models import load_configured_model
from textcl.models.lora import LORA_DIR, has_lora, merge_lora, merged_copy, save_lora
from textcl.soup import interpolate
from textcl.train import checkpoint as ckpt
from textcl.train import tracking
from textcl.train.evaluation import ood_drop, pick_metric, significance
from textcl.train.start import start_model
from textcl.train.trainer import Trainer

log = logging.getLogger(__name__)


def evaluate(trainer: Trainer, step: int) -> dict:
    """{"dev": metrics, "ood": metrics} of the current weights ({} without a dev evaluator); with eval.min_gain_se
    and a dev evaluator that gives them, also "dev_per_query": {metric: {query id: value}} (`per_query_entry`)."""
    metrics: dict = {}
    if trainer.evaluate_dev is not None:
        per_query = trainer.config.eval.min_gain_se and "per_query" in inspect.signature(trainer.evaluate_dev).parameters

        def run(encode: Any) -> dict:
            values: dict = {}
            dev = trainer.evaluate_dev(encode, per_query=values) if per_query else trainer.evaluate_dev(encode)
            return {"dev": dev, "ood": trainer.evaluate_ood(encode) if trainer.evaluate_ood else {},
                    **({"dev_per_query": values} if values else {})}

        metrics = _on_main(trainer, run)
    if metrics:
        log.info("eval at step %d: %s", step, short({k: v for k, v in metrics.items() if k != "dev_per_query"}))
    return metrics


def per_query_entry(metrics: dict, key: str) -> dict:
    """Pops `evaluate`'s per-query values from `metrics`: {"dev_per_query": {query id: value of key}} for a history
    entry (the candidates eval.min_gain_se's test accounts for), or {}."""
    values = metrics.pop("dev_per_query", {}).get(key)
    return {"dev_per_query": values} if values else {}


def select(trainer: Trainer, step: int, metrics: dict) -> None:
    """Record an evaluation; keep the weights as checkpoints/best when the dev metric improved, else count
    one more evaluation without improvement."""
    state = trainer.state
    key, value = pick_metric(metrics["dev"], trainer.config.eval.metric_for_best)
    state.history.append({"step": step, **per_query_entry(metrics, key), "eval": metrics, "metric": key})
    tracking.log_evaluation(trainer.accelerator, step, metrics)
    if state.best_metric is None or value > state.best_metric:
        state.best_metric, state.best_step, state.evals_without_improvement = value, step, 0
        _save_best(trainer)
    else:
        state.evals_without_improvement += 1


def stop_early(trainer: Trainer) -> bool:
    """Whether `train.early_stopping_patience` evaluations in a row brought no improvement (then logged
    and recorded in the history)."""
    state, patience = trainer.state, trainer.config.train.early_stopping_patience
    if patience is None or state.evals_without_improvement < patience:
        return False
    log.info("early stopping at step %d: no dev improvement in %d evaluations (best %.4f at step %s)",
             state.step, patience, state.best_metric, state.best_step)
    state.history.append({"step": state.step, "early_stopped": True})
    return True


def mix_with_base(trainer: Trainer) -> None:
    """WiSE-FT (Wortsman et al., 2022) for each a in train.interpolate_base: score (1 - a) * base + a * best
    checkpoint on dev like any checkpoint; the best mix replaces checkpoints/best if it beats it. With a
    forgetting budget (train.max_ood_drop) the choice is `choose_mix`'s instead: the best on dev among the
    best checkpoint and the mixes within the budget on the out-of-domain sets' dev split, and the model training
    started from (a = 0, no drop), which is kept when nothing else is within the budget."""
    config, state = trainer.config, trainer.state
    if not config.train.interpolate_base:
        return
    if trainer.evaluate_dev is None:
        log.warning("train.interpolate_base is set but there is no dev evaluator: interpolation skipped")
        return
    if not state.best_step:
        log.info("train.interpolate_base: the base model scored best on dev; no interpolation to try")
        return
    base, tuned = _start_and_best(trainer)
    budget = config.train.max_ood_drop if trainer.evaluate_ood_dev is not None else None
    candidates = []  # {"alpha", "dev", "ood_drop"}: the best checkpoint is alpha 1.0
    if budget is not None:
        trainer.model.load_state_dict(base)
        base_ood = _ood_dev(trainer)
        trainer.model.load_state_dict(tuned)
        candidates.append({"alpha": 0.0, "dev": _start_dev(trainer), "ood_drop": 0.0})
        candidates.append({"alpha": 1.0, "dev": state.best_metric, "ood_drop": ood_drop(_ood_dev(trainer), base_ood)})
    best_alpha = None
    for alpha in sorted(set(config.train.interpolate_base)):
        trainer.model.load_state_dict(interpolate(base, tuned, alpha))
        metrics = evaluate(trainer, state.step)
        key, value = pick_metric(metrics["dev"], config.eval.metric_for_best)
        entry = {"step": state.best_step, "interpolation": alpha, **per_query_entry(metrics, key), "eval": metrics,
                 "metric": key}
        if budget is not None:
            entry["ood_drop_dev"] = ood_drop(_ood_dev(trainer), base_ood)
            candidates.append({"alpha": alpha, "dev": value, "ood_drop": entry["ood_drop_dev"]})
        # "step" is the interpolated checkpoint's step: the entry describes that checkpoint, mixed with the base
        state.history.append(entry)
        log.info("interpolation %.2f x best (step %s) + %.2f x base: dev %s %.4f (best so far %.4f)%s", alpha,
                 state.best_step, 1 - alpha, key, value, state.best_metric,
                 f", out-of-domain dev drop {entry['ood_drop_dev']:.2f} points" if budget is not None else "")
        if budget is None and value > state.best_metric:
            state.best_metric, best_alpha = value, alpha
            _save_best(trainer)
    if budget is not None:
        chosen = choose_mix(candidates, budget)
        state.history.append({"step": state.best_step, "forgetting_budget": budget, "candidates": candidates,
                              "chosen": chosen["alpha"]})
        if chosen["alpha"] == 0.0:
            log.warning("train.max_ood_drop=%s: neither the best checkpoint nor any mix stays within the forgetting "
                        "budget: the run keeps the model training started from", budget)
            _keep_start(trainer, base)
            trainer.accelerator.wait_for_everyone()
            return
        if chosen["alpha"] < 1.0:
            best_alpha, state.best_metric = chosen["alpha"], chosen["dev"]
            trainer.model.load_state_dict(interpolate(base, tuned, best_alpha))
            _save_best(trainer)
    state.best_interpolation = best_alpha
    log.info("train.interpolate_base: %s", f"kept {best_alpha} x fine-tuned + {1 - best_alpha:.2f} x base"
             if best_alpha is not None else "no interpolation was chosen over the best checkpoint; it stays the model")
    trainer.accelerator.wait_for_everyone()


def keep_base_unless_significant(trainer: Trainer) -> None:
    """`eval.min_gain_se`: the tuned model (best checkpoint or WiSE-FT mix) stays the run's model only when its
    dev gain over the model training started from is at least that many standard errors of the per-query paired
    difference, raised for having been chosen on the same dev queries among every checkpoint and mix evaluated
    (`max_t_threshold`); otherwise checkpoints/best becomes that model again. So a run with few labelled queries, whose
    dev gain is within noise, ends where it started instead of below it. Retrieval dev metrics only (an STS
    score has no per-query value)."""
    config, state = trainer.config, trainer.state
    z = config.eval.min_gain_se
    if not z or not state.best_step or trainer.evaluate_dev is None:
        return
    key = next(h["metric"] for h in state.history if "eval" in h)
    base, tuned = _start_and_best(trainer)
    per_query = []
    for weights in (base, tuned):
        trainer.model.load_state_dict(weights)
        per_query.append(_on_main(trainer, lambda encode: _dev_per_query(trainer, encode, key)))
    candidates = [h["dev_per_query"] for h in state.history if "dev_per_query" in h and h.get("metric") == key
                  and (h["step"] != 0 or "interpolation" in h)]  # every model after the start, and the mixes
    record = significance(per_query[0], per_query[1], key, z, candidates)
    if record is None:
        return
    state.history.append({"step": state.step, "significance": record})
    if record["kept"] == "start":
        _keep_start(trainer, base)
    trainer.accelerator.wait_for_everyone()


def _start_dev(trainer: Trainer) -> float:
    """The dev metric of the model training started from (its step-0 evaluation)."""
    first = next(h for h in trainer.state.history if "eval" in h and h["step"] == 0)
    return first["eval"]["dev"][first["metric"]]


def _keep_start(trainer: Trainer, start: dict) -> None:
    """checkpoints/best becomes the model training started from again."""
    state = trainer.state
    state.best_metric = _start_dev(trainer)
    state.best_step, state.best_interpolation = 0, None
    trainer.model.load_state_dict(start)
    _save_best(trainer)


def _start_and_best(trainer: Trainer) -> tuple[dict, dict]:
    """State dicts of the model training started from (with train.init_adapter: base + adapter; without the LoRA
    updates) and of checkpoints/best, after the LoRA updates of the live model are merged (training is over)."""
    config = trainer.config
    trainer.accelerator.wait_for_everyone()  # checkpoints/best is written by the main process
    merge_lora(trainer.model)
    base = start_model(config, device="cpu", lora=False).state_dict()
    tuned = load_configured_model(config.model, trainer.ckpt_root / "best", device="cpu").state_dict()
    return base, tuned


def _dev_per_query(trainer: Trainer, encode: Any, key: str) -> dict[str, float]:
    """The dev evaluator's per-query values of `key`; {} from a dev evaluator given by the caller without them."""
    if "per_query" not in inspect.signature(trainer.evaluate_dev).parameters:
        return {}
    per_query: dict = {}
    trainer.evaluate_dev(encode, per_query=per_query)
    return per_query.get(key, {})


def choose_mix(candidates: list[dict], budget: float) -> dict:
    """The candidate ({"alpha", "dev", "ood_drop"}) with the best dev score among those whose out-of-domain
    drop (points) is within `budget`, the larger alpha on a tie; when none is (no a = 0 candidate), the one that
    forgets least (warned): the budget is the user's limit, and dev scores cannot buy it back."""
    within = [c for c in candidates if c["ood_drop"] <= budget]
    if within:
        return max(within, key=lambda c: (c["dev"], c["alpha"]))
    least = min(candidates, key=lambda c: (c["ood_drop"], -c["dev"]))
    log.warning("train.max_ood_drop=%s: no mix stays within the forgetting budget; kept a=%s, which forgets "
                "least (%.2f points on the out-of-domain dev sets): add smaller interpolate_base values",
                budget, least["alpha"], least["ood_drop"])
    return least


def _ood_dev(trainer: Trainer) -> dict[str, float]:
    """The out-of-domain sets on their dev split (forgetting budget only)."""
    return _on_main(trainer, trainer.evaluate_ood_dev)


def _on_main(trainer: Trainer, evaluator: Any) -> dict:
    """`evaluator(encoder)` of the current weights in eval mode on the main process, broadcast to every rank."""
    metrics: dict = {}
    if trainer.main:
        trainer.model.eval()
        metrics = evaluator(trainer.encoder)
        trainer.model.train()
    return broadcast(trainer.accelerator, metrics)


def _save_best(trainer: Trainer) -> None:
    """checkpoints/best: a plain model (LoRA merged), plus with LoRA the updates alone in `lora/`."""
    def write(tmp: Any) -> None:
        merged_copy(trainer.model).save(str(tmp), create_model_card=False)
        if has_lora(trainer.model):
            save_lora(trainer.model, tmp / LORA_DIR, trainer.config.train.lora, trainer.config.model.name_or_path)

    if trainer.main:
        ckpt.atomic_folder(trainer.ckpt_root / "best", write)


def broadcast(accelerator: Any, obj: dict) -> dict:
    if accelerator.num_processes == 1:
        return obj
    box = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]


def short(metrics: dict) -> str:
    flat = {f"{part}/{k}": v for part, d in metrics.items() for k, v in d.items()}
    keys = [k for k in flat if is_primary(k)] or list(flat)[:6]
    return ", ".join(f"{k} {100 * flat[k]:.2f}" for k in keys)  # points, like every textcl table
