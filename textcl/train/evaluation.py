"""Held-out evaluation during training: the dev evaluator (model selection, early stopping) and the
out-of-domain evaluator (watching forgetting), both `encode -> {metric: value}`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from textcl.config import RunConfig
from textcl.errors import ConfigError
from textcl.eval import evaluate
from textcl.eval.metrics import is_primary

Evaluator = Callable[[Callable], dict[str, float]]


def build_evaluators(config: RunConfig, dev: Evaluator | None,
                     ood: Evaluator | None) -> tuple[Evaluator | None, Evaluator | None]:
    """Explicit callables win; otherwise evaluate `config.eval` sets on their dev split (dev) and the
    out-of-domain sets on `eval.split` (they are only watched, never used for selection)."""
    ec = config.eval
    if dev is None and (ec.sts or ec.retrieval):
        dev_cfg = dataclasses.replace(ec, ood_sts=[], ood_retrieval=[])

        def dev(encode: Callable) -> dict[str, float]:
            return evaluate(encode, dev_cfg, ec.dev_split)

    if ood is None and (ec.ood_sts or ec.ood_retrieval):
        ood_cfg = dataclasses.replace(ec, sts=list(ec.ood_sts), retrieval=list(ec.ood_retrieval),
                                      ood_sts=[], ood_retrieval=[])

        def ood(encode: Callable) -> dict[str, float]:
            return evaluate(encode, ood_cfg, ec.split)

    return dev, ood


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
