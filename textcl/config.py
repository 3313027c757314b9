"""Typed, frozen configuration per concern and the YAML recipe loader.

`load_recipe(path, overrides)` builds a `RunConfig`; unknown keys are an error naming the key and
the closest valid one, `--set a.b=value` overrides are type-checked, and relative paths in a
recipe resolve against the recipe's folder.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from textcl import paths
from textcl.errors import ConfigError

log = logging.getLogger(__name__)
Precision = Literal["auto", "fp32", "bf16"]
EncodePrecision = Literal["auto", "fp32", "bf16", "int8"]  # int8: encoding only (textcl.int8), never training
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _path(default: Any = None, *, hub: bool = False) -> Any:
    """A field holding a filesystem path (`hub=True`: or a hub id), resolved by `paths.resolve_path`."""
    meta = {"path": "hub" if hub else "file"}
    if isinstance(default, list):
        return field(default_factory=list, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = _path("all-MiniLM-L6-v2", hub=True)  # "all-MiniLM-L6-v2" = bundled offline copy
    max_seq_length: int | None = None  # None = the model's own (its sentence_bert_config.json)
    precision: EncodePrecision = "auto"  # encoding; evaluation maps int8 to fp32 unless asked on the CLI
    allow_int8: bool = False  # let precision auto pick int8 (after its quality guard) for mining and indexes
    batch_size: int = 64  # encoding batch size
    trust_remote_code: bool = False  # run Python code shipped with the model (config.json auto_map); off unless you trust it
    # Prompts prepended to queries / documents everywhere (training, mining, evaluation, indexes): None = the
    # model's own (sentence-transformers' encode_query / encode_document rule), "" = none, a string overrides
    query_prompt: str | None = None
    document_prompt: str | None = None  # see query_prompt (documents: the model's document, passage or corpus prompt)
    # How embeddings are scored: None = the model's similarity_fn_name; cosine (unit vectors), dot (raw), euclidean
    # or manhattan (minus the L2 / L1 distance of raw vectors), everywhere: losses, mining, evaluation, indexes
    similarity: Literal["cosine", "dot", "euclidean", "manhattan"] | None = None
    cache_dir: str | None = _path(None)  # on-disk embedding cache (None = off)


@dataclass(frozen=True)
class DataConfig:
    train: str | None = _path(None, hub=True)  # pairs file / folder / BEIR folder / HF id
    format: str = "auto"  # auto|jsonl|csv|tsv|parquet|hf|beir|stsb|sick|flag|text
    split: str = "train"  # split for BEIR folders and HF datasets
    columns: dict[str, str | list[str]] = field(default_factory=dict)  # role -> column name(s)
    on_error: Literal["raise", "skip"] = "raise"  # a bad row: raise (naming file, line and field) or skip it (counted in the load report)
    max_examples: int | None = None  # read at most this many training rows (None = all)
    near_duplicate_threshold: float = 0.95  # cosine similarity for near-duplicate report


@dataclass(frozen=True)
class MiningConfig:
    enabled: bool = True  # mine hard negatives before training (`textcl run`)
    num_negatives: int = 3  # hard negatives kept per row
    skip_top: int = 0  # candidate ranks skipped at the top (likely unlabelled positives)
    depth: int = 50  # ranks searched after skip_top: candidates come from [skip_top, skip_top + depth)
    sampling: Literal["top", "random"] = "top"  # top = the highest-scoring surviving candidates; random = seeded draw among them
    absolute_margin: float | None = None  # keep a negative only if its score < positive score - margin (None = off)
    relative_margin: float | None = 0.05  # NV-Retriever TopK-PercPos: neg < (1-m) * pos
    margin_reference: Literal["max", "min"] = "max"  # which of a row's positives the margins compare to
    rows: Literal["query", "pair"] = "query"  # retrieval sets: one row per query (all positives) or per pair
    max_score: float | None = None  # drop candidates scoring above this similarity (None = off)
    factory: str = "exact"  # "exact" (chunked) or a FAISS factory string: Flat, IVF256,Flat, HNSW32 ...
    query_chunk_size: int = 1024  # queries searched at once
    corpus_chunk_size: int = 16384  # also the unit of work per rank when distributed
    recall_check_queries: int = 200  # queries whose approximate top-k is checked against exact search
    cross_encoder: str | None = _path(None, hub=True)  # re-score candidates with this cross-encoder; drop those it scores as high as the weakest positive
    cross_encoder_max_score: float | None = None  # with cross_encoder: drop candidates it scores above this instead
    output: str | None = _path(None)  # mined rows (.jsonl / .jsonl.gz / .parquet); None = under output_dir


@dataclass(frozen=True)
class LossConfig:
    name: Literal["infonce", "cosent", "simcse"] = "infonce"  # infonce for (query, positive[, negatives]) rows, cosent for scored pairs, simcse for raw text
    temperature: float = 0.05  # softmax temperature on similarities (0.05 suits unit vectors, i.e. a scale of 20)
    angle_weight: float = 0.0  # cosent only: + angle_weight * AnglE's angle objective
    symmetric: bool = False  # infonce: add the positive -> in-batch queries term
    mask_false_negatives: bool = True  # keep known positives and same-text candidates out of each query's negatives
    gather_across_devices: bool = True  # with several processes: every query sees every process's candidates


@dataclass(frozen=True)
class AdapterConfig:
    """train.tune: adapter: a linear map W q (+ b) on the base model's query vectors (textcl.adapter); lr, batch_size,
    epochs, weight_decay (towards W = I), eval_every, early_stopping_patience, scheduler come from train.*."""

    rank: int | None = None  # None: full d x d; r: W = I + U V^T
    bias: bool = False  # also learn b in q' = W q + b


@dataclass(frozen=True)
class LoraConfig:
    """train.lora (tune: query): LoRA (peft; pip install textcl[lora]) on the query tower's transformer: only the
    low-rank updates train; the saved query tower has them merged in (textcl.models.lora)."""

    r: int = 0  # rank of each update B A; 0 = off (the whole query tower trains)
    alpha: float = 16.0  # scale: a layer computes W x + (alpha / r) B A x
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])  # Linear layers that get an update (by name suffix; BERT: query, key, value, dense)
    dropout: float = 0.0  # dropout on the input of the LoRA branch


# train.report_to values: the accelerate tracker and the textcl extra that installs its package
TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


@dataclass(frozen=True)
class TrainConfig:
    output_dir: str = _path("out/model")  # the model and its checkpoints (`textcl run`: <output_dir>/model unless set)
    batch_size: int = 32  # global batch (queries per step over all processes)
    lr: float = 2e-5  # peak learning rate (AdamW)
    epochs: int = 1  # passes over the training rows
    max_steps: int | None = None  # stop after this many steps (overrides epochs for the schedule)
    warmup_ratio: float = 0.1  # share of the steps with a linear warmup
    scheduler: Literal["linear", "cosine", "constant"] = "linear"  # learning-rate decay after warmup
    weight_decay: float = 0.01  # AdamW weight decay (not on biases and LayerNorm weights)
    layer_lr_decay: float = 1.0  # < 1: block i of L trains at lr * decay^(L - i) (lower layers move less)
    max_grad_norm: float | None = 1.0  # gradient clipping (None = off)
    precision: Precision = "auto"  # training precision: auto = bf16 autocast where the hardware has bf16 units, else fp32
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    gradcache_chunk_size: int | None = None  # mini-batch size for GradCache (None = off)
    length_grouped: bool = False  # batch texts of similar length together (less padding)
    num_negatives: int | None = None  # hard negatives per query; None = as many as the data has (<= mining.num_negatives)
    eval_every: int | None = None  # steps; None = once per epoch
    early_stopping_patience: int | None = None  # stop after this many dev evaluations without improvement (None = off)
    save_every: int | None = None  # steps between checkpoints (None = off)
    save_every_minutes: float | None = 10.0  # also checkpoint when this much time passed since the last one
    keep_checkpoints: int = 1  # step checkpoints kept (the best model is kept apart, in checkpoints/best)
    # WiSE-FT: after training, also score (1 - a) * base + a * best checkpoint on dev for each a here
    # (the fine-tuned share); one that beats the best checkpoint becomes the model. [] = off.
    interpolate_base: list[float] = field(default_factory=list)
    # Forgetting budget (points, e.g. 0.5): the WiSE-FT mix kept is the best on dev among the best checkpoint
    # and its interpolate_base mixes whose out-of-domain scores (eval.ood_*, on their DEV split) are at most
    # this far below the base model's, even if a less-mixed model scores higher on dev; when none is, the
    # model training started from. None = off.
    max_ood_drop: float | None = None
    nan_policy: Literal["stop", "skip"] = "stop"  # a non-finite loss: stop the run, or skip that step (counted)
    log_every: int = 10  # steps between loss/lr/throughput log lines
    report_to: list[str] = field(default_factory=list)  # experiment trackers (accelerate's): tensorboard, mlflow, wandb; [] = none; logs under <output_dir>/runs
    # Which tower trains: "both" (one shared model, the usual full fine-tune) or "query" (a copy of the
    # model encodes queries and trains; documents keep the frozen base model, so existing indexes and
    # embedding caches stay valid; implies negatives: corpus).
    # "adapter": no transformer trains; a linear map on the base model's query vectors (train.adapter), in seconds.
    tune: Literal["both", "query", "adapter"] = "both"
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)  # tune=query: train LoRA updates of the query tower only
    # tune=query: start the query tower as the base model + this linear adapter (a `tune: adapter` output or a
    # `textcl adapter fit --out` folder), the adapter frozen; the transformer (or its LoRA updates) trains under it
    init_adapter: str | None = _path(None)
    # "batch": in-batch + mined negatives. "corpus": every query is scored against the whole training
    # corpus (embedded once by the base model; known positives and same-text documents masked).
    negatives: Literal["batch", "corpus"] = "batch"
    corpus: str | None = _path(None)  # documents for corpus negatives (default: data.train's BEIR corpus)
    # Which documents of that corpus train: "all", or "labelled": only those a training row names (its positives
    # and negatives, by id or text). Every other document is a negative of every query, so training learns to rank
    # unlabelled documents low, and documents added to a growing corpus later are unlabelled ones too.
    corpus_scope: Literal["all", "labelled"] = "all"
    corpus_dtype: Literal["auto", "fp32", "fp16"] = "auto"  # storage of the cached corpus embeddings
    corpus_candidates: int | None = None  # None: exact softmax over the corpus; K: top-K + corpus_samples
    corpus_samples: int = 0  # uniform draws per step that estimate the rest of the corpus (with top-K)
    corpus_refresh_every: int | None = None  # tune=both: re-embed the corpus every N steps (None = never)
    # "sample" = one positive per query per step, drawn from its known positives; "all" (tune=query only) =
    # every known positive is a target each step (the mean of one InfoNCE term per positive; free with a
    # cached corpus); "auto" = all with tune=query, else sample
    corpus_positives: Literal["auto", "sample", "all"] = "auto"
    # With N processes, each holds 1/N of the cached corpus embeddings (uneven splits allowed) and scores the
    # gathered batch against its rows; the softmax over the corpus is an exact distributed logsumexp, so loss and
    # gradients equal one process with the whole corpus. For corpora past one device's memory; costs a few small
    # all-reduces per step (queries, per-query maxima and sums, positive vectors). false = every process holds it all.
    corpus_shard: bool = False
    # tune=query: weight of a loss term, 1 - the Pearson correlation between the cosine similarities of every two
    # queries of a batch under the tuned tower and under the base model, so that text-vs-text similarity through
    # the query tower (STS) moves less while queries move towards their documents. 0 = off.
    similarity_anchor: float = 0.0

    def __post_init__(self) -> None:
        for name, allow_none in (("batch_size", False), ("epochs", False), ("max_steps", True), ("log_every", False),
                                 ("eval_every", True), ("save_every", True), ("keep_checkpoints", False)):
            value = getattr(self, name)
            if (value is not None or not allow_none) and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"train.{name} must be a positive integer{' (or null)' * allow_none}, got {value!r}")
        if self.similarity_anchor < 0:
            raise ConfigError(f"train.similarity_anchor is a loss weight (>= 0; 0 = off), got {self.similarity_anchor!r}")
        if self.save_every_minutes is not None and self.save_every_minutes <= 0:
            raise ConfigError(f"train.save_every_minutes must be > 0 (or null: off), got {self.save_every_minutes!r}")
        unknown = [t for t in self.report_to if t not in TRACKERS]
        if unknown:
            raise ConfigError(f"train.report_to: unknown tracker(s) {unknown}; use any of {list(TRACKERS)} "
                              "(or [] for none)")

    def _adapter_problems(self) -> list[str]:
        """Settings tune: adapter cannot use (it trains no transformer), and adapter settings without it."""
        if self.tune != "adapter":
            return [] if self.adapter == AdapterConfig() else [
                "train.adapter.* configures train.tune: adapter; set tune: adapter or remove train.adapter"]
        out = []
        if self.adapter.rank is not None and self.adapter.rank < 1:
            out.append(f"train.adapter.rank must be >= 1 (or null: a full d x d matrix), got {self.adapter.rank}")
        unused = {"interpolate_base": self.interpolate_base,
                  "max_ood_drop": self.max_ood_drop, "corpus_candidates": self.corpus_candidates,
                  "corpus_refresh_every": self.corpus_refresh_every, "gradient_checkpointing": self.gradient_checkpointing,
                  "layer_lr_decay": self.layer_lr_decay != 1.0, "corpus_positives: sample": self.corpus_positives == "sample"}
        for key, value in unused.items():
            if value:
                out.append(f"train.{key} does not apply to train.tune: adapter (a linear map on query vectors, "
                           "every known positive a target); unset it")
        return out

    def _query_tower_problems(self) -> list[str]:
        """train.lora and train.init_adapter shape the query tower: tune: query only."""
        out = []
        lora = self.lora
        if lora.r < 0 or lora.alpha <= 0 or not 0 <= lora.dropout < 1 or (lora.r and not lora.target_modules):
            out.append(f"train.lora: r must be >= 0 (0 = off), alpha > 0, 0 <= dropout < 1 and target_modules not "
                       f"empty; got r={lora.r}, alpha={lora.alpha}, dropout={lora.dropout}, "
                       f"target_modules={lora.target_modules}")
        for key, used in (("lora.r", lora.r > 0), ("init_adapter", self.init_adapter is not None)):
            if used and self.tune != "query":
                out.append(f"train.{key} shapes the query tower, so it needs train.tune: query (got tune: {self.tune})")
        return out

    @property
    def uses_corpus_negatives(self) -> bool:
        """Queries are scored against the whole training corpus (negatives: corpus; tune: query implies it)."""
        return self.tune in ("query", "adapter") or self.negatives == "corpus"

    def problems(self) -> list[str]:
        """Combinations of train settings that cannot run together, each naming the keys to change."""
        out = []
        bad_alphas = [a for a in self.interpolate_base if not 0.0 < a < 1.0]
        if bad_alphas:
            out.append(f"train.interpolate_base: each value is the fine-tuned share of an interpolation with the "
                       f"base model and must lie strictly between 0 and 1, got {bad_alphas}")
        if self.max_ood_drop is not None and (self.max_ood_drop < 0 or not self.interpolate_base):
            out.append("train.max_ood_drop: a forgetting budget in points (>= 0) chooses among the WiSE-FT mixes of "
                       "train.interpolate_base; set both (e.g. interpolate_base: [0.5, 0.7, 0.9])")
        if self.similarity_anchor and self.tune != "query":
            out.append("train.similarity_anchor holds the query tower's similarities at the base model's, so it "
                       "needs train.tune: query (unset it, or set tune: query)")
        out += self._adapter_problems()
        out += self._query_tower_problems()
        if not self.uses_corpus_negatives:
            out += ["train.corpus_scope chooses documents of the corpus of corpus negatives; set tune: query or "
                    "adapter, or negatives: corpus (or unset it)"] * (self.corpus_scope != "all")
            return out + ["train.corpus_shard splits the corpus of corpus negatives across processes; set tune: query "
                          "or adapter, or negatives: corpus (or unset it)"] * self.corpus_shard
        if self.gradcache_chunk_size:
            out.append("train.gradcache_chunk_size is for large in-batch negatives; corpus negatives need no cache "
                       "(unset it)")
        if self.corpus_candidates is not None and self.corpus_candidates < 1:
            out.append(f"train.corpus_candidates must be >= 1 (or unset for the exact softmax), got "
                       f"{self.corpus_candidates}")
        if self.corpus_positives == "all" and self.tune == "both":
            out.append("train.corpus_positives: all scores every known positive from the cached corpus, so it needs "
                       "train.tune: query (with tune: both the positives are embedded live: use corpus_positives: "
                       "sample)")
        if self.tune == "query" and self.corpus_refresh_every:
            out.append("train.corpus_refresh_every re-embeds the corpus with the trained model, but with train.tune: "
                       "query documents keep the base model; unset it")
        if self.corpus_shard and self.corpus_refresh_every:
            out.append("train.corpus_shard keeps each process's rows of the base model's corpus embeddings; "
                       "train.corpus_refresh_every re-embeds the whole corpus: unset one of them")
        return out


@dataclass(frozen=True)
class EvalConfig:
    sts: list[str] = _path([], hub=True)  # in-domain STS sets (STS-B folder, SICK TSV, scored pairs): dev selects, test reports
    retrieval: list[str] = _path([], hub=True)  # in-domain retrieval sets (BEIR folders or pairs files)
    ood_sts: list[str] = _path([], hub=True)  # out-of-domain STS sets: watched for forgetting, never used for selection
    ood_retrieval: list[str] = _path([], hub=True)  # out-of-domain retrieval sets: watched for forgetting
    split: str = "test"  # the split reported as the result
    dev_split: str = "dev"  # the split that selects checkpoints (must differ from split unless allow_test_selection)
    # Let training select its checkpoint on the rows the test table reports (dev_split = split, or an in-domain
    # set that is one file): the test score is then inflated. Off: `textcl run` / `textcl train` refuse it.
    allow_test_selection: bool = False
    k_values: list[int] = field(default_factory=lambda: [1, 3, 5, 10, 100, 1000])  # cut-offs for retrieval metrics; candidates per query = the largest
    ignore_identical_ids: bool | None = None  # None = per-dataset MTEB default
    factory: str = "exact"  # exact or a FAISS factory string
    metric_for_best: str | None = None  # e.g. "nfcorpus/ndcg@10"; None = first primary metric
    # The tuned model (best checkpoint or WiSE-FT mix) replaces the model training started from only when its dev
    # gain is at least this many standard errors of the per-query paired difference (retrieval dev sets), raised for
    # having been chosen on the same dev queries among every model evaluated (max-T); else the run keeps the
    # starting model. 0 = any gain; 1.64 = one-sided 95%: with few labelled queries a run keeps base unless it is clear
    min_gain_se: float = 0.0
    forgetting_threshold: float = 1.0  # points of out-of-domain drop flagged as forgetting
    extra_corpus: str | None = _path(None)  # more documents for retrieval sets given as pairs files
    strict: bool = False  # qrels naming unknown ids or repeating a judgement are errors (default: warn, as pytrec_eval)

    def __post_init__(self) -> None:
        if self.min_gain_se < 0:
            raise ConfigError(f"eval.min_gain_se is a number of standard errors (>= 0; 0 = off), got {self.min_gain_se!r}")


@dataclass(frozen=True)
class IndexConfig:
    enabled: bool = True  # build a search index at the end of `textcl run`
    corpus: str | None = _path(None)  # documents to index (BEIR folder, corpus JSONL or text file; None = the training corpus)
    factory: str = "Flat"  # exact, or a FAISS factory string: Flat, HNSW32, IVF1024,Flat|nprobe=32
    output: str | None = _path(None)  # the index folder; None = under output_dir
    # Store the documents compressed and search the codes: none, int8 (4x smaller), binary (signs, 32x) or pq:M (M bytes a
    # vector); cosine or dot similarity only. With train.tune: query / adapter the query side trains against the documents
    # as this index returns them, and evaluation (base and tuned) searches them in that form
    compression: str = "none"
    dimensions: int | None = None  # keep the first N dimensions of each vector (Matryoshka-style, renormalised for cosine; only for models trained so); None = all
    rescore: int | None = None  # with compression: also keep the float vectors and re-rank the codes' top-K with them (more bytes, better order)

    def problems(self, similarity: str | None, sharded: bool = False) -> list[str]:
        """Index settings that cannot run (textcl.compress.IndexForm checks the same when the index is built);
        `sharded`: the query side trains for this index on a corpus split across processes."""
        out = []
        compressed = self.compression.strip().lower() != "none"
        if not re.fullmatch(r"none|int8|binary|pq:[1-9][0-9]*", self.compression.strip().lower()):
            out.append(f"index.compression {self.compression!r}: use one of none, int8, binary or pq:M (M bytes a vector)")
        elif compressed and similarity not in (None, "cosine", "dot"):
            out.append(f"index.compression {self.compression} scores by inner product; model.similarity {similarity} "
                       "cannot be compressed: set index.compression: none or model.similarity: cosine / dot")
        if compressed and self.factory not in ("Flat", "exact"):
            out.append(f"index.compression {self.compression} searches its codes exhaustively; set index.factory: Flat, "
                       f"or index.compression: none with a FAISS factory that compresses (e.g. IVF1024,PQ32)")
        if self.dimensions is not None and self.dimensions < 1:
            out.append(f"index.dimensions must be a positive integer (or null: all), got {self.dimensions}")
        if self.rescore is not None and (self.rescore < 1 or not compressed):
            out.append("index.rescore re-ranks a compressed index's top-K with float vectors: a positive integer with "
                       "index.compression int8, binary or pq:M")
        if sharded and self.compression.strip().lower() not in ("none", "binary"):
            out.append(f"index.compression {self.compression} fits its quantizer on the whole corpus, but with "
                       "train.corpus_shard each process holds only its rows; use binary (per vector) or unset one")
        return out


@dataclass(frozen=True)
class RunConfig:
    seed: int = 42  # seeds every random generator once, at the start
    output_dir: str = _path("out/run")  # the run's folder: model, mined data, index and report go under it unless set apart
    skip: list[str] = field(default_factory=list)  # stages to skip: check, eval_base, mine, train, ...
    launcher: str | None = None  # `textcl run` trains in subprocesses, e.g. "accelerate launch --multi_gpu"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    index: IndexConfig = field(default_factory=IndexConfig)

    def problems(self) -> list[str]:
        """Every combination of settings that cannot run together, each naming the keys to change. Checks
        that need the data or the process count are training's (textcl.train.loop)."""
        out, tc, loss = self.train.problems(), self.train, self.loss
        out += self.index.problems(self.model.similarity, sharded=tc.corpus_shard and tc.tune in ("query", "adapter"))
        if tc.uses_corpus_negatives and loss.name != "infonce":
            out.append(f"train.tune=query / train.negatives=corpus train on (query, positive) rows with "
                       f"loss.name=infonce, not {loss.name}")
        if tc.uses_corpus_negatives and loss.symmetric:
            out.append("loss.symmetric adds a positive -> in-batch-queries term, which corpus negatives do not "
                       "use; set loss.symmetric: false with train.negatives: corpus / train.tune: query")
        if tc.tune == "adapter" and self.launcher:
            out.append("train.tune: adapter trains in one process in seconds; unset launcher")
        if tc.max_ood_drop is not None and not (self.eval.ood_sts or self.eval.ood_retrieval):
            out.append("train.max_ood_drop needs out-of-domain sets (eval.ood_sts / eval.ood_retrieval) with a "
                       f"'{self.eval.dev_split}' split to measure forgetting on")
        return out

    def check(self) -> None:
        """Raise ConfigError naming every problem (`problems`): `load_recipe`, the pre-flight check of
        `textcl run` / `textcl train` and training's set-up call it, so a bad combination fails before any stage."""
        found = self.problems()
        if len(found) == 1:
            raise ConfigError(found[0])
        if found:
            raise ConfigError(f"{len(found)} settings cannot run together:\n  " + "\n  ".join(found))


# ---------------------------------------------------------------- type checking


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _type_name(tp: Any) -> str:
    """`int | None` -> "an integer (or null)": what a user should write, not a Python annotation."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        names = " or ".join(_type_name(a) for a in args if a is not type(None))
        return names + (" (or null)" if type(None) in args else "")
    if origin is Literal:
        return f"one of {list(args)}"
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    return _TYPE_WORDS.get(tp) or getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against annotation `tp`; return it (ints widen to float). Raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_coerce(k, args[0], where): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 reads `2e-5` (no dot) as a string; accept plain decimal/scientific notation only.
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    raise ConfigError(f"{where}: unsupported type {tp}")


# Names other trainers (transformers, sentence-transformers) use for our keys: suggested first.
_ALIASES = {"learning_rate": "lr", "num_train_epochs": "epochs", "num_epochs": "epochs",
            "per_device_train_batch_size": "batch_size", "train_batch_size": "batch_size",
            "lr_scheduler_type": "scheduler", "warmup": "warmup_ratio", "model_name_or_path": "name_or_path",
            "model_name": "name_or_path", "max_length": "max_seq_length", "save_steps": "save_every",
            "eval_steps": "eval_every", "logging_steps": "log_every", "save_total_limit": "keep_checkpoints",
            "bf16": "precision", "fp16": "precision", "scale": "temperature"}


# Old spellings of renamed keys, per section: still read, with a warning naming the new key.
_DEPRECATED = {"MiningConfig": {"index": "factory"}, "EvalConfig": {"search": "factory"}}


def _renamed(cls: type, data: dict, where: str, quiet: bool) -> dict:
    """`data` with deprecated keys of `cls` renamed (warning once per key unless `quiet`)."""
    renames = _DEPRECATED.get(cls.__name__, {})
    if not renames.keys() & data.keys():
        return data
    out = {}
    for key, value in data.items():
        new = renames.get(key)
        if new is None:
            out[key] = value
            continue
        if new in data:
            raise ConfigError(f"{where}.{key} and {where}.{new} are the same setting; keep only {where}.{new}")
        if not quiet:
            message = f"recipe key {where}.{key} is deprecated; use {where}.{new}"
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            log.warning("%s", message)
        out[new] = value
    return out


def _build(cls: type, data: Any, where: str, base_dir: Path | None = None, quiet: bool = False) -> Any:
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'recipe'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in _renamed(cls, data, where, quiet).items():
        name = f"{where}.{key}" if where else str(key)
        if key not in fields:
            close = [_ALIASES[key]] if _ALIASES.get(key) in fields else \
                difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(fields)}"
            raise ConfigError(f"unknown key '{name}'{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, name, base_dir, quiet)
            continue
        value = _coerce(value, tp, name)
        kind = fields[key].metadata.get("path")
        if base_dir is not None and kind:
            value = paths.resolve_path(value, base_dir, hub=kind == "hub")
        kwargs[key] = value
    return cls(**kwargs)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _path_kind(keys: list[str]) -> str | None:
    """"file", "hub" (a path key that also takes hub ids) or None (not a path key)."""
    cls: Any = RunConfig
    for i, k in enumerate(keys):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if k not in fields:
            return None
        if i == len(keys) - 1:
            return fields[k].metadata.get("path")
        cls = typing.get_type_hints(cls)[k]
        if not dataclasses.is_dataclass(cls):
            return None
    return None


def apply_overrides(data: dict, overrides: list[str] | None, base_dir: Path | None = None) -> dict:
    """Apply `a.b=value` overrides to a raw recipe mapping (values parsed as YAML scalars).

    With `base_dir`, path values given in overrides resolve against it (the working directory),
    not against the recipe: `--set data.train=./my.jsonl` means the file the user sees.
    """
    data = copy.deepcopy(data) if data else {}
    for text in overrides or []:
        keys, value = _parse_override(text)
        node = data
        for k in keys[:-1]:
            if node.get(k) is None:  # absent, or an empty YAML section (`train:`)
                node[k] = {}
            node = node[k]
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{k}' is not a section")
        kind = _path_kind(keys) if base_dir is not None else None
        if kind:
            value = paths.resolve_path(value, base_dir, hub=kind == "hub")
        node[keys[-1]] = value
    return data


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML recipe (or defaults when `path` is None), apply overrides, type-check everything."""
    raw: dict = {}
    base_dir = Path.cwd()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"recipe not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of sections")
        base_dir = path.resolve().parent
    for text in overrides or []:  # a bad --set is blamed on itself, not on the recipe file
        try:
            _build(RunConfig, apply_overrides({}, [text]), "", quiet=True)  # warned once, below
        except ConfigError as exc:
            raise ConfigError(f"--set {text}: {exc}") from None
    # Recipe paths resolve against the recipe's folder, override paths against the working directory.
    raw = apply_overrides(raw, overrides, base_dir=Path.cwd())
    try:
        config = _build(RunConfig, raw, "", base_dir)
        config.check()
    except ConfigError as exc:
        raise ConfigError(f"{path or 'config'}: {exc}") from None
    return config


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    """Write the config as YAML; paths are relative to the file's folder, so it loads from anywhere
    (`load_recipe` resolves them there) and leaks no local path when the folder is shared."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    data = paths.portable_paths(to_dict(paths.absolute_paths(config)), Path(path).parent)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
