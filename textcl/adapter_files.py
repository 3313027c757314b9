"""What carries a linear query adapter (`textcl.adapter`) out of textcl: the function and encoders that apply it,
its files (`adapter.safetensors`, `W.npy`, `b.npy`, `adapter.json`) and the sentence-transformers Router whose query
route is the base model + `Dense` (W, b, identity activation) + `Normalize`, so that `encode_query` applies it and
`encode_document` stays the base model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer

from textcl.adapter import LinearAdapter
from textcl.errors import DataError
from textcl.models import router_model

ADAPTER_FILES = ("adapter.safetensors", "W.npy", "b.npy", "adapter.json")


def apply_adapter(q: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, normalize: bool) -> np.ndarray:
    """The adapter on query vectors [n, d] (what `encode_query` of the saved Router model computes)."""
    out = np.asarray(q, dtype=np.float32) @ np.asarray(weight, dtype=np.float32).T
    if bias is not None:
        out = out + np.asarray(bias, dtype=np.float32)
    if normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out.astype(np.float32)


class AdaptedEncode:
    """An Encode whose query vectors go through `adapt` (e.g. an adapter); documents, the fingerprint (the
    document side's, as a RoutedEncoder's) and the text rule are `encode`'s."""

    routed = True  # queries and documents differ: STS also reports the query-document score

    def __init__(self, encode: Callable, adapt: Callable[[np.ndarray], np.ndarray]):
        self.inner, self.adapt = encode, adapt
        self.fingerprint = getattr(encode, "fingerprint", None)
        self.rule = getattr(encode, "rule", None)

    def prepare(self, texts: dict) -> None:
        prepare = getattr(self.inner, "prepare", None)
        if prepare is not None:
            prepare(texts)

    def __call__(self, texts: list[str], role: str = "document") -> np.ndarray:
        out = self.inner(texts, role)
        return self.adapt(out) if role == "query" else out


def adapted(encode: Callable, adapter: LinearAdapter) -> AdaptedEncode:
    """`encode` with `adapter` on its queries (no gradient)."""
    def adapt(q: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return adapter(torch.from_numpy(np.asarray(q, np.float32))).numpy()

    return AdaptedEncode(encode, adapt)


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
