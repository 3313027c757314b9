"""Two towers: a query/document `Router` split into towers, written from two towers, encoded by role
(`RoutedEncoder`); `encoder_for` / `make_encoder`, the one way to build the Encode of a model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from textcl.config import ModelConfig
from textcl.errors import ConfigError
from textcl.models.encoder import Encoder, model_rule
from textcl.models.precision import scoring_precision
from textcl.textrule import ROLES, TextRule, text_rule

ROUTES = ROLES  # a query/document Router routes by the roles of the text rule


def split_towers(model: SentenceTransformer) -> tuple[SentenceTransformer, SentenceTransformer] | None:
    """(query tower, document tower) of a model whose first module is a query/document `Router`, as two
    plain SentenceTransformers sharing its modules; None for an ordinary (one-tower) model."""
    first = model[0] if len(model) else None
    subs = getattr(first, "sub_modules", None)
    if first is None or type(first).__name__ != "Router" or subs is None or set(subs) != set(ROUTES):
        return None
    rest = [model[i] for i in range(1, len(model))]
    towers = []
    for route in ROUTES:
        tower = SentenceTransformer(modules=[*subs[route], *rest], device=str(model.device))
        tower.eval()
        towers.append(tower)
    return towers[0], towers[1]


def router_model(query: SentenceTransformer, document: SentenceTransformer) -> SentenceTransformer:
    """One SentenceTransformer whose `encode_query` runs `query` and `encode_document` (and plain
    `encode`) runs `document`: a sentence-transformers Router over the two towers' modules."""
    # sentence-transformers >= 6 only (query-side training); the rest of this module imports on older ones
    from sentence_transformers.base.modules import Router

    router = Router.for_query_document(query_modules=list(query), document_modules=list(document))
    # The base model's prompts and similarity carry over: encode_query / encode_document of the Router model
    # prepend and score exactly as the base model's (and as textcl trained the query tower) do.
    return SentenceTransformer(modules=[router], device=str(document.device), prompts=dict(document.prompts or {}),
                               default_prompt_name=document.default_prompt_name,
                               similarity_fn_name=document.similarity_fn_name)


class RoutedEncoder:
    """Encode with two towers: queries through `query`, documents through `document`.

    `fingerprint` is the DOCUMENT tower's: an index or embedding cache built with the base model stays
    valid for a model whose query tower alone was fine-tuned. `query_fingerprint` is the query tower's:
    reports and provenance record both (`fingerprints`)."""

    routed = True

    def __init__(self, query: Any, document: Any):
        self.query, self.document = query, document
        self.fingerprint = document.fingerprint

    @property
    def query_fingerprint(self) -> str:
        return self.query.fingerprint

    @property
    def rule(self) -> TextRule:
        return self.query.rule

    def prepare(self, texts: Mapping[str, Sequence[str]]) -> None:
        """Each tower plans int8 calibration on what it will encode (`Encoder.prepare`)."""
        for role, tower in (("query", self.query), ("document", self.document)):
            prepare = getattr(tower, "prepare", None)
            if prepare is not None and role in texts:
                prepare({role: texts[role]})

    @property
    def precision(self) -> str:
        return self.query.precision

    @property
    def device(self) -> torch.device:
        return self.query.device

    @property
    def prompts(self) -> dict[str, str]:
        return {"query": self.query.rule.prompts["query"], "document": self.document.rule.prompts["document"]}

    def __call__(self, texts: list[str], role: str = "document") -> np.ndarray:
        if role not in ROUTES:
            raise ConfigError(f"role must be 'query' or 'document', got {role!r}")
        return (self.query if role == "query" else self.document)(texts, role)


def encoder_for(model: SentenceTransformer, mc: ModelConfig, *, precision: str | None = None,
                scoring: bool = False, cache: bool = True, show_progress: bool = True) -> Encoder | RoutedEncoder:
    """The one way to build the Encode of a model with a recipe's model section (batch size, prompts,
    embedding cache, precision), for evaluation, mining, indexes, the data check and training.

    `scoring`: the encoder reports numbers, so int8 becomes fp32 (`scoring_precision`) and auto never
    picks int8; `precision` (e.g. an explicit --precision) overrides the section's. `cache=False` leaves the
    embedding cache off (weights that change during training)."""
    if precision is None:
        precision = scoring_precision(mc.precision) if scoring else mc.precision
    return make_encoder(model, precision=precision, batch_size=mc.batch_size, rule=model_rule(model, mc),
                        cache_dir=mc.cache_dir if cache else None, show_progress=show_progress,
                        allow_int8=mc.allow_int8 and not scoring)


def make_encoder(model: SentenceTransformer, **kwargs: Any) -> Encoder | RoutedEncoder:
    """The Encode for `model`: an `Encoder`, or a `RoutedEncoder` when the model has query/document
    towers (a query-side fine-tune); keyword arguments go to each `Encoder`. Both towers follow the rule of
    the whole model (its prompts and similarity), as sentence-transformers' encode_query/encode_document do."""
    if kwargs.get("rule") is None:  # the whole model's: a Router's towers carry no prompts of their own
        kwargs["rule"] = text_rule(model, kwargs.pop("query_prompt", None), kwargs.pop("document_prompt", None),
                                   kwargs.pop("similarity", None))
    towers = split_towers(model)
    if towers is None:
        return Encoder(model, **kwargs)
    return RoutedEncoder(Encoder(towers[0], **kwargs), Encoder(towers[1], **kwargs))
