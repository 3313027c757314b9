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
from textcl.eval.results import metric_sort_key, points
from textcl.hub import BUNDLED_NAMES
from textcl.paths import is_hub_id, portable_paths


def _metric_rows(before: dict, after: dict) -> list[str]:
    rows = []
    for part in ("dev", "ood"):
        b, a = before.get(part, {}), after.get(part, {})
        for key in sorted(set(b) | set(a), key=metric_sort_key):
            vb, va = b.get(key), a.get(key)
            delta = f"{100 * (va - vb):+.2f}" if isinstance(vb, (int, float)) and isinstance(va, (int, float)) else ""
            rows.append(f"| {part} | {key} | {points(vb)} | {points(va)} | {delta} |")
    return rows


def _towers(config: RunConfig) -> list[str]:
    if config.train.tune != "query":
        return []
    return ["## Query tower only", "",
            "Only the **query** tower was fine-tuned; the **document** tower is the base model "
            f"({config.model.name_or_path}), unchanged and frozen. `encode_query` runs the tuned tower, "
            "`encode_document` (and plain `encode`) the base one, so document embeddings and indexes built "
            "with the base model stay valid: nothing needs re-encoding."
            + (f" Training held the query tower's text-vs-text similarities close to the base model's "
               f"(`train.similarity_anchor: {config.train.similarity_anchor}`)." if config.train.similarity_anchor
               else ""), ""]




def _rule_line(rule: dict | None) -> list[str]:
    """How text became vectors in training, evaluation and indexes (the model's own prompts unless overridden)."""
    if not rule:
        return []
    return [f"- text rule: query prompt {rule['query_prompt']!r}, document prompt {rule['document_prompt']!r}, "
            f"similarity {rule['similarity']} (what `encode_query` / `encode_document` of this folder use)"]


def base_model_name(name_or_path: str) -> str | None:
    """The base model as a hub id for the card's metadata; None for a local folder (no path leaks)."""
    if name_or_path.lower() in {n.lower() for n in BUNDLED_NAMES}:
        return "sentence-transformers/all-MiniLM-L6-v2"
    return name_or_path if is_hub_id(name_or_path, Path.cwd()) else None


def render_model_card(*, config: RunConfig, state: Any, before: dict, after: dict, provenance: dict,
                      root: str | Path = ".") -> str:
    """The card; every absolute path in it is written relative to `root` (the model folder)."""
    tc = config.train
    base = base_model_name(config.model.name_or_path)
    lines = [
        "---",
        "library_name: sentence-transformers",
        "tags: [sentence-transformers, sentence-similarity, feature-extraction, textcl]",
        *([f"base_model: {base}"] if base else []),
        "---",
        "",
        f"# Fine-tuned from {base or Path(config.model.name_or_path).name} with textcl",
        "",
        "Load it with `SentenceTransformer(\"<this folder>\")`.",
        "",
        *_towers(config),
        "## Training",
        "",
        *_rule_line(provenance.get("text_rule")),
        f"- loss: {config.loss.name} (temperature {config.loss.temperature}, symmetric {config.loss.symmetric}, "
        f"false-negative masking {config.loss.mask_false_negatives})",
        f"- steps: {state.step} (skipped non-finite: {state.skipped_steps}), global batch {tc.batch_size}, "
        f"lr {tc.lr}, {tc.scheduler} schedule, warmup ratio {tc.warmup_ratio}, processes {state.world_size}",
        f"- selected checkpoint: step {state.best_step} by {config.eval.metric_for_best or 'first primary dev metric'}"
        + (f", interpolated with the base model: {state.best_interpolation} x fine-tuned + "
           f"{1 - state.best_interpolation:.2f} x base (WiSE-FT, chosen on dev"
           + (f" within a forgetting budget of {tc.max_ood_drop} points on the out-of-domain sets)" if tc.max_ood_drop is not None
              else ")")
           if state.best_interpolation is not None else "")
        + (f" (the starting model: neither the best checkpoint nor a mix stayed within a forgetting budget of "
           f"{tc.max_ood_drop} points on the out-of-domain sets)"
           if any(h.get("chosen") == 0.0 for h in state.history if "forgetting_budget" in h) else "")
        if state.best_step is not None else "- selected checkpoint: the last step (no dev evaluator)",
        f"- written: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        "## Data and mining provenance",
        "",
        "```json",
        json.dumps(portable_paths(provenance, root), indent=2, sort_keys=True, default=str),
        "```",
        "",
    ]
    rows = _metric_rows(before, after)
    if rows:
        lines += ["## Held-out metrics (before -> after training, points = x100)", "",
                  "| set | metric | before | after | change |", "|---|---|---|---|---|", *rows, ""]
    config_text = yaml.safe_dump(portable_paths(to_dict(config), root), sort_keys=False).rstrip()
    lines += ["## Training config (paths relative to this folder)", "", "```yaml", config_text, "```", ""]
    return "\n".join(lines)


def write_model_card(out_dir: str | Path, **kwargs: Any) -> Path:
    path = Path(out_dir) / "README.md"
    path.write_text(render_model_card(root=out_dir, **kwargs), encoding="utf-8")
    return path
