"""Held-out evaluation during training: the dev evaluator (model selection, early stopping) and the
out-of-domain evaluator (watching forgetting), both `encode -> {metric: value}`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence

from textcl.config import RunConfig
from textcl.errors import ConfigError, DataError
from textcl.eval import evaluate, evaluate_sets, load_sets
from textcl.eval.metrics import is_primary, max_t_threshold, paired_gain

log = logging.getLogger(__name__)

Evaluator = Callable[[Callable], dict[str, float]]


def build_evaluators(config: RunConfig, dev: Evaluator | None,
                     ood: Evaluator | None) -> tuple[Evaluator | None, Evaluator | None]:
    """Explicit callables win; otherwise evaluate `config.eval` sets on their dev split (dev) and the
    out-of-domain sets on `eval.split` (they are only watched, never used for selection)."""
    ec = config.eval
    if dev is None and (ec.sts or ec.retrieval):
        dev_cfg = dataclasses.replace(ec, ood_sts=[], ood_retrieval=[])

        def dev(encode: Callable, per_query: dict | None = None) -> dict[str, float]:
            return evaluate(encode, dev_cfg, ec.dev_split, per_query=per_query)

    if ood is None and (ec.ood_sts or ec.ood_retrieval):
        ood_cfg = dataclasses.replace(ec, sts=list(ec.ood_sts), retrieval=list(ec.ood_retrieval),
                                      ood_sts=[], ood_retrieval=[])

        def ood(encode: Callable) -> dict[str, float]:
            return evaluate(encode, ood_cfg, ec.split)

    return dev, ood


def build_ood_dev(config: RunConfig) -> Evaluator | None:
    """With a forgetting budget (train.max_ood_drop): the out-of-domain sets on their dev split, read once,
    so the choice of a WiSE-FT mix never looks at the split the report shows. A set without that split
    stays watched (on eval.split) but is left out of the budget, with a warning naming it."""
    ec = config.eval
    if config.train.max_ood_drop is None:
        return None
    loaded: list[tuple] = []
    for kind, paths in (("sts", ec.ood_sts), ("retrieval", ec.ood_retrieval)):
        for path in paths:
            one = dataclasses.replace(ec, sts=[path] if kind == "sts" else [],
                                      retrieval=[path] if kind == "retrieval" else [], ood_sts=[], ood_retrieval=[])
            try:
                loaded += load_sets(one, ec.dev_split, include_ood=False)
            except DataError as exc:
                log.warning("train.max_ood_drop: out-of-domain set %s has no usable '%s' split, so it is watched "
                            "but not part of the forgetting budget (%s)", path, ec.dev_split, exc)
    if not loaded:
        raise ConfigError(f"train.max_ood_drop: no out-of-domain set has a '{ec.dev_split}' split to measure "
                          "forgetting on (the budget never looks at the split the report shows)")

    def ood_dev(encode: Callable) -> dict[str, float]:
        return {k: v for res in evaluate_sets(encode, ec, ec.dev_split, loaded=loaded) for k, v in res.metrics.items()}

    return ood_dev


def ood_drop(metrics: dict[str, float], base: dict[str, float]) -> float:
    """The largest drop, in points, of a primary out-of-domain metric below the base model's (<= 0: none)."""
    drops = [100 * (base[k] - v) for k, v in metrics.items() if is_primary(k) and k in base]
    return max(drops, default=0.0)


def pick_metric(metrics: dict[str, float], name: str | None) -> tuple[str, float]:
    """The metric that selects the best checkpoint: `name`, or the first primary metric (higher is better)."""
    if name is not None:
        if name not in metrics:
            raise ConfigError(f"eval.metric_for_best={name!r} is not among the dev metrics: "
                              f"{', '.join(sorted(metrics)) or 'none'}")
        return name, float(metrics[name])
    for key in metrics:
        if is_primary(key):
            return key, float(metrics[key])
    if not metrics:
        raise ConfigError("the dev evaluator returned no metrics")
    key = next(iter(metrics))
    return key, float(metrics[key])


def significance(start: Mapping[str, float], tuned: Mapping[str, float], metric: str, z: float,
                 candidates: Sequence[Mapping[str, float]] = ()) -> dict | None:
    """`eval.min_gain_se`'s judgement from the per-query dev values of the starting and the tuned model: the
    history record (the paired gain, the metric, z, the threshold and which model is "kept": "tuned" when the gain
    is at least `threshold` standard errors, else "start"), or None when there are no per-query values (the rule
    does not apply). `candidates`: the per-query dev values of every model the tuned one was chosen among on the
    same queries (checkpoints, WiSE-FT mixes); the best of many scores high on dev by luck alone, so the threshold
    is `max_t_threshold`'s (z for one candidate; higher the more, and the less alike, the candidates)."""
    if not start:
        log.warning("eval.min_gain_se: %s has no per-query values (an STS metric, or a custom dev evaluator): "
                    "the rule is not applied", metric)
        return None
    gain = paired_gain(start, tuned)
    threshold = max_t_threshold(start, list(candidates), z)
    kept = "tuned" if gain["t"] >= threshold else "start"
    log.info("eval.min_gain_se %.2f: dev %s gain %+.2f points = %.2f standard errors over %d queries (needed %.2f, "
             "the best of %d candidates): kept the %s model", z, metric, 100 * gain["mean"], gain["t"], gain["n"],
             threshold, max(len(candidates), 1), "tuned" if kept == "tuned" else "starting")
    return {**gain, "metric": metric, "min_gain_se": z, "threshold": threshold, "candidates": len(candidates),
            "kept": kept}

