"""train.tune: adapter: the base model encodes the training queries and the corpus once (embedding cache and
prompts apply), a linear query adapter trains on those vectors in seconds (`textcl.adapter`), and the output
folder is a Router model whose `encode_query` applies it (documents, and every index, keep the base model).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState

from textcl import distributed as D
from textcl.adapter import (
    AdapterFit,
    AdapterSettings,
    LinearAdapter,
    QueryTargets,
    fit_adapter,
)
from textcl.adapter_files import adapted, adapter_router, save_adapter
from textcl.compress import index_view
from textcl.config import RunConfig, save_config
from textcl.data.batching import whole_batch
from textcl.errors import ConfigError
from textcl.eval import evaluate_sets, load_sets
from textcl.models import MemoEncoder, adopt_rule, encoder_for, load_configured_model, model_rule
from textcl.scores import INNER_PRODUCT
from textcl.train import guard
from textcl.train.corpus import TrainingCorpus, build_training_corpus
from textcl.train.data import load_training_data
from textcl.train.evaluation import significance
from textcl.train.trainer import TrainResult
from textcl.types import Example

log = logging.getLogger(__name__)


def adapter_settings(config: RunConfig, normalize: bool) -> AdapterSettings:
    """The adapter's settings from a recipe: train.* (lr, batch_size, epochs, ...), train.adapter.*, the loss's
    temperature and the seed."""
    tc = config.train
    return AdapterSettings(lr=tc.lr, batch_size=tc.batch_size, epochs=tc.epochs, max_steps=tc.max_steps,
                           rank=tc.adapter.rank, bias=tc.adapter.bias, weight_decay=tc.weight_decay,
                           temperature=config.loss.temperature, eval_every=tc.eval_every,
                           patience=tc.early_stopping_patience, max_grad_norm=tc.max_grad_norm,
                           scheduler=tc.scheduler, warmup_ratio=tc.warmup_ratio, seed=config.seed, normalize=normalize)


def example_targets(corpus: TrainingCorpus, examples: Sequence[Example]) -> QueryTargets:
    """Each training row's targets under tune: query's rules (`TrainingCorpus.targets` / `positive_pairs`):
    every known positive a target; known positives, their texts and the query's text out of its denominator."""
    batch = whole_batch(examples)
    _, exclude = corpus.targets(batch)
    return QueryTargets(n=len(examples), positives=corpus.positive_pairs(batch), exclude=exclude)


def train_adapter(config: RunConfig, examples: Sequence[Example] | None = None, *,
                  overwrite: bool = False) -> TrainResult:
    """Train the adapter of `config` and write its Router model to train.output_dir (plus `adapter/`: W, b and
    adapter.json with settings, dev scores and timings)."""
    tc, mc, ec = config.train, config.model, config.eval
    config.check()
    out, shard = Path(tc.output_dir), _shard(config)
    guard.guard_previous_run(out, out / "checkpoints", overwrite, remove=D.rank() == 0)
    provenance: dict = {}
    if examples is None:
        examples, provenance = load_training_data(config)
    base = load_configured_model(mc)
    base.requires_grad_(False)
    adopt_rule(base, model_rule(base, mc))  # the saved Router encodes with the prompts it was trained with
    # Scoring precision: the vectors the adapter trains on are those evaluation and the saved model produce.
    encode = MemoEncoder(encoder_for(base, mc, scoring=True))
    if encode.rule.similarity not in INNER_PRODUCT:  # the adapter's Router scores q' . d (Dense [+ Normalize])
        raise ConfigError(f"train.tune: adapter scores by inner product; the model's similarity is "
                          f"{encode.rule.similarity}. Set model.similarity: cosine or dot, or use tune: query / full")
    corpus = build_training_corpus(config, examples, encode, shard)
    queries = torch.from_numpy(encode([ex.query for ex in examples], "query"))
    targets = example_targets(corpus, examples)
    settings = adapter_settings(config, normalize=encode.rule.normalize)
    evaluate = None
    if ec.retrieval or ec.sts:
        dev_cfg = dataclasses.replace(ec, ood_sts=[], ood_retrieval=[])
        loaded = load_sets(dev_cfg, ec.dev_split, include_ood=False)  # read once, scored at every evaluation
        view = index_view(encode, config.index, config.seed)  # dev retrieval searches the recipe's index form

        def evaluate(adapter: torch.nn.Module, per_query: dict | None = None) -> dict[str, float]:
            tuned = adapted(encode, adapter)
            results = evaluate_sets(tuned, dev_cfg, ec.dev_split, loaded=loaded, per_query=per_query,
                                    retrieval_encode=view.over(tuned) if view is not None else None)
            return {k: v for res in results for k, v in res.metrics.items()}
    else:
        log.warning("no evaluation sets: the adapter after the last step is kept (nothing to select on)")
    fit = fit_adapter(queries, corpus.shard if corpus.shard is not None else corpus.embeddings.float(), targets,
                      settings, evaluate, ec.metric_for_best, log_every=tc.log_every)
    if evaluate is not None and ec.min_gain_se and fit.best_step:
        fit = keep_identity_unless_significant(fit, evaluate, ec.min_gain_se)
    _log_fit(fit)
    if D.rank() == 0:  # every rank holds the same adapter
        adapter_router(base, fit.weight, fit.bias if settings.bias else None, settings.normalize).save(
            str(out), create_model_card=False)
        save_adapter(out / "adapter", fit.weight, fit.bias, {
            **fit.summary(), "base_model": mc.name_or_path, "text_rule": encode.rule.describe(),
            "training_queries": len(examples), "corpus": len(corpus), "provenance": provenance})
        save_config(config, out / "textcl_config.yaml")
    before = {"dev": fit.base} if fit.base else {}
    after = {"dev": fit.best} if fit.best else {}
    return TrainResult(output_dir=str(out), best_checkpoint=None, history=fit.history, before=before, after=after,
                       steps=fit.steps, stopped_early=fit.stopped_early)


def keep_identity_unless_significant(fit: AdapterFit, evaluate: Callable, z: float) -> AdapterFit:
    """`eval.min_gain_se` for the adapter: the trained adapter is kept only when its dev gain over W = I is at least
    `z` standard errors of the per-query paired difference, raised for having chosen it among every adapter
    evaluated on dev (see `selection.keep_base_unless_significant`)."""
    dim = fit.weight.shape[0]
    identity = LinearAdapter(dim, bias=True, normalize=fit.settings.normalize)
    trained = LinearAdapter(dim, bias=True, normalize=fit.settings.normalize)
    with torch.no_grad():
        trained.delta.copy_(torch.from_numpy(fit.weight) - torch.eye(dim))
        trained.bias.copy_(torch.from_numpy(fit.bias))
    per_query = []
    for adapter in (identity, trained):
        values: dict = {}
        evaluate(adapter, per_query=values)
        per_query.append(values.get(fit.metric, {}))
    record = significance(per_query[0], per_query[1], fit.metric, z, fit.dev_per_query)
    if record is None:
        return fit
    history = [*fit.history, {"step": fit.steps, "significance": record}]
    if record["kept"] == "tuned":
        return dataclasses.replace(fit, history=history)
    return dataclasses.replace(fit, weight=np.eye(dim, dtype=np.float32), bias=np.zeros(dim, dtype=np.float32),
                               best=fit.base, best_step=0, history=history)


def _shard(config: RunConfig) -> tuple[int, int] | None:
    """train.corpus_shard under a launcher (accelerate launch, torchrun): this process's (rank, world), after
    joining the launcher's process group; None on one process (every row here)."""
    if not config.train.corpus_shard:
        return None
    PartialState()  # initialises torch.distributed from the launcher's environment; nothing on one process
    return (D.rank(), D.world_size()) if D.is_distributed() else None


def _log_fit(fit: AdapterFit) -> None:
    s = fit.settings
    form = "full" if s.rank is None else f"rank {s.rank}"
    log.info("adapter (%s, %d parameters): %d steps (%d per epoch, dev every %d) in %.1f s + %.1f s of dev "
             "evaluation%s", form, fit.parameters, fit.steps, fit.steps_per_epoch, fit.eval_every, fit.train_s,
             fit.eval_s, "; stopped early" if fit.stopped_early else "")
    if fit.metric and fit.best:
        log.info("dev %s: %.4f at W = I -> %.4f at step %s", fit.metric, fit.base.get(fit.metric, float("nan")),
                 fit.best[fit.metric], fit.best_step)
