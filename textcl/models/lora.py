"""LoRA on a SentenceTransformer's transformer (peft, an optional extra: `pip install textcl[lora]`): add trainable
low-rank updates with everything else frozen, merge them into plain weights for saving, and write the updates
alone as a peft adapter folder (adapter_config.json + adapter_model.safetensors).

Why the saved query tower is merged: sentence-transformers loads a peft adapter folder only as a model's own
Transformer; inside a Router route the route's subfolder is also looked up under the adapter's
`base_model_name_or_path` (sentence-transformers 6.3 / transformers 5.24), so a Router cannot point its query
route at "the base model + this adapter". The merged tower loads anywhere without peft.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from sentence_transformers import SentenceTransformer

from textcl.config import LoraConfig
from textcl.errors import ConfigError

LORA_DIR = "lora"  # the adapter alone, beside the saved model's modules


def _peft() -> Any:
    try:  # optional dependency: only LoRA runs need it
        import peft
    except ImportError:
        raise ConfigError("train.lora needs the peft package: pip install 'textcl[lora]'") from None
    return peft


def _transformer(model: SentenceTransformer) -> Any:
    module = model[0] if len(model) else None
    if module is None or not hasattr(module, "auto_model"):
        raise ConfigError(f"train.lora: the model's first module is {type(module).__name__}, not a Transformer; "
                          "LoRA applies to transformer models only")
    return module


def _tuner_layers(model: torch.nn.Module) -> list[tuple[str, Any]]:
    """(name, layer) of every module peft put LoRA updates in."""
    return [(name, m) for name, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "get_base_layer")]


def has_lora(model: SentenceTransformer) -> bool:
    """Whether the model's transformer carries LoRA updates (`add_lora`)."""
    return bool(_tuner_layers(model))


def _peft_config(lc: LoraConfig) -> Any:
    return _peft().LoraConfig(r=lc.r, lora_alpha=lc.alpha, target_modules=list(lc.target_modules),
                              lora_dropout=lc.dropout, bias="none")


def add_lora(model: SentenceTransformer, lc: LoraConfig) -> int:
    """Put LoRA updates into the model's transformer, in place (B = 0 at the start, so the output is unchanged),
    and freeze every other parameter of the model; returns the number of trainable parameters."""
    module = _transformer(model)
    model.requires_grad_(False)
    try:  # the transformer stays the module's model (sentence-transformers' forward, save and fingerprints see it)
        _peft().inject_adapter_in_model(_peft_config(lc), module.auto_model)
    except ValueError as exc:  # peft: no module matched target_modules
        raise ConfigError(f"train.lora.target_modules {lc.target_modules}: {exc}") from None
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merge_lora(model: SentenceTransformer) -> SentenceTransformer:
    """Merge the LoRA updates into the weights they update, in place (a plain model again); returns `model`."""
    for name, layer in _tuner_layers(model):
        layer.merge()
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer.get_base_layer())
    return model


def merged_copy(model: SentenceTransformer) -> SentenceTransformer:
    """A plain copy of `model` with its LoRA updates merged (the model itself when it has none)."""
    return merge_lora(copy.deepcopy(model)) if has_lora(model) else model


def save_lora(model: SentenceTransformer, folder: str | Path, lc: LoraConfig, base_model: str) -> Path:
    """Write the LoRA updates alone as peft's adapter folder (adapter_config.json with `base_model` as
    base_model_name_or_path, adapter_model.safetensors):
    `PeftModel.from_pretrained(AutoModel.from_pretrained(base), folder)` rebuilds the tuned transformer."""
    peft = _peft()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    transformer = _transformer(model).auto_model
    state = peft.get_peft_model_state_dict(transformer, adapter_name="default")
    # peft's own files name the weights under its PeftModel wrapper
    save_file({f"base_model.model.{k}": v.detach().cpu().contiguous() for k, v in state.items()},
              str(folder / "adapter_model.safetensors"))
    config = _peft_config(lc)
    config.base_model_name_or_path = str(base_model)
    config.save_pretrained(str(folder))
    return folder
