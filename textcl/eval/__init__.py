"""Evaluation: load configured STS and retrieval sets, run them, return flat metrics or per-set results.

`evaluate(encode, eval_cfg, split)` -> {"{dataset}/spearman_cosine": ..., "{dataset}/ndcg@10": ...};
`evaluate_sets` returns per-set results with their conventions (for `eval.results`). A set's name is
its folder name (or file stem), which selects per-dataset defaults such as the identical-id rule.
"""

from __future__ import annotations

import logging
from pathlib import Path

from textcl.config import EvalConfig
from textcl.data.beir import is_beir_folder
from textcl.data.io import load_scored_pairs
from textcl.data.retrieval import load_retrieval_set
from textcl.errors import DataError
from textcl.eval.metrics import PRIMARY_METRIC
from textcl.eval.results import SetResult
from textcl.eval.retrieval import evaluate_retrieval
from textcl.eval.sts import evaluate_sts
from textcl.types import Encode, ScoredPair

log = logging.getLogger(__name__)

__all__ = ["evaluate", "evaluate_sets", "evaluate_sts", "evaluate_retrieval", "dataset_name", "load_sts_set"]


def dataset_name(path: str | Path) -> str:
    """Folder name for folders; for STS-B's `sts-test.csv` the parent folder; else the file stem."""
    p = Path(path)
    if p.is_dir():
        return p.resolve().name
    if p.name.lower().startswith("sts-") and p.parent.name:
        return p.resolve().parent.name
    return p.name.split(".")[0]


def load_sts_set(path: str | Path, split: str) -> list[ScoredPair]:
    """STS-B folder/file, SICK TSV or generic scored pairs (format detected by textcl.data.io)."""
    p = Path(path)
    if not p.exists():
        raise DataError("STS set not found", str(p))
    if is_beir_folder(p):
        raise DataError("this is a BEIR retrieval folder; pass it with --retrieval", str(p))
    if p.is_dir() and not (p / f"sts-{split}.csv").exists() and list(p.glob("sts-*.csv")):
        available = sorted(f.stem[4:] for f in p.glob("sts-*.csv"))
        raise DataError(f"no sts-{split}.csv (available splits: {', '.join(available)})", str(p))
    return load_scored_pairs(p, split=split)


def load_sets(eval_cfg: EvalConfig, split: str | None = None, *, include_ood: bool = True) -> list[tuple]:
    """Read every configured set, before any model is loaded: `(kind, path, data, out_of_domain)` rows."""
    split = split or eval_cfg.split
    sts_paths = list(eval_cfg.sts) + (list(eval_cfg.ood_sts) if include_ood else [])
    ret_paths = list(eval_cfg.retrieval) + (list(eval_cfg.ood_retrieval) if include_ood else [])
    ood = set(eval_cfg.ood_sts) | set(eval_cfg.ood_retrieval)
    loaded = [("sts", path, load_sts_set(path, split), path in ood) for path in sts_paths]
    loaded += [("retrieval", path, load_retrieval_set(path, split, on_unknown="raise" if eval_cfg.strict else "warn",
                                                      extra_corpus=eval_cfg.extra_corpus), path in ood)
               for path in ret_paths]
    if not loaded:
        log.warning("no evaluation sets configured (eval.sts / eval.retrieval are empty)")
    return loaded


def evaluate_sets(encode: Encode, eval_cfg: EvalConfig, split: str | None = None, *,
                  include_ood: bool = True, loaded: list[tuple] | None = None,
                  retrieval_encode: Encode | None = None, per_query: dict | None = None) -> list[SetResult]:
    """Run every configured set (in-domain, then out-of-domain) and keep the conventions of each;
    `loaded` is what `load_sets` read (read here when not given). `retrieval_encode` (default `encode`) scores
    the retrieval sets: e.g. `encode` seen through a compressed index (textcl.compress.IndexView). `per_query`: filled
    with the retrieval sets' per-query values (`evaluate_retrieval`)."""
    split = split or eval_cfg.split
    results: list[SetResult] = []
    for kind, path, data, out_of_domain in loaded if loaded is not None else load_sets(eval_cfg, split,
                                                                                      include_ood=include_ood):
        if kind == "sts":
            name = dataset_name(path)
            metrics = evaluate_sts(encode, data, name)
            results.append(SetResult("sts", name, split, metrics, {
                "path": str(path), "n_pairs": len(data), "role": "query (both sides)",
                "out_of_domain": out_of_domain, "primary": f"{name}/{PRIMARY_METRIC['sts']}"}))
            continue
        details: dict = {"path": str(path), "out_of_domain": out_of_domain, "primary": f"{data.name}/{PRIMARY_METRIC['retrieval']}",
                         "skipped_qrels": data.meta.get("skipped_qrels", {})}
        metrics = evaluate_retrieval(retrieval_encode or encode, data, eval_cfg.k_values, eval_cfg.ignore_identical_ids,
                                     eval_cfg.factory, details=details, per_query=per_query)
        results.append(SetResult("retrieval", data.name, split, metrics, details))
    return results


def evaluate(encode: Encode, eval_cfg: EvalConfig, split: str | None = None, *,
             include_ood: bool = True, retrieval_encode: Encode | None = None,
             per_query: dict | None = None) -> dict[str, float]:
    """Flat metrics of every configured set: "{dataset}/ndcg@10", "{dataset}/spearman_cosine", ..."""
    out: dict[str, float] = {}
    for res in evaluate_sets(encode, eval_cfg, split, include_ood=include_ood, retrieval_encode=retrieval_encode,
                             per_query=per_query):
        clash = set(out) & set(res.metrics)
        if clash:
            raise DataError(f"two evaluation sets share the name '{res.dataset}'; rename a folder")
        out.update(res.metrics)
    return out
