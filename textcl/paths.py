"""The one rule for every path key in a recipe (`resolve_path`), where a run's outputs go
(`place_outputs`), and paths made absolute for loading or relative for sharing.

Pure path logic on config dataclasses (their fields carry `metadata={"path": "file"|"hub"}`); no
textcl imports, so `config` builds on it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # `name` or `org/name`
_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt", ".gz", ".yaml", ".yml", ".npy",
                  ".faiss", ".safetensors")


def is_hub_id(value: str, base_dir: Path) -> bool:
    """`hf://...`, or `name` / `org/name` without a data-file suffix that names nothing in `base_dir`."""
    if value.startswith("hf://"):
        return True
    return (bool(_HUB_ID.match(value)) and not value.lower().endswith(_FILE_SUFFIXES)
            and not (base_dir / value).exists())


def resolve_path(value: Any, base_dir: Path, *, hub: bool = False) -> Any:
    """THE rule for every path key (recipe values: `base_dir` = the recipe's folder; `--set`: the cwd).

    Absolute and `~` paths are kept; every relative path resolves against `base_dir`, whether or
    not it exists yet. Only keys that accept a hub id (`hub=True`: model.name_or_path, data.train,
    mining.cross_encoder, eval sets) keep a value as given when `is_hub_id` says it is one.
    """
    if isinstance(value, list):
        return [resolve_path(v, base_dir, hub=hub) for v in value]
    if not isinstance(value, str) or not value:
        return value
    if value.startswith("~"):
        return str(Path(value).expanduser())
    if Path(value).is_absolute() or (hub and is_hub_id(value, base_dir)):
        return value
    return str((base_dir / value).resolve())


def absolute_paths(config: Any, base_dir: Path | None = None) -> Any:
    """`config` with every path key resolved by `resolve_path` against `base_dir` (default: the cwd)."""
    base_dir = base_dir or Path.cwd()
    changes = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            changes[f.name] = absolute_paths(value, base_dir)
        elif f.metadata.get("path"):
            changes[f.name] = resolve_path(value, base_dir, hub=f.metadata["path"] == "hub")
    return dataclasses.replace(config, **changes)


def portable_paths(obj: Any, root: str | Path) -> Any:
    """`obj` (JSON-like) with every absolute path string written relative to `root` (`./x`, `../data/y`):
    files that travel (model card, report, saved configs) hold no local paths. A relative path
    starting with `.` resolves against its file's folder by `resolve_path`, so it stays loadable."""
    if isinstance(obj, dict):
        return {k: portable_paths(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable_paths(v, root) for v in obj]
    if isinstance(obj, str) and obj.startswith("/") and "\n" not in obj:
        rel = os.path.relpath(obj, Path(root).resolve())
        return rel if rel.startswith(".") else f"./{rel}"
    return obj


def place_outputs(config: Any) -> Any:
    """Where a run's outputs go, shared by `textcl run` and `textcl train`: the model, mined file and
    index under `output_dir` unless the recipe names them; defaults left relative resolve against
    the working directory (every path in the result is absolute)."""
    out = Path(config.output_dir).resolve()
    train = config.train
    default = type(train).__dataclass_fields__["output_dir"].default  # "out/model": not set by the recipe
    model_dir = out / "model" if train.output_dir == default else Path(train.output_dir)
    train = dataclasses.replace(train, output_dir=str(model_dir.resolve()))
    mining = config.mining
    if mining.output is None and mining.enabled and config.loss.name == "infonce":
        mining = dataclasses.replace(mining, output=str(out / "mined.jsonl"))
    model = config.model
    if model.cache_dir is None and train.tune in ("query", "adapter"):
        # query-side training keeps the base model's document embeddings: check, evaluation, training
        # and the index then embed the corpus once between them
        model = dataclasses.replace(model, cache_dir=str(out / "embedding-cache"))
    index = config.index
    if index.output is None:
        index = dataclasses.replace(index, output=str(out / "index"))
    return dataclasses.replace(config, output_dir=str(out), model=model, train=train, mining=mining, index=index)
