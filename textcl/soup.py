"""Weight averaging ("model soup", Wortsman et al. 2022) of models fine-tuned from the same base.

`average_models([run1/model, run2/model, ...], out)` writes a model whose every floating-point
weight is the (weighted) mean of the inputs'. Inputs are sentence-transformers model folders or
textcl checkpoint folders (`.../checkpoints/step-N`, weights only; the first input must then be a
full model folder, which gives the module stack and tokenizer). Averaging only makes sense for
models fine-tuned from one base (different seeds, settings or checkpoints of one run): textcl
checks that module stacks, tokenizers and every weight's name and shape agree, and refuses otherwise.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file

from textcl.errors import ConfigError
from textcl.models import load_model, model_fingerprint, module_stack, tokenizer_text

log = logging.getLogger(__name__)


def _weights(path: Path, template, ref: dict[str, torch.Tensor],
             trust_remote_code: bool) -> tuple[dict[str, torch.Tensor], str | None]:
    """(state dict, fingerprint or None for a checkpoint) of `path`, checked against `template`
    (the first model) and its state dict `ref`."""
    if (path / "modules.json").is_file():
        model = load_model(str(path), device="cpu", trust_remote_code=trust_remote_code)
        if module_stack(model) != module_stack(template):
            raise ConfigError(f"{path}: its module stack differs from the first model's; "
                              "only models fine-tuned from the same base can be averaged")
        if tokenizer_text(model) != tokenizer_text(template):
            raise ConfigError(f"{path}: its tokenizer differs from the first model's")
        state, fingerprint = model.state_dict(), model_fingerprint(model)
    elif (path / "model.safetensors").is_file():  # a textcl checkpoint: weights only
        state, fingerprint = load_file(str(path / "model.safetensors")), None
    else:
        raise ConfigError(f"{path}: neither a model folder (modules.json) nor a textcl checkpoint "
                          "(model.safetensors)")
    if set(state) != set(ref):
        missing, extra = sorted(set(ref) - set(state)), sorted(set(state) - set(ref))
        raise ConfigError(f"{path}: weight names differ from the first model's "
                          f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(ref[name].shape):
            raise ConfigError(f"{path}: weight '{name}' has shape {tuple(tensor.shape)}, "
                              f"the first model's {tuple(ref[name].shape)}")
    return state, fingerprint


def interpolate(base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor],
                alpha: float) -> dict[str, torch.Tensor]:
    """(1 - alpha) * base + alpha * tuned for every floating-point tensor (computed in float64, cast back
    to tuned's dtype and device); other tensors (integer buffers) are taken from `tuned`."""
    if set(base) != set(tuned):
        raise ConfigError("cannot interpolate: the two models' weight names differ")
    out = {}
    for name, t in tuned.items():
        if t.is_floating_point():
            mixed = base[name].detach().to(t.device, torch.float64) * (1.0 - alpha) + t.detach().double() * alpha
            out[name] = mixed.to(t.dtype)
        else:
            out[name] = t
    return out


def average_models(paths: Sequence[str | os.PathLike], output: str | os.PathLike,
                   weights: Sequence[float] | None = None, *, trust_remote_code: bool = False) -> Path:
    """Average `paths` (weights proportional to `weights`, default uniform) into a model at `output`.

    Float weights are averaged in float64 and cast back to their dtype; integer buffers (e.g.
    position ids) must be equal in every input. Writes `soup.json` (inputs, their fingerprints and
    mixing weights) next to the model.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ConfigError("average_models needs at least one model")
    if weights is None:
        weights = [1.0] * len(paths)
    if len(weights) != len(paths):
        raise ConfigError(f"{len(weights)} weights for {len(paths)} models")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
    if not (paths[0] / "modules.json").is_file():
        raise ConfigError(f"{paths[0]}: the first input must be a model folder (modules.json), "
                          "not a checkpoint")
    model = load_model(str(paths[0]), device="cpu", trust_remote_code=trust_remote_code)
    ref = model.state_dict()
    total = float(sum(weights))
    acc: dict[str, torch.Tensor] = {}
    first: dict[str, torch.Tensor] = {}
    fingerprints = []
    for i, (path, w) in enumerate(zip(paths, weights)):
        state, fingerprint = ((ref, model_fingerprint(model)) if i == 0  # the first input is `model` itself
                              else _weights(path, model, ref, trust_remote_code))
        fingerprints.append(fingerprint)
        for name, tensor in state.items():
            tensor = tensor.detach().cpu()
            if not tensor.is_floating_point():
                if i == 0:
                    first[name] = tensor.clone()
                elif not torch.equal(tensor, first[name]):
                    raise ConfigError(f"{path}: integer buffer '{name}' differs from the first model's")
                continue
            part = tensor.double() * (w / total)
            acc[name] = part if i == 0 else acc[name] + part
        log.info("soup: added %s (weight %g)", path, w)
    merged = {name: (acc[name].to(ref[name].dtype) if name in acc else first[name]) for name in ref}
    model.load_state_dict(merged, strict=True)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out), safe_serialization=True)
    (out / "soup.json").write_text(json.dumps({
        "inputs": [str(p) for p in paths], "weights": [w / total for w in weights],
        "input_fingerprints": fingerprints, "fingerprint": model_fingerprint(model)}, indent=2) + "\n")
    log.info("soup of %d models written to %s", len(paths), out)
    return out
