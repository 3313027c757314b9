"""Checks a recipe before any stage runs (in seconds, no model loaded): settings that cannot run together,
every input exists, every evaluation set has the splits the run will ask for, model selection does not use
the test split (unless eval.allow_test_selection), and a warning when the recipe's prompts replace a local
model's own.

All problems are reported at once, each naming the recipe key to change.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

from textcl.config import EvalConfig, ModelConfig, RunConfig
from textcl.data.beir import is_beir_folder
from textcl.errors import ConfigError
from textcl.eval import dataset_name
from textcl.paths import is_hub_id
from textcl.textrule import ROLES, model_prompt

log = logging.getLogger(__name__)

ST_SETTINGS = "config_sentence_transformers.json"  # a sentence-transformers model's prompts live here


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
    ec = config.eval
    problems = config.problems()  # settings that cannot run together (load_recipe raised on them already)
    inputs = [("model.name_or_path", config.model.name_or_path, True), ("index.corpus", config.index.corpus, False),
              ("eval.extra_corpus", ec.extra_corpus, False)] + ([("data.train", config.data.train, True)] if training
                                                                 else [])
    for key, value, hub in inputs:
        if _missing(value, hub):
            problems.append(f"{key}: {value} does not exist")
    problems += _split_problems(ec, training, evaluating)
    names = [dataset_name(p) for p in [*ec.sts, *ec.retrieval]]
    if training and ec.metric_for_best and ec.metric_for_best.split("/")[0] not in names:
        problems.append(f"eval.metric_for_best: {ec.metric_for_best!r} names no in-domain set (they are: "
                        f"{', '.join(names) or 'none'}); write it as SET/METRIC, e.g. '{(names or ['set'])[0]}/ndcg@10'")
    warnings: list[str] = []
    for core, fix in _test_selection(ec) if training else []:
        if ec.allow_test_selection:
            warnings.append(f"{core} (allowed by eval.allow_test_selection)")
        else:
            problems.append(f"{core}; {fix}, or allow it with eval.allow_test_selection: true (flag "
                            "--allow-test-selection)")
    problems += _prompt_overrides(config.model, warnings)
    if problems:
        raise ConfigError(f"the recipe cannot run ({len(problems)} problem{'s' * (len(problems) > 1)}):\n  "
                          + "\n  ".join(problems))
    for w in warnings:
        log.warning("%s", w)
    return warnings


def _split_problems(ec: EvalConfig, training: bool, evaluating: bool) -> list[str]:
    """Evaluation sets that do not exist or lack a split the run will ask for."""
    problems = []
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
    return problems


def _test_selection(ec: EvalConfig) -> list[tuple[str, str]]:
    """(what is wrong, how to fix it) for each way training would select its checkpoint on the rows the test
    table reports: dev_split = split, or an in-domain set that is one file (every split is the same rows)."""
    found = []
    if (ec.sts or ec.retrieval) and ec.dev_split == ec.split:
        found.append((f"eval.dev_split = eval.split = '{ec.split}': selecting the checkpoint on the test split "
                      "inflates the test score", "select on a dev split (eval.dev_split: dev)"))
    for key, paths in (("eval.sts", ec.sts), ("eval.retrieval", ec.retrieval)):
        for i, path in enumerate(paths):
            if available_splits(path) is None and Path(path).is_file():
                found.append((f"{key}[{i}]: {path} is one file: training would select its best checkpoint on the "
                              "rows the test table reports, inflating the test score",
                              "give a folder with a separate dev split for selection"))
    return found


def saved_prompts(settings: dict) -> dict[str, str]:
    """{role: prompt} a model with these saved settings (its config_sentence_transformers.json) encodes with,
    by the rule of sentence-transformers' `encode_query` / `encode_document` (`textrule.model_prompt`)."""
    model = SimpleNamespace(prompts=settings.get("prompts") or {},
                            default_prompt_name=settings.get("default_prompt_name"))
    return {role: model_prompt(model, role) for role in ROLES}


def _prompt_overrides(mc: ModelConfig, warnings: list[str]) -> list[str]:
    """Warn (into `warnings`) for each role whose recipe prompt replaces the local model's own one; return
    problems (an unreadable settings file). Reads the JSON only: no model is loaded."""
    path = Path(mc.name_or_path) / ST_SETTINGS
    if not path.is_file():
        return []
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return [f"model.name_or_path: {path} cannot be read ({exc})"]
    if not isinstance(settings, dict) or not (settings.get("prompts") or settings.get("default_prompt_name")):
        return []
    for role, theirs in saved_prompts(settings).items():
        ours = getattr(mc, f"{role}_prompt")
        if ours is not None and ours != theirs:  # None: the model's own prompt
            warnings.append(f"model.{role}_prompt = {ours!r} replaces the model's own {role} prompt {theirs!r} "
                            f"({path}); leave model.{role}_prompt unset to encode as the model expects")
    return []
