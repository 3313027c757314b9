"""What carries a linear query adapter (`textcl.adapter`) out of textcl: its files (`adapter.safetensors`, `W.npy`,
`b.npy`, `adapter.json`) and the sentence-transformers Router whose query route is the base model + `Dense` (W, b,
identity activation) + `Normalize`, so that `encode_query` applies it and `encode_document` stays the base model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer

from textcl.errors import DataError
from textcl.models import router_model

ADAPTER_FILES = ("adapter.safetensors", "W.npy", "b.npy", "adapter.json")


def save_adapter(folder: str | Path, weight: np.ndarray, bias: np.ndarray, info: dict) -> Path:
    """Write `adapter.safetensors` (weight, bias), `W.npy`, `b.npy` (zeros without a bias) and `adapter.json`
    (`info`: `AdapterFit.summary()`, whose settings.normalize `load_adapter` reads, plus anything else)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    w, b = np.ascontiguousarray(weight, np.float32), np.ascontiguousarray(bias, np.float32)
    save_file({"weight": torch.from_numpy(w), "bias": torch.from_numpy(b)}, str(folder / "adapter.safetensors"))
    np.save(folder / "W.npy", w)
    np.save(folder / "b.npy", b)
    (folder / "adapter.json").write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    return folder


def load_adapter(folder: str | Path) -> tuple[np.ndarray, np.ndarray, bool]:
    """(W, b, normalize) from a folder `save_adapter` wrote, or from a `tune: adapter` model folder (its
    `adapter/`)."""
    folder = Path(folder)
    if not (folder / "adapter.safetensors").is_file() and (folder / "adapter" / "adapter.safetensors").is_file():
        folder = folder / "adapter"
    path = folder / "adapter.safetensors"
    if not path.is_file():
        raise DataError("no adapter.safetensors here (write one with `textcl adapter fit`)", str(folder))
    tensors = load_file(str(path))
    info = json.loads((folder / "adapter.json").read_text(encoding="utf-8")) if (folder / "adapter.json").is_file() \
        else {}
    normalize = bool(info.get("settings", {}).get("normalize", True))
    return tensors["weight"].numpy(), tensors["bias"].numpy(), normalize


# ---------------------------------------------------------------- the model that applies it


def adapter_router(base: SentenceTransformer, weight: np.ndarray, bias: np.ndarray | None,
                   normalize: bool) -> SentenceTransformer:
    """A Router model: `encode_query` = the base model's modules + Dense(W, b, identity activation) (+ Normalize
    when `normalize`); `encode_document` and `encode` = the base model. The routes share the base modules, so
    the saved folder adds only the adapter's weights and the document side keeps the base fingerprint."""
    return router_model(with_adapter(base, weight, bias, normalize), base)


def with_adapter(base: SentenceTransformer, weight: np.ndarray, bias: np.ndarray | None,
                 normalize: bool) -> SentenceTransformer:
    """The base model's modules (shared, not copied) + Dense(W, b, identity activation) (+ Normalize when
    `normalize`), with the base model's prompts and similarity: what `encode_query` of `adapter_router` runs."""
    # sentence-transformers >= 6 (as router_model): the rest of textcl imports on older ones
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    modules = list(base)
    head: list[torch.nn.Module] = []
    if normalize and type(modules[-1]).__name__ != "Normalize":
        head.append(Normalize())  # the adapter was trained on unit vectors (a bias makes the scale matter)
    dim = int(weight.shape[1])
    w = torch.as_tensor(np.asarray(weight, np.float32))
    b = torch.as_tensor(np.asarray(bias, np.float32)) if bias is not None and np.any(bias) else None
    head.append(Dense(dim, int(weight.shape[0]), bias=b is not None, activation_function=torch.nn.Identity(),
                      init_weight=w, init_bias=b))
    if normalize:
        head.append(Normalize())
    return SentenceTransformer(modules=[*modules, *head], device=str(base.device), prompts=dict(base.prompts or {}),
                               default_prompt_name=base.default_prompt_name,
                               similarity_fn_name=base.similarity_fn_name)
