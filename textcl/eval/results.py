"""Evaluation results: every number stored next to the conventions that produced it, and a table.

JSON layout: {"model": {...}, "sets": [{task, dataset, split, conventions, metrics}],
"results": [{key, value, task, dataset, split, metric, k, precision, model_fingerprint,
ignore_identical_ids, ...}]}. Values are fractions (0.3159); the printed table shows x100.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TABLE_COLUMNS = {"sts": ("spearman_cosine", "pearson_cosine", "spearman_dot"),
                 "retrieval": ("ndcg@10", "mrr@10", "recall@100", "map@10")}


@dataclass
class SetResult:
    """The metrics of one evaluated set and the conventions used to compute them."""

    task: str  # "sts" or "retrieval"
    dataset: str
    split: str
    metrics: dict[str, float]  # flat "{dataset}/{metric}" keys
    conventions: dict[str, Any] = field(default_factory=dict)


def _metric_record(key: str, value: float, res: SetResult, model: dict) -> dict:
    metric = key.split("/", 1)[1]
    m = re.fullmatch(r"(.+)@(\d+)", metric)
    record: dict[str, Any] = {"key": key, "value": None if math.isnan(value) else value, "task": res.task,
                              "dataset": res.dataset, "split": res.split,
                              "metric": m.group(1) if m else metric, "k": int(m.group(2)) if m else None,
                              "precision": model.get("precision"), "model_fingerprint": model.get("fingerprint")}
    if res.task == "retrieval":
        for name in ("ignore_identical_ids", "ignore_identical_ids_source", "factory", "candidates",
                     "n_queries_evaluated"):
            record[name] = res.conventions.get(name)
    else:
        record["n_pairs"] = res.conventions.get("n_pairs")
        record["role"] = res.conventions.get("role")
    return record


def build_results(results: list[SetResult], model: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready results file; `model` holds name_or_path, fingerprint, precision, max_seq_length..."""
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "sets": [{"task": r.task, "dataset": r.dataset, "split": r.split, "conventions": r.conventions,
                  "metrics": r.metrics} for r in results],
        "results": [_metric_record(k, v, r, model) for r in results for k, v in r.metrics.items()],
    }


def write_results(report: dict[str, Any], path: str | Path) -> Path:
    """Write JSON atomically (temp file + rename) so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(_clean(report), fh, indent=2, allow_nan=False)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def _clean(obj: Any) -> Any:
    """NaN/inf (e.g. a correlation over constant scores) become null: JSON has no NaN."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def metric_sort_key(key: str) -> tuple:
    """"set/ndcg@10" sorts after "set/ndcg@3": by set, metric name, then k as a number."""
    name, _, k = key.partition("@")
    return (name, int(k) if k.isdigit() else -1, key)


def points(value: Any) -> str:
    """A metric as points (x100, 2 decimals), the unit every textcl table uses; "–" when absent."""
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) and not math.isnan(value) else "–"


def format_results(report: dict[str, Any]) -> str:
    """A fixed-width table of the main metrics (x100), one row per set, with its conventions."""
    model = report.get("model", {})
    lines = [f"model {model.get('name_or_path', '?')}  fingerprint {str(model.get('fingerprint', '?'))[:12]}  "
             f"precision {model.get('precision', '?')}"]
    lines.append(f"{'dataset':<22} {'split':<6} {'task':<9} metrics (x100)")
    for s in report.get("sets", []):
        cols = TABLE_COLUMNS.get(s["task"], ())
        cells = []
        for c in cols:
            v = s["metrics"].get(f"{s['dataset']}/{c}")
            cells.append(f"{c} {'n/a' if v is None or math.isnan(v) else f'{100 * v:6.2f}'}")
        conv = s["conventions"]
        note = (f"identical-ids {'dropped' if conv.get('ignore_identical_ids') else 'kept'}, "
                f"{conv.get('n_queries_evaluated')} queries" if s["task"] == "retrieval"
                else f"{conv.get('n_pairs')} pairs")
        lines.append(f"{s['dataset']:<22} {s['split']:<6} {s['task']:<9} " + "  ".join(cells) + f"  ({note})")
    return "\n".join(lines)
