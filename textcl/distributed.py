"""Process-group helpers read at call time: rank, world size, a gather that keeps the gradient and
accepts a different row count per rank (so an uneven last batch never hangs), and object gathers.

Everything is the identity on a single process (no torch.distributed group initialised).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def collective_device() -> torch.device:
    """Where small bookkeeping tensors must live for the current backend (CUDA for NCCL)."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_sizes(n: int) -> list[int]:
    """Every rank's `n`, in rank order (one small all_gather; [n] when single process)."""
    if not is_distributed():
        return [n]
    local = torch.tensor([n], dtype=torch.long, device=collective_device())
    out = [torch.zeros_like(local) for _ in range(world_size())]
    dist.all_gather(out, local)
    return [int(t.item()) for t in out]


class _GatherWithGrad(torch.autograd.Function):
    """Forward: pad each rank's rows to the largest count, all_gather, strip padding, concatenate.
    Backward: sum the gradient of the full tensor over ranks, return this rank's slice, so every
    rank's loss sends its gradient to the rank that owns the rows (like reduce_scatter)."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor, sizes: list[int]) -> torch.Tensor:  # type: ignore[override]
        r = rank()
        ctx.offset, ctx.n = sum(sizes[:r]), sizes[r]
        biggest = max(sizes)
        padded = t.new_zeros((biggest, *t.shape[1:]))
        padded[: t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.offset: ctx.offset + ctx.n], None


def gather_with_grad(t: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Rows of `t` from every rank concatenated in rank order, differentiable.

    `sizes` (each rank's row count, from `gather_sizes`) may be passed to save one collective; all
    ranks must call this together. Identity on a single process.
    """
    if not is_distributed():
        return t
    if sizes is None:
        sizes = gather_sizes(t.shape[0])
    return _GatherWithGrad.apply(t, sizes)


def all_gather_object(obj: Any) -> list[Any]:
    """Picklable `obj` from every rank, in rank order ([obj] when single process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def freeze_unused_parameters(module: torch.nn.Module, probe: Callable[[], torch.Tensor]) -> list[str]:
    """Set requires_grad=False on parameters that `probe()` (a forward pass) leaves without a gradient,
    e.g. BERT's pooler under mean pooling; return their names.

    Why: DDP with find_unused_parameters=False never finishes its reduction when a parameter gets no
    gradient (gradients silently stay unsynced), and find_unused_parameters=True fails on this stack
    ("Expected to mark a variable ready only once"). Call once, on every rank, before wrapping in DDP.
    """
    module.zero_grad(set_to_none=True)
    probe().float().sum().backward()
    unused = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    for n, p in module.named_parameters():
        if n in unused:
            p.requires_grad_(False)
    module.zero_grad(set_to_none=True)
    return unused
