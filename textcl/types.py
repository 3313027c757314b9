"""Records every stage shares: training examples, scored pairs, retrieval sets, and the Encode protocol.

Fields are named by role (query, positives, negatives), never by column order.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

if TYPE_CHECKING:  # only for the EmbedFn annotation: importing torch here would slow every `textcl` start
    import torch

Role = Literal["query", "document"]


def normalize_text(text: str) -> str:
    """Key under which two texts count as the same (mining filters and loss masking agree on it):
    NFKC, casefold, whitespace runs collapsed to one space, stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass(frozen=True)
class Example:
    """A query with one or more positives and optional hard negatives (pair or triplet)."""

    query: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...] = ()
    query_id: str | None = None
    positive_ids: tuple[str, ...] = ()
    negative_ids: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()  # optional teacher/mining scores, aligned with negatives

    def to_dict(self) -> dict:
        out: dict = {"query": self.query, "positives": list(self.positives),
                     "negatives": list(self.negatives)}
        if self.query_id is not None:
            out["query_id"] = self.query_id
        if self.positive_ids:
            out["positive_ids"] = list(self.positive_ids)
        if self.negative_ids:
            out["negative_ids"] = list(self.negative_ids)
        if self.scores:
            out["scores"] = list(self.scores)
        return out


@dataclass(frozen=True)
class ScoredPair:
    """Two sentences and a gold similarity score (STS-style)."""

    sentence1: str
    sentence2: str
    score: float


@dataclass(frozen=True)
class Document:
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """MTEB/BEIR convention: title + " " + text, stripped."""
        return (self.title + " " + self.text).strip()


@dataclass
class RetrievalSet:
    """A BEIR-style retrieval set: corpus, queries and graded qrels (query -> doc -> grade)."""

    name: str
    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str = "test"
    meta: dict = field(default_factory=dict)

    def positives(self, query_id: str) -> list[str]:
        """Ids of documents judged relevant (grade > 0) for a query, in qrels order."""
        return [d for d, g in self.qrels.get(query_id, {}).items() if g > 0]


class Encode(Protocol):
    """Texts in, one float32 row per text out, scored by inner product (L2-normalised rows for a cosine model).

    An Encode may also have `prepare({role: texts})` (`plan_encoding`), `fingerprint` and `rule`."""

    def __call__(self, texts: list[str], role: Role = "document") -> np.ndarray: ...


def plan_encoding(encode: Encode, texts: dict[str, Sequence[str]]) -> None:
    """Tell `encode` what a run will encode ({role: texts}) before it starts, when it wants to know (an int8
    Encoder calibrates on a sample of all of it, not on whatever is encoded first)."""
    prepare = getattr(encode, "prepare", None)
    if prepare is not None:
        prepare({role: t for role, t in texts.items() if t})


def similarity_of(encode: Encode) -> str:
    """How `encode`'s vectors are scored: its text rule's similarity; a bare function's vectors by inner product."""
    rule = getattr(encode, "rule", None)
    return rule.similarity if rule is not None else "dot"


def encoder_identity(encode: Encode) -> dict:
    """What a report or provenance records of an Encode: both towers' fingerprints (the same for one model)
    and its text rule (prompts, similarity)."""
    fingerprint = getattr(encode, "fingerprint", None)
    rule = getattr(encode, "rule", None)
    return {"fingerprint": fingerprint, "query_fingerprint": getattr(encode, "query_fingerprint", fingerprint),
            **(rule.describe() if rule is not None else {})}


# Training's embed function: `embed(texts, role) -> Tensor[n, D]` WITH grad (an Encode returns numpy, no grad).
EmbedFn = Callable[[list[str], str], "torch.Tensor"]
