"""The pieces the training loop assembles: accelerator, optimizer, LR schedule and the embed function.

Each is a small function so the loop in `loop.py` reads top to bottom without setup noise.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from datetime import timedelta

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import batch_to_device
from transformers import get_scheduler

from textcl.config import ModelConfig, TrainConfig
from textcl.errors import ConfigError
from textcl.models import model_rule, resolve_precision
from textcl.textrule import preprocess

log = logging.getLogger(__name__)

# Parameters whose name contains one of these get no weight decay (biases and normalisation scales).
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight", "norm.weight")


def build_accelerator(precision: str, *, timeout_s: int = 600, log_with: list[str] | None = None,
                      project_dir: str | None = None) -> tuple[Accelerator, str]:
    """An Accelerator with bf16 autocast where the hardware has bf16 units (or when asked), else fp32;
    `log_with` / `project_dir`: accelerate's experiment trackers (textcl.train.tracking)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = resolve_precision(precision, device)
    # The accelerator state is a process-wide singleton; reset it so a second train() in the same
    # process (tests, notebooks) may use another precision. The process group itself is kept.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        mixed_precision="bf16" if resolved == "bf16" else "no",
        cpu=device == "cpu",
        log_with=log_with,
        project_dir=project_dir,
        # Parameters that get no gradient (BERT's pooler) are frozen before wrapping (see loop.py);
        # find_unused_parameters=True fails with several forwards per backward (GradCache).
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False),
                         InitProcessGroupKwargs(timeout=timedelta(seconds=timeout_s))],
    )
    return accelerator, resolved


_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


def layer_depth(name: str, num_layers: int) -> int:
    """0 for embeddings, i + 1 for transformer block i, num_layers + 1 for everything above."""
    m = _LAYER.search(name)
    if m:
        return int(m.group(1)) + 1
    return 0 if "embed" in name else num_layers + 1


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm weights are excluded from weight decay (standard BERT recipe).

    layer_lr_decay < 1: layer-wise LR decay (ELECTRA, BEiT): block i of L gets lr * decay^(L - i),
    the embeddings lr * decay^(L + 1); the top (pooling, heads) the full lr. Lower layers move less.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    depths = [int(m.group(1)) + 1 for n, _ in named if (m := _LAYER.search(n))]
    num_layers = max(depths, default=0)
    if cfg.layer_lr_decay != 1.0 and not depths:
        raise ConfigError("train.layer_lr_decay: found no numbered transformer layers "
                          "('layer.N.' in parameter names) in this model")
    groups: dict[tuple[int, bool], list[torch.nn.Parameter]] = {}
    for name, param in named:
        depth = layer_depth(name, num_layers) if cfg.layer_lr_decay != 1.0 else num_layers + 1
        groups.setdefault((depth, any(k in name for k in NO_DECAY)), []).append(param)
    params = [{"params": ps, "weight_decay": 0.0 if no_decay else cfg.weight_decay,
               "lr": cfg.lr * cfg.layer_lr_decay ** (num_layers + 1 - depth)}
              for (depth, no_decay), ps in sorted(groups.items())]
    return torch.optim.AdamW(params, lr=cfg.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' linear / cosine / constant schedule with warmup (the sentence-transformers baselines' own):
    warmup over ceil(warmup_ratio * total_steps) steps from LR 0, then decay to 0 at `total_steps`."""
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[cfg.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def make_embed(model: torch.nn.Module, st_model: SentenceTransformer,
               cfg: ModelConfig) -> Callable[[list[str], str], torch.Tensor]:
    """`embed(texts, role) -> Tensor[n, D]` with grad, float32, by the model's text rule (`textrule`): the
    role's prompt through the model's own `preprocess`, forward, L2-normalised when the similarity is cosine.
    The same rule the Encoder applies, so training scores what evaluation and indexes score.

    `model` is what runs forward (possibly DDP-wrapped with autocast); `st_model` is the plain
    SentenceTransformer that owns the tokenizer, prompts and similarity.
    """
    rule = model_rule(st_model, cfg)
    device = st_model.device

    def embed(texts: list[str], role: str = "document") -> torch.Tensor:
        features = batch_to_device(preprocess(st_model, texts, rule.prompts.get(role, ""), role), device)
        return rule.finish(model(features)["sentence_embedding"])

    return embed


def enable_gradient_checkpointing(st_model: SentenceTransformer) -> None:
    backbone = getattr(st_model[0], "auto_model", None)
    if backbone is None or not hasattr(backbone, "gradient_checkpointing_enable"):
        log.warning("gradient checkpointing is not supported by %s; continuing without it",
                    type(st_model[0]).__name__)
        return
    backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
