"""GradCache (Gao et al., 2021): the loss sees a batch of any size while the model only ever holds
activations for `chunk_size` texts. Pass 1 embeds chunks without grad; the loss is computed and
back-propagated to the cached embeddings; pass 2 re-embeds each chunk with grad and back-propagates
its cached embedding gradient. RNG state is restored per chunk so dropout masks match pass 1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from textcl.types import EmbedFn

NoSync = Callable[[], contextlib.AbstractContextManager[Any]]


@dataclass
class _Chunk:
    texts: list[str]
    role: str
    rng: tuple[torch.Tensor, list[torch.Tensor] | None]
    leaf: torch.Tensor


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


class GradCache:
    """Use `embed` like the plain embed function, then call `backward(loss)` instead of
    `loss.backward()`. One instance per optimisation step.

    `no_sync` (e.g. `lambda: ddp_model.no_sync()`) wraps every re-embedding except the last, so a
    DDP model all-reduces gradients once per step.
    """

    def __init__(self, embed_fn: EmbedFn, chunk_size: int, *, no_sync: NoSync | None = None,
                 restore_rng: bool = True):
        if chunk_size < 1:
            raise ValueError(f"GradCache chunk_size must be >= 1, got {chunk_size}")
        self.embed_fn, self.chunk_size = embed_fn, chunk_size
        self.no_sync, self.restore_rng = no_sync, restore_rng
        self._chunks: list[_Chunk] = []

    def embed(self, texts: list[str], role: str) -> torch.Tensor:
        """Embed `texts` chunk by chunk without grad; returns a leaf tensor that requires grad."""
        leaves = []
        for s in range(0, len(texts), self.chunk_size):
            part = list(texts[s: s + self.chunk_size])
            state = _rng_state()
            with torch.no_grad():
                out = self.embed_fn(part, role)
            leaf = out.detach().requires_grad_(True)
            self._chunks.append(_Chunk(part, role, state, leaf))
            leaves.append(leaf)
        if not leaves:
            raise ValueError("GradCache.embed got no texts")
        return torch.cat(leaves) if len(leaves) > 1 else leaves[0]

    def _replays(self) -> Iterator[tuple[_Chunk, contextlib.AbstractContextManager[Any]]]:
        last = len(self._chunks) - 1
        for n, chunk in enumerate(self._chunks):
            sync = n == last or self.no_sync is None
            yield chunk, contextlib.nullcontext() if sync else self.no_sync()  # type: ignore[misc]

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate `loss` to the cached embeddings, then through the model chunk by chunk."""
        loss.backward()
        end_state = _rng_state()
        for chunk, ctx in self._replays():
            grad = chunk.leaf.grad
            if grad is None:  # chunk not used by the loss
                grad = torch.zeros_like(chunk.leaf)
            with ctx:
                if self.restore_rng:
                    _set_rng_state(chunk.rng)
                out = self.embed_fn(chunk.texts, chunk.role)
                out.backward(grad.to(out.dtype))
        _set_rng_state(end_state)  # the step leaves the RNG where pass 1 left it
        self._chunks = []
