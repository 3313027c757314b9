"""The model a run starts training from: the recipe's model; with tune: query also train.init_adapter (a linear
query adapter, frozen, on top of the transformer: chaining `tune: adapter` into query-tower training) and
train.lora (low-rank updates, then the only weights that train)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from sentence_transformers import SentenceTransformer

from textcl.adapter_files import load_adapter, with_adapter
from textcl.config import RunConfig
from textcl.errors import ConfigError
from textcl.models import load_configured_model
from textcl.models.lora import add_lora

log = logging.getLogger(__name__)


def start_model(config: RunConfig, device: str | None = None, *, lora: bool = True) -> SentenceTransformer:
    """The model set-up trains (`lora=False`: without the LoRA updates, the start WiSE-FT mixes towards)."""
    tc = config.train
    model = load_configured_model(config.model, device=device)
    if tc.init_adapter is not None:
        model = _with_init_adapter(model, tc.init_adapter, config.model.name_or_path)
    if lora and tc.lora.r:
        total = sum(p.numel() for p in model.parameters())
        trainable = add_lora(model, tc.lora)
        log.info("LoRA r=%d alpha=%g on %s: %d of %d parameters train", tc.lora.r, tc.lora.alpha,
                 ", ".join(tc.lora.target_modules), trainable, total)
    return model


def _with_init_adapter(model: SentenceTransformer, path: str, base_name: str) -> SentenceTransformer:
    """`model` + the adapter's Dense (+ Normalize), frozen: the query tower starts where the adapter ended, and the
    transformer under it learns what the linear map could not."""
    weight, bias, normalize = load_adapter(path)
    dim = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()  # ST 6 renamed it
    if weight.shape != (dim, dim):
        raise ConfigError(f"train.init_adapter {path}: the adapter maps {weight.shape[1]} -> {weight.shape[0]} "
                          f"dimensions, the model embeds {dim}; use an adapter trained on this model's vectors")
    info_path = next((p for p in (Path(path) / "adapter.json", Path(path) / "adapter" / "adapter.json")
                      if p.is_file()), None)
    trained_on = json.loads(info_path.read_text(encoding="utf-8")).get("base_model") if info_path else None
    if trained_on is not None and trained_on != base_name:
        log.warning("train.init_adapter %s was trained on %s, the recipe's model is %s", path, trained_on, base_name)
    n = len(model)
    adapted = with_adapter(model, weight, bias if np.any(bias) else None, normalize)
    for module in list(adapted)[n:]:
        module.requires_grad_(False)
    log.info("the query tower starts as the base model + the adapter of %s (frozen)", path)
    return adapted
