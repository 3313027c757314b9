"""Checks a recipe before any stage runs (in seconds, no model loaded): every input exists, every
evaluation set has the splits the run will ask for, and model selection does not use the test split.

All problems are reported at once, each naming the recipe key to change.
"""

from __future__ import annotations

import logging
from pathlib import Path

from textcl.config import RunConfig
from textcl.data.beir import is_beir_folder
from textcl.errors import ConfigError
from textcl.eval import dataset_name
from textcl.paths import is_hub_id

log = logging.getLogger(__name__)


def available_splits(path: str) -> list[str] | None:
    """Splits an evaluation set offers: BEIR `qrels/*.tsv`, STS-B `sts-*.csv`; None for a single file
    (every split is the same rows) or a hub id."""
    p = Path(path)
    if is_beir_folder(p):
        return sorted({q.name.split(".")[0] for q in (p / "qrels").glob("*.tsv*")})
    if p.is_dir():
        return sorted(f.stem[4:] for f in p.glob("sts-*.csv"))
    return None


def _missing(value: str | None, hub: bool) -> bool:
    return bool(value) and not Path(value).exists() and not (hub and is_hub_id(value, Path.cwd()))


def check_recipe(config: RunConfig, *, training: bool = True, evaluating: bool = True) -> list[str]:
    """Raise ConfigError listing every problem; return warnings (also logged)."""
    ec, problems, warnings = config.eval, [], []
    inputs = [("model.name_or_path", config.model.name_or_path, True), ("index.corpus", config.index.corpus, False),
              ("eval.extra_corpus", ec.extra_corpus, False)] + ([("data.train", config.data.train, True)] if training
                                                                 else [])
    for key, value, hub in inputs:
        if _missing(value, hub):
            problems.append(f"{key}: {value} does not exist")
    sets = {"eval.sts": ec.sts, "eval.retrieval": ec.retrieval, "eval.ood_sts": ec.ood_sts,
            "eval.ood_retrieval": ec.ood_retrieval}
    for key, paths in sets.items():
        in_domain = not key.startswith("eval.ood")
        needed = dict([("eval.split", ec.split)] if evaluating or (training and not in_domain) else [])
        if training and in_domain:  # dev metrics select the checkpoint; out-of-domain sets use eval.split
            needed["eval.dev_split"] = ec.dev_split
        for i, path in enumerate(paths):
            if _missing(path, True):
                problems.append(f"{key}[{i}]: {path} does not exist")
                continue
            splits = available_splits(path)
            for split_key, split in needed.items():
                if splits is not None and split not in splits:
                    problems.append(f"{key}[{i}]: {path} has no '{split}' split (it has: {', '.join(splits) or 'none'})"
                                    f"; set {split_key} to one of them"
                                    + (" or remove the set from eval.sts/eval.retrieval" if split_key ==
                                       "eval.dev_split" else ""))
            if training and in_domain and splits is None and Path(path).is_file():
                warnings.append(f"{key}[{i}]: {path} is one file: training selects its best checkpoint on the "
                                "rows the test table reports; the test score will be inflated (give a separate "
                                "dev set for selection)")
    names = [dataset_name(p) for p in [*ec.sts, *ec.retrieval]]
    if training and ec.metric_for_best and ec.metric_for_best.split("/")[0] not in names:
        problems.append(f"eval.metric_for_best: {ec.metric_for_best!r} names no in-domain set (they are: "
                        f"{', '.join(names) or 'none'}); write it as SET/METRIC, e.g. '{(names or ['set'])[0]}/ndcg@10'")
    if training and (ec.sts or ec.retrieval) and ec.dev_split == ec.split:
        warnings.append(f"eval.dev_split = eval.split = '{ec.split}': model selection on the test split inflates "
                        "the test score; select on a dev split (eval.dev_split: dev)")
    if problems:
        raise ConfigError(f"the recipe cannot run ({len(problems)} problem{'s' * (len(problems) > 1)}):\n  "
                          + "\n  ".join(problems))
    for w in warnings:
        log.warning("%s", w)
    return warnings
