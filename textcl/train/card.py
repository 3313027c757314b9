"""The model card (README.md) written into a trained model's folder: base model, data and mining
provenance, the full training config, and held-out metrics before and after training.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import yaml

from textcl.config import RunConfig, to_dict


def _metric_rows(before: dict, after: dict) -> list[str]:
    rows = []
    for part in ("dev", "ood"):
        b, a = before.get(part, {}), after.get(part, {})
        for key in sorted(set(b) | set(a)):
            vb, va = b.get(key), a.get(key)
            delta = f"{(va - vb):+.4f}" if isinstance(vb, (int, float)) and isinstance(va, (int, float)) else ""
            rows.append(f"| {part} | {key} | {_fmt(vb)} | {_fmt(va)} | {delta} |")
    return rows


def _towers(config: RunConfig) -> list[str]:
    if config.train.tune != "query":
        return []
    return ["## Query tower only", "",
            "Only the **query** tower was fine-tuned; the **document** tower is the base model "
            f"({config.model.name_or_path}), unchanged and frozen. `encode_query` runs the tuned tower, "
            "`encode_document` (and plain `encode`) the base one, so document embeddings and indexes built "
            "with the base model stay valid: nothing needs re-encoding.", ""]


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "–"


def render_model_card(*, config: RunConfig, state: Any, before: dict, after: dict, provenance: dict) -> str:
    tc = config.train
    lines = [
        "---",
        "library_name: sentence-transformers",
        "tags: [sentence-transformers, sentence-similarity, feature-extraction, textcl]",
        f"base_model: {config.model.name_or_path}",
        "---",
        "",
        f"# Fine-tuned from {config.model.name_or_path} with textcl",
        "",
        "Load it with `SentenceTransformer(\"<this folder>\")`.",
        "",
        *_towers(config),
        "## Training",
        "",
        f"- loss: {config.loss.name} (temperature {config.loss.temperature}, symmetric {config.loss.symmetric}, "
        f"false-negative masking {config.loss.mask_false_negatives})",
        f"- steps: {state.step} (skipped non-finite: {state.skipped_steps}), global batch {tc.batch_size}, "
        f"lr {tc.lr}, {tc.scheduler} schedule, warmup ratio {tc.warmup_ratio}, processes {state.world_size}",
        f"- selected checkpoint: step {state.best_step} by {config.eval.metric_for_best or 'first primary dev metric'}"
        + (f", interpolated with the base model: {state.best_interpolation} x fine-tuned + "
           f"{1 - state.best_interpolation:.2f} x base (WiSE-FT, chosen on dev)"
           if state.best_interpolation is not None else "")
        if state.best_step is not None else "- selected checkpoint: the last step (no dev evaluator)",
        f"- written: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        "## Data and mining provenance",
        "",
        "```json",
        json.dumps(provenance, indent=2, sort_keys=True, default=str),
        "```",
        "",
    ]
    rows = _metric_rows(before, after)
    if rows:
        lines += ["## Held-out metrics (before -> after training)", "",
                  "| set | metric | before | after | change |", "|---|---|---|---|---|", *rows, ""]
    lines += ["## Training config", "", "```yaml", yaml.safe_dump(to_dict(config), sort_keys=False).rstrip(),
              "```", ""]
    return "\n".join(lines)


def write_model_card(out_dir: str | Path, **kwargs: Any) -> Path:
    path = Path(out_dir) / "README.md"
    path.write_text(render_model_card(**kwargs), encoding="utf-8")
    return path
