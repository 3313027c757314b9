"""Linear query adapters over frozen embeddings: q' = W q (+ b), then L2-normalised for a cosine model; the
documents keep their vectors. W = I + delta (full d x d) or I + U V^T (rank r, V zero-initialised), trained with
the whole-corpus multi-positive InfoNCE of query-side training (`losses.corpus_info_nce`); no transformer runs.

Its files, the Router model and the encoders that apply it: `textcl.adapter_files`.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import get_scheduler

from textcl import distributed as D
from textcl.errors import ConfigError, DataError
from textcl.eval.metrics import is_primary
from textcl.losses import corpus_info_nce
from textcl.shard import CorpusShard, sharded_corpus_info_nce

log = logging.getLogger(__name__)

Pairs = tuple[torch.Tensor, torch.Tensor]  # (query rows, corpus rows)
SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class AdapterSettings:
    """How an adapter trains. `weight_decay` is AdamW's decoupled decay on W - I (full form) or on U and V
    (low rank, W - I = U V^T): it pulls W towards the identity, never towards 0. `eval_every` None = a quarter
    epoch (at least 4 dev evaluations per epoch); `patience` counts evaluations without a gain."""

    lr: float = 1e-3
    batch_size: int = 64
    epochs: int = 30
    max_steps: int | None = None
    rank: int | None = None  # None = full d x d
    bias: bool = False
    weight_decay: float = 0.0
    temperature: float = 0.05
    eval_every: int | None = None
    patience: int | None = None
    max_grad_norm: float | None = None
    scheduler: str = "constant"
    warmup_ratio: float = 0.0
    seed: int = 42
    normalize: bool = True  # the model's similarity is cosine: q' is L2-normalised

    def __post_init__(self) -> None:
        for name in ("batch_size", "epochs", "max_steps", "rank", "eval_every", "patience"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"adapter {name} must be a positive integer, got {value!r}")
        if self.lr <= 0 or self.temperature <= 0 or self.weight_decay < 0:
            raise ConfigError(f"adapter lr and temperature must be > 0 and weight_decay >= 0, got lr={self.lr}, "
                              f"temperature={self.temperature}, weight_decay={self.weight_decay}")
        if self.scheduler not in SCHEDULES:
            raise ConfigError(f"adapter scheduler must be one of {', '.join(SCHEDULES)}, got {self.scheduler!r}")


class LinearAdapter(torch.nn.Module):
    """q' = W q + b (b only with `bias`), L2-normalised when `normalize`; starts at W = I, b = 0."""

    def __init__(self, dim: int, *, rank: int | None = None, bias: bool = False, normalize: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.dim, self.rank, self.normalize = dim, rank, normalize
        if rank is None:
            self.delta = torch.nn.Parameter(torch.zeros(dim, dim))
        else:  # LoRA's rule: one factor random, the other zero, so U V^T = 0 and both get a gradient
            self.u = torch.nn.Parameter(torch.randn(dim, rank, generator=generator) / math.sqrt(dim))
            self.v = torch.nn.Parameter(torch.zeros(dim, rank))
        self.bias = torch.nn.Parameter(torch.zeros(dim)) if bias else None

    def weight(self) -> torch.Tensor:
        """W [d, d] (rows: output dimensions, as torch.nn.Linear and sentence-transformers' Dense store it)."""
        eye = torch.eye(self.dim, dtype=torch.float32)
        return eye + (self.delta if self.rank is None else self.u @ self.v.T)

    def towards_identity(self) -> list[torch.nn.Parameter]:
        """The parameters weight decay applies to: those of W - I."""
        return [self.delta] if self.rank is None else [self.u, self.v]

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        out = q.float() @ self.weight().T
        if self.bias is not None:
            out = out + self.bias
        return F.normalize(out, dim=-1) if self.normalize else out

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        """(W [d, d], b [d]) as float32 arrays; b is zeros without a bias."""
        with torch.no_grad():
            b = self.bias if self.bias is not None else torch.zeros(self.dim)
            return self.weight().numpy().copy(), b.numpy().copy()


@dataclass(frozen=True)
class QueryTargets:
    """The training signal of n queries: every (query, corpus row) positive pair, and every (query, corpus row)
    left out of the query's denominator (its known positives among them), as in `corpus_info_nce`."""

    n: int
    positives: Pairs
    exclude: Pairs

    def __post_init__(self) -> None:
        missing = set(range(self.n)) - set(self.positives[0].tolist())
        if missing:
            raise DataError(f"{len(missing)} training queries have no positive in the corpus (e.g. row {min(missing)})")
        object.__setattr__(self, "_index", tuple(_by_row(p, self.n) for p in (self.positives, self.exclude)))

    def batch(self, idx: torch.Tensor) -> tuple[Pairs, Pairs]:
        """(positives, exclude) of the queries `idx`, renumbered to their positions in `idx`."""
        out = []
        for cols, ptr in self._index:  # type: ignore[attr-defined]
            counts = ptr[idx + 1] - ptr[idx]
            starts = torch.repeat_interleave(ptr[idx] - torch.cumsum(counts, 0) + counts, counts)
            out.append((torch.repeat_interleave(torch.arange(len(idx)), counts),
                        cols[starts + torch.arange(int(counts.sum()))]))
        return out[0], out[1]


def _by_row(pairs: Pairs, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cols sorted by row, stably; row offsets [n + 1]): a row's cols are cols[ptr[r]:ptr[r + 1]]."""
    rows, cols = pairs
    order = torch.sort(rows, stable=True).indices
    ptr = torch.zeros(n + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return cols[order], ptr


Evaluate = Callable[[LinearAdapter], dict[str, float]]


@dataclass
class AdapterFit:
    """A trained adapter (the one best on dev, else the last) and how it got there."""

    weight: np.ndarray
    bias: np.ndarray
    settings: AdapterSettings
    history: list[dict] = field(default_factory=list)
    metric: str | None = None
    best_step: int | None = None
    best: dict[str, float] = field(default_factory=dict)  # dev metrics of the kept adapter
    base: dict[str, float] = field(default_factory=dict)  # dev metrics at W = I
    steps: int = 0
    steps_per_epoch: int = 0
    eval_every: int = 0
    stopped_early: bool = False
    train_s: float = 0.0  # optimizer steps only
    eval_s: float = 0.0
    parameters: int = 0
    # per-query dev values of `metric` of every adapter evaluated after step 0 (when `evaluate` takes `per_query`):
    # the candidates eval.min_gain_se's test accounts for having chosen among; not saved
    dev_per_query: list[dict[str, float]] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: settings, shapes, dev scores and timings (no weights)."""
        return {"settings": asdict(self.settings), "dim": int(self.weight.shape[0]), "parameters": self.parameters,
                "metric": self.metric, "best_step": self.best_step, "dev_best": self.best, "dev_base": self.base,
                "steps": self.steps, "steps_per_epoch": self.steps_per_epoch, "eval_every": self.eval_every,
                "stopped_early": self.stopped_early, "train_s": round(self.train_s, 3),
                "eval_s": round(self.eval_s, 3),
                "apply": "q' = W q + b (W.npy, b.npy), then L2-normalise q' when normalize is true; documents "
                         "are used as they are"}


def _pick(metrics: dict[str, float], name: str | None) -> tuple[str, float]:
    if name is not None:
        if name not in metrics:
            raise ConfigError(f"metric {name!r} is not among the dev metrics: {', '.join(sorted(metrics)) or 'none'}")
        return name, float(metrics[name])
    key = next((k for k in metrics if is_primary(k)), next(iter(metrics), None))
    if key is None:
        raise ConfigError("the dev evaluator returned no metrics")
    return key, float(metrics[key])


class _Selection:
    """Dev evaluations: history entries, the best adapter so far, and patience."""

    def __init__(self, adapter: LinearAdapter, evaluate: Evaluate | None, metric: str | None,
                 patience: int | None):
        self.adapter, self.evaluate, self.metric, self.patience = adapter, evaluate, metric, patience
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.best_metrics: dict[str, float] = {}
        self.base: dict[str, float] = {}
        self.best_state = copy.deepcopy(adapter.state_dict())
        self.bad, self.seconds, self.history = 0, 0.0, []
        self.per_query: list[dict[str, float]] = []  # of every evaluation after step 0 (AdapterFit.dev_per_query)
        self.wants_per_query = evaluate is not None and "per_query" in inspect.signature(evaluate).parameters

    def check(self, step: int, epoch: int) -> bool:
        """Evaluate at `step`; keep the adapter when it improved. True = stop (patience ran out)."""
        if self.evaluate is None:
            return False
        t0 = time.perf_counter()
        self.adapter.eval()
        values: dict = {}
        with torch.no_grad():
            metrics = self.evaluate(self.adapter, per_query=values) if self.wants_per_query else \
                self.evaluate(self.adapter)
        self.seconds += time.perf_counter() - t0
        key, value = _pick(metrics, self.metric)
        self.metric = key
        if step and values.get(key):
            self.per_query.append(values[key])
        self.history.append({"step": step, "epoch": epoch, "eval": {"dev": metrics}, "metric": key})
        if step == 0:
            self.base = metrics
        if self.best_value is None or value > self.best_value:
            self.best_value, self.best_step, self.best_metrics, self.bad = value, step, metrics, 0
            self.best_state = copy.deepcopy(self.adapter.state_dict())
        else:
            self.bad += 1
        log.debug("adapter dev at step %d: %s %.4f (best %.4f at step %s)", step, key, value, self.best_value,
                  self.best_step)
        return self.patience is not None and self.bad >= self.patience


def _batch_loss(q: torch.Tensor, corpus: torch.Tensor | CorpusShard, positives: Pairs, exclude: Pairs,
                temperature: float) -> torch.Tensor:
    """The batch's loss, back-propagated. A `CorpusShard` (this rank's rows; every rank runs the same batch):
    the loss / W is back-propagated (each rank through its own rows, positives once per rank) and the parameter
    gradients are summed over ranks by the caller: the gradient of one process holding the whole corpus."""
    if isinstance(corpus, torch.Tensor):
        loss = corpus_info_nce(q, None, corpus, exclude=exclude, temperature=temperature, positives=positives)
        loss.backward()
        return loss
    loss = sharded_corpus_info_nce(q, corpus, own=(0, q.shape[0]), exclude=exclude, temperature=temperature,
                                   positives=positives)
    (loss / D.world_size()).backward()
    return loss


def fit_adapter(queries: torch.Tensor, corpus: torch.Tensor | CorpusShard, targets: QueryTargets,
                settings: AdapterSettings,
                evaluate: Evaluate | None = None, metric: str | None = None, log_every: int = 50) -> AdapterFit:
    """Train an adapter on `queries` [n, d] (the base model's query vectors, row i = query i of `targets`)
    against `corpus` [N, d] (frozen document vectors; a `CorpusShard`: this rank's rows, every rank calls with
    the same arguments, `textcl.shard`). Each epoch visits the queries in the order of
    `default_rng([seed, epoch])`; `evaluate(adapter) -> dev metrics` runs at step 0 (W = I), every `eval_every`
    steps and at the end, and the adapter best on `metric` (default: the first primary metric) is kept."""
    s = settings
    n, dim = queries.shape
    corpus = corpus.float() if isinstance(corpus, torch.Tensor) else CorpusShard(
        corpus.embeddings.float(), corpus.start, corpus.size)
    width = corpus.shape[1] if isinstance(corpus, torch.Tensor) else corpus.embeddings.shape[1]
    if targets.n != n or width != dim:
        raise DataError(f"adapter: {n} query vectors of dim {dim}, {targets.n} queries in the targets and document "
                        f"vectors of dim {width}: they must match")
    queries = queries.float()
    adapter = LinearAdapter(dim, rank=s.rank, bias=s.bias, normalize=s.normalize,
                            generator=torch.Generator().manual_seed(s.seed))
    groups = [{"params": adapter.towards_identity(), "weight_decay": s.weight_decay}]
    if adapter.bias is not None:
        groups.append({"params": [adapter.bias], "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=s.lr)
    steps_per_epoch = math.ceil(n / s.batch_size)
    total = s.max_steps or s.epochs * steps_per_epoch
    # the trainer's rule (train/components.py): warmup over ceil(warmup_ratio * total) steps, then the decay
    scheduler = get_scheduler({"constant": "constant_with_warmup"}.get(s.scheduler, s.scheduler), optimizer,
                              num_warmup_steps=math.ceil(s.warmup_ratio * total), num_training_steps=total)
    eval_every = s.eval_every or max(1, steps_per_epoch // 4)
    sel = _Selection(adapter, evaluate, metric, s.patience)
    sel.check(0, 0)
    step, stop, train_s, losses = 0, False, 0.0, []
    for epoch in range(math.ceil(total / steps_per_epoch)):
        order = torch.from_numpy(np.random.default_rng([s.seed, epoch]).permutation(n))
        for start in range(0, n, s.batch_size):
            t0 = time.perf_counter()
            adapter.train()
            idx = order[start:start + s.batch_size]
            positives, exclude = targets.batch(idx)
            optimizer.zero_grad(set_to_none=True)
            loss = _batch_loss(adapter(queries[idx]), corpus, positives, exclude, s.temperature)
            for p in adapter.parameters() if isinstance(corpus, CorpusShard) and D.is_distributed() else ():
                torch.distributed.all_reduce(p.grad)
            if s.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(adapter.parameters(), s.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            train_s += time.perf_counter() - t0
            losses.append(float(loss.detach()))
            if step % log_every == 0 or step == total:
                sel.history.append({"step": step, "epoch": epoch, "loss": float(np.mean(losses)),
                                    "lr": scheduler.get_last_lr()[0]})
                losses = []
            if step % eval_every == 0 or step == total:
                stop = sel.check(step, epoch)
            if stop or step == total:
                break
        if stop or step == total:
            break
    if evaluate is not None:
        adapter.load_state_dict(sel.best_state)
        if sel.best_step == 0:
            log.warning("the adapter never beat the identity on dev: the kept adapter is W = I")
    weight, bias = adapter.export()
    history = sorted(sel.history, key=lambda h: (h["step"], "eval" in h))
    if stop:
        history.append({"step": step, "early_stopped": True})
    return AdapterFit(weight=weight, bias=bias, settings=s, history=history, metric=sel.metric,
                      dev_per_query=sel.per_query,
                      best_step=sel.best_step, best=sel.best_metrics, base=sel.base, steps=step,
                      steps_per_epoch=steps_per_epoch, eval_every=eval_every, stopped_early=stop, train_s=train_s,
                      eval_s=sel.seconds, parameters=sum(p.numel() for p in adapter.parameters()))
