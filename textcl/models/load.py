"""Load sentence-transformers models (local path or hub id; custom code only when opted in) and identify them by
their weights: fingerprints, module stack, tokenizer."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer

from textcl.config import ModelConfig
from textcl.errors import ConfigError
from textcl.hub import check_model_folder, resolve_model_path

log = logging.getLogger(__name__)


def _needs_remote_code(path: str) -> bool:
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return bool(data.get("auto_map"))


def load_model(name_or_path: str | os.PathLike, *, device: str | None = None, trust_remote_code: bool = False,
               max_seq_length: int | None = None) -> SentenceTransformer:
    """Load a SentenceTransformer; custom model code runs only when `trust_remote_code=True`."""
    path = resolve_model_path(name_or_path)
    check_model_folder(Path(path))
    if not trust_remote_code and _needs_remote_code(path):
        raise ConfigError(f"model '{name_or_path}' ships its own Python code (config.json has 'auto_map'); "
                          "it runs only if you opt in: model.trust_remote_code: true in the recipe or "
                          "--trust-remote-code on the command line")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    is_local = Path(path).exists()
    if is_local and not list(Path(path).rglob("*.safetensors")) and list(Path(path).rglob("*.bin")):
        log.warning("%s has no .safetensors weights; loading pickled .bin weights", path)
    try:
        model = SentenceTransformer(path, device=device, trust_remote_code=trust_remote_code,
                                    local_files_only=is_local or os.environ.get("HF_HUB_OFFLINE") == "1")
    except OSError as exc:
        raise ConfigError(f"cannot load model '{name_or_path}' (resolved to '{path}'): {exc}") from None
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    model.eval()
    return model


def model_fingerprint(model: SentenceTransformer) -> str:
    """sha256 of the weights (as fp32 bytes), the module stack, tokenizer and pooling config; not the name."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    h.update(json.dumps(module_stack(model), sort_keys=True, default=str).encode())
    h.update(str(model.max_seq_length).encode())
    tokenizer = tokenizer_text(model)
    if tokenizer is not None:
        h.update(tokenizer.encode())
    return h.hexdigest()


def module_stack(model: SentenceTransformer) -> list[dict]:
    """Each module's type and config, in order: the model's structure apart from weights and tokenizer."""
    return [{"type": type(m).__name__, "config": m.get_config_dict() if hasattr(m, "get_config_dict") else {}}
            for m in model]


def tokenizer_text(model: SentenceTransformer) -> str | None:
    """The tokenizer as text (the fast tokenizer's JSON, else its sorted vocabulary); None without one.

    The fast tokenizer's truncation and padding fields are dropped: they hold the settings of its last
    call (max_length etc.), so they change as soon as it encodes, and a fingerprint built on them would
    miss the embedding cache after every first encode. max_seq_length is hashed on its own.
    """
    tokenizer = getattr(model, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        return json.dumps(state, sort_keys=True)
    if tokenizer is not None:
        return json.dumps(sorted(tokenizer.get_vocab().items()))
    return None


def weights_version(model: torch.nn.Module) -> tuple:
    """Changes whenever a weight or buffer is replaced or updated in place (an optimizer step bumps each
    tensor's version counter): tells "these weights changed" without hashing them."""
    return tuple((id(t), t._version) for t in model.state_dict(keep_vars=True).values())


def load_configured_model(mc: ModelConfig, path: str | os.PathLike | None = None, *,
                          device: str | None = None) -> SentenceTransformer:
    """`load_model` with a recipe's model section (trust_remote_code, max_seq_length); `path` defaults to
    `mc.name_or_path` (pass another to load e.g. a fine-tuned folder with the same settings)."""
    return load_model(mc.name_or_path if path is None else path, device=device,
                      trust_remote_code=mc.trust_remote_code, max_seq_length=mc.max_seq_length)
