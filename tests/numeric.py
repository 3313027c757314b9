"""Numerical reference for gradient tests (imported by tests; pytest's pythonpath includes tests/)."""

from __future__ import annotations

import torch


def finite_differences(loss_of, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """d loss / d q by central differences, one coordinate at a time (float64)."""
    base_q = q.detach().double()
    num = torch.zeros_like(base_q)
    for i in range(base_q.shape[0]):
        for d in range(base_q.shape[1]):
            plus, minus = base_q.clone(), base_q.clone()
            plus[i, d] += eps
            minus[i, d] -= eps
            num[i, d] = (loss_of(plus) - loss_of(minus)) / (2 * eps)
    return num
