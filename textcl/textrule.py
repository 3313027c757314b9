"""The one rule for how a model turns text into a vector, shared by training, the cached corpus, mining,
evaluation, indexes and int8: the prompt of each role, the similarity, and preprocessing, all read from
the model exactly as sentence-transformers' `encode_query` / `encode_document` use them.

A recipe's `None` means "the model's own" (its `prompts` / `default_prompt_name`, its
`similarity_fn_name`); `""` means no prompt; any other string overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from textcl.errors import ConfigError
from textcl.scores import SIMILARITIES

ROLES = ("query", "document")
# sentence-transformers' encode_document takes the first of these prompt names the model has
_DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
_SIMILARITY_ALIASES = {"cos_sim": "cosine", "dot_product": "dot", "dot_score": "dot", "euclidean_sim": "euclidean",
                       "manhattan_sim": "manhattan"}


def model_prompt(model: Any, role: str) -> str:
    """The prompt sentence-transformers' encode_query (role "query") or encode_document ("document") prepends:
    the role's named prompt if the model has one, else the `default_prompt_name` prompt, else none."""
    prompts: Mapping[str, str] = getattr(model, "prompts", None) or {}
    for name in ("query",) if role == "query" else _DOCUMENT_PROMPT_NAMES:
        if name in prompts:
            return prompts[name] or ""
    default = getattr(model, "default_prompt_name", None)
    return (prompts.get(default) or "") if default else ""


def model_similarity(model: Any) -> str:
    """The model's `similarity_fn_name` as textcl names it (sentence-transformers' default is cosine)."""
    name = getattr(model, "similarity_fn_name", None) or "cosine"
    name = str(getattr(name, "value", name))
    return _SIMILARITY_ALIASES.get(name, name)


@dataclass(frozen=True)
class TextRule:
    """Prompt per role and the similarity that losses, mining, evaluation and indexes score with: cosine
    scores unit vectors by inner product, dot the raw vectors by inner product, euclidean and manhattan the
    raw vectors by minus their L2 / L1 distance (`textcl.scores`)."""

    prompts: Mapping[str, str]
    similarity: str

    @property
    def normalize(self) -> bool:
        return self.similarity == "cosine"

    def finish(self, emb: torch.Tensor) -> torch.Tensor:
        """The model's sentence embedding as scored: float32, L2-normalised for cosine."""
        emb = emb.float()
        return F.normalize(emb, p=2, dim=-1) if self.normalize else emb

    def describe(self) -> dict[str, Any]:
        """JSON-ready record for run summaries, index configs, mining provenance and model cards."""
        return {"query_prompt": self.prompts["query"], "document_prompt": self.prompts["document"],
                "similarity": self.similarity}


def text_rule(model: Any, query_prompt: str | None = None, document_prompt: str | None = None,
              similarity: str | None = None) -> TextRule:
    """The rule for `model` (the whole model: for a query/document Router, the Router model, whose prompts
    and similarity its towers share). None = the model's own; "" = no prompt."""
    given = {"query": query_prompt, "document": document_prompt}
    prompts = {role: model_prompt(model, role) if given[role] is None else given[role] for role in ROLES}
    sim = similarity if similarity is not None else model_similarity(model)
    sim = _SIMILARITY_ALIASES.get(sim, sim)
    if sim not in SIMILARITIES:
        raise ConfigError(f"the model's similarity is {sim!r}; textcl scores with {', '.join(SIMILARITIES)} "
                          "(sentence-transformers' similarity_fn_name). Set model.similarity in the recipe to "
                          "choose one")
    return TextRule(prompts=prompts, similarity=sim)


def preprocess(model: Any, texts: list[str], prompt: str, role: str) -> dict[str, Any]:
    """Features for `texts` exactly as sentence-transformers' encode builds them: the model's own
    `preprocess` with the prompt (it strips, lower-cases, truncates to max_seq_length and counts the prompt's
    tokens for pooling that leaves it out) and the role as task (Router models route on it)."""
    return model.preprocess(list(texts), prompt=prompt or None, task=role)

