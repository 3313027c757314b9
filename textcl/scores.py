"""How two embeddings are scored, as sentence-transformers' similarity functions score them for a model's
`similarity_fn_name`: cosine (inner product of unit vectors, normalised by the caller), dot (inner product of
raw vectors), euclidean (minus the L2 distance), manhattan (minus the L1 distance). Search, losses, mining and
evaluation all score through these two functions.
"""

from __future__ import annotations

import torch

SIMILARITIES = ("cosine", "dot", "euclidean", "manhattan")
INNER_PRODUCT = ("cosine", "dot")


def pairwise_scores(q: torch.Tensor, c: torch.Tensor, similarity: str = "dot") -> torch.Tensor:
    """Scores [n_q, n_c] of every query row against every corpus row, as sentence-transformers'
    `similarity` computes them for the model's `similarity_fn_name`: q . c (cosine over unit vectors, dot),
    -||q - c||_2 (euclidean_sim), -||q - c||_1 (manhattan_sim). Differentiable."""
    if similarity in INNER_PRODUCT:
        return q @ c.T
    if similarity == "euclidean":
        return -torch.cdist(q, c, p=2.0)
    if similarity == "manhattan":
        return -torch.cdist(q, c, p=1.0)
    raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")


def paired_scores(q: torch.Tensor, c: torch.Tensor, similarity: str = "dot") -> torch.Tensor:
    """Scores [n] of row i of `q` against row i of `c` (sentence-transformers' pairwise_* functions)."""
    if similarity in INNER_PRODUCT:
        return (q * c).sum(dim=-1)
    if similarity == "euclidean":
        return -torch.linalg.vector_norm(q - c, dim=-1)
    if similarity == "manhattan":
        return -(q - c).abs().sum(dim=-1)
    raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
