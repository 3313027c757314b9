"""The stage table of `textcl run` and the stage bodies: check -> eval_base -> mine -> train -> eval_tuned
-> index -> report.

Each row of `STAGES` declares what the stage reads (`inputs`, hashed), the stages whose results it
reads (`depends`), what it writes (`outputs`) and whether an interrupted run continues (`resumable`);
the rules for skipping, reusing and resuming are in `runner.py`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

from textcl.compress import IndexForm, index_view
from textcl.config import RunConfig
from textcl.data.beir import is_beir_folder, load_beir
from textcl.data.diversity import diversity_report
from textcl.data.retrieval import load_corpus, load_retrieval_set
from textcl.data.source import iter_jsonl
from textcl.data.training import load_mining_source, load_training_rows
from textcl.eval import dataset_name, evaluate, load_sts_set
from textcl.eval.metrics import is_primary
from textcl.eval.similarity import examples_as_retrieval, scored_pair_samples, similarity_samples
from textcl.index import SearchIndex
from textcl.mine import mine, write_mined
from textcl.models import encoder_for, load_configured_model, resolve_model_path
from textcl.paths import portable_paths
from textcl.pipeline.launch import launch_training
from textcl.pipeline.report import forgetting_flags, interpolation_trials, overfitting_flags, write_report
from textcl.pipeline.runner import Context, NotApplicable, Stage, file_stamp
from textcl.train import checkpoint as ckpt
from textcl.train.adapter import train_adapter
from textcl.train.card import base_model_name
from textcl.train.loop import train
from textcl.types import Encode, Example, encoder_identity

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- what each stage reads (hashed)


def _model_inputs(cfg: RunConfig) -> dict:
    return {"model": asdict(cfg.model), "model_files": file_stamp(resolve_model_path(cfg.model.name_or_path))}


def _data_inputs(cfg: RunConfig) -> dict:
    return {"data": asdict(cfg.data), "train_file": file_stamp(cfg.data.train), "loss": cfg.loss.name}


def _eval_settings(cfg: RunConfig) -> dict:
    """The eval section as far as results depend on it: allowing test selection changes no number."""
    settings = asdict(cfg.eval)
    settings.pop("allow_test_selection")
    return settings


def _eval_inputs(cfg: RunConfig) -> dict:
    form = IndexForm.of(cfg.index)  # retrieval is scored through the recipe's index form (when it has one)
    return {"eval": _eval_settings(cfg), "seed": cfg.seed, "data": _data_inputs(cfg),
            "files": [file_stamp(p) for p in _eval_paths(cfg)], **({} if form.plain else {"index": form.describe()})}


def check_inputs(cfg: RunConfig) -> dict:
    return {**_data_inputs(cfg), **_model_inputs(cfg), "batch_size": cfg.train.batch_size}


def eval_base_inputs(cfg: RunConfig) -> dict:
    return {**_eval_inputs(cfg), **_model_inputs(cfg)}


def mine_inputs(cfg: RunConfig) -> dict:
    return {**_data_inputs(cfg), **_model_inputs(cfg), "mining": asdict(cfg.mining), "seed": cfg.seed}


def train_inputs(cfg: RunConfig) -> dict:
    train = asdict(cfg.train)
    train.pop("report_to")  # where metrics are also sent changes no number: turning a tracker on re-trains nothing
    form = IndexForm.of(cfg.index)  # tune: query / adapter train against the documents in the index's form
    trained_for = {} if form.plain or cfg.train.tune == "both" else {"index": form.describe()}
    return {**_data_inputs(cfg), **_model_inputs(cfg), "loss": asdict(cfg.loss), "train": train,
            "eval": _eval_settings(cfg), "seed": cfg.seed, **trained_for}


def eval_tuned_inputs(cfg: RunConfig) -> dict:
    return {**_eval_inputs(cfg), "model": asdict(cfg.model)}  # the tuned model comes in as train's result


def index_inputs(cfg: RunConfig) -> dict:
    return {"index": asdict(cfg.index), "corpus": file_stamp(_index_corpus(cfg)[0]), **_model_inputs(cfg)}


def report_inputs(cfg: RunConfig) -> dict:
    return {}  # everything it reads is an upstream result


# ---------------------------------------------------------------- shared helpers


def stage_encoder(ctx: Context, model_path: str, *, scoring: bool = False) -> Encode:
    """The recipe's Encoder for `model_path`, loaded once per path and use and shared by the stages.

    `scoring`: the encoder reports numbers (evaluation), so it stays off int8 (see scoring_precision);
    otherwise (mining, indexes, data checks) the recipe's precision and allow_int8 apply.
    """
    key = f"{model_path}:{'scoring' if scoring else 'speed'}"
    if key not in ctx.encoders:
        mc = ctx.config.model
        ctx.encoders[key] = encoder_for(load_configured_model(mc, model_path), mc, scoring=scoring,
                                        show_progress=True)  # one bar per long step
    return ctx.encoders[key]


def _eval_paths(config: RunConfig) -> list[str]:
    ec = config.eval
    return [*ec.sts, *ec.retrieval, *ec.ood_sts, *ec.ood_retrieval]


def load_train_examples(config: RunConfig) -> tuple[list[Example], list | None]:
    """Training rows as Examples for the data check (scored pairs and raw texts are mapped onto them)."""
    dc = config.data
    if dc.train is None:
        raise NotApplicable("data.train is not set")
    items, _ = load_training_rows(dc, config.loss.name)
    if config.loss.name == "cosent":
        return [Example(p.sentence1, (p.sentence2,)) for p in items], None
    if config.loss.name == "simcse":
        return [Example(t, (t,)) for t in items], None
    return items, _sources(dc.train, "source", len(items))


def _sources(path: str, column: str, n: int) -> list | None:
    """The optional source column of a JSONL training file (None when absent or rows were skipped)."""
    if not str(path).endswith((".jsonl", ".jsonl.gz")):
        return None
    values = [obj.get(column) for _, obj in iter_jsonl(path)][:n]
    return values if len(values) == n and any(v is not None for v in values) else None


def _similarity(ctx: Context, encode: Encode) -> dict[str, list[float]]:
    """Histogram data: the first in-domain retrieval set, else STS set, else the training pairs."""
    ec, seed = ctx.config.eval, ctx.config.seed
    if ec.retrieval:
        return similarity_samples(encode, load_retrieval_set(ec.retrieval[0], ec.split,
                                                             extra_corpus=ec.extra_corpus), seed)
    if ec.sts:
        return scored_pair_samples(encode, load_sts_set(ec.sts[0], ec.split), seed=seed)
    if ctx.config.loss.name == "infonce" and ctx.config.data.train:
        return similarity_samples(encode, examples_as_retrieval(load_train_examples(ctx.config)[0]), seed)
    return {}


def _evaluate(ctx: Context, model_path: str, tag: str) -> dict:
    """Test-split metrics (in-domain + out-of-domain) and similarity samples for one model."""
    ec = ctx.config.eval
    encode = stage_encoder(ctx, model_path, scoring=True)
    # retrieval searches the documents as the recipe's index stores them (index.compression / dimensions)
    view = index_view(encode, ctx.config.index, ctx.config.seed)
    metrics = evaluate(encode, ec, ec.split, retrieval_encode=view) if _eval_paths(ctx.config) else {}
    ood_names = [dataset_name(p) for p in [*ec.ood_sts, *ec.ood_retrieval]]
    sims = _similarity(ctx, encode)
    sim_file = ctx.out / f"similarity_{tag}.json"
    sim_file.write_text(json.dumps(sims) + "\n", encoding="utf-8")
    if not metrics and not sims:
        raise NotApplicable("no evaluation sets and no training pairs to measure")
    primary = {k: v for k, v in metrics.items() if is_primary(k)}
    log.info("%s model (%s split): %s", tag, ec.split, ", ".join(f"{k} {100 * v:.2f}" for k, v in primary.items()))
    return {"model": model_path, "encoder": encoder_identity(encode),  # fingerprints, prompts, similarity
            "metrics": {k: float(v) for k, v in metrics.items()},
            "ood_metrics": sorted(k for k in metrics if k.split("/")[0] in ood_names),
            "similarity_file": sim_file.name}


def _tuned_model(ctx: Context) -> str:
    model_dir = (ctx.results.get("train") or {}).get("model_dir")
    if not model_dir or not Path(model_dir).is_dir():
        raise NotApplicable("no fine-tuned model (the train stage was skipped or did not run)")
    return model_dir


def _index_corpus(cfg: RunConfig) -> tuple[str | None, list[str] | None]:
    if cfg.index.corpus:
        return cfg.index.corpus, None
    if cfg.eval.retrieval and is_beir_folder(cfg.eval.retrieval[0]):  # a pairs file is no corpus
        rset = load_beir(cfg.eval.retrieval[0], cfg.eval.split)
        return cfg.eval.retrieval[0], list(rset.queries.values())
    return None, None


# ---------------------------------------------------------------- stage bodies: (ctx, resume) -> result


def run_check(ctx: Context, resume: bool) -> dict:
    cfg = ctx.config
    examples, sources = load_train_examples(cfg)
    encode = stage_encoder(ctx, cfg.model.name_or_path)
    tokenizer = encode.model.tokenizer if hasattr(encode, "model") else None
    count = (lambda texts: [len(ids) for ids in tokenizer(texts, verbose=False)["input_ids"]]) \
        if tokenizer is not None else None
    report = diversity_report(examples, batch_size=cfg.train.batch_size, encode=encode,
                              near_duplicate_threshold=cfg.data.near_duplicate_threshold, sources=sources,
                              count_tokens=count, max_seq_length=cfg.model.max_seq_length)
    (ctx.out / "data_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def run_eval_base(ctx: Context, resume: bool) -> dict:
    return _evaluate(ctx, ctx.config.model.name_or_path, "base")


def run_mine(ctx: Context, resume: bool) -> dict:
    cfg = ctx.config
    if cfg.loss.name != "infonce" or not cfg.mining.enabled:
        raise NotApplicable(f"mining is off (mining.enabled={cfg.mining.enabled}, loss={cfg.loss.name})")
    if cfg.train.uses_corpus_negatives:  # mined negatives would go unused: minutes of encoding for nothing
        raise NotApplicable(f"not needed: train.tune={cfg.train.tune} / negatives={cfg.train.negatives} scores every "
                            "query against the whole training corpus")
    if cfg.data.train is None:
        raise NotApplicable("data.train is not set")
    source = load_mining_source(cfg.data)
    encode = stage_encoder(ctx, cfg.model.name_or_path)
    mined, stats = mine(source, encode, cfg.mining, seed=cfg.seed, progress=True)
    stats.provenance["precision"] = getattr(encode, "precision", None)
    if getattr(encode, "int8_report", None):
        stats.provenance["int8_guard"] = encode.int8_report
    write_mined(mined, cfg.mining.output, stats.provenance)
    return {"output": cfg.mining.output, "file": file_stamp(cfg.mining.output), **stats.to_dict()}


def run_train(ctx: Context, resume: bool) -> dict:
    """Train; `resume` (an interrupted run with the same inputs) continues from its last checkpoint."""
    cfg = ctx.config
    if ctx.results.get("mine") is None and cfg.mining.output and Path(cfg.mining.output).exists() \
            and "mine" not in cfg.skip:
        # The mine stage did not produce this file in this configuration: do not train on a stale one.
        cfg = replace(cfg, mining=replace(cfg.mining, output=None))
    resumable = ckpt.find_resumable(Path(cfg.train.output_dir) / "checkpoints") if resume else None
    resume = resumable is not None
    if resume:
        log.info("train: resuming the interrupted run from %s", resumable)
    # Otherwise the stage runs because its inputs changed (or --force): old checkpoints cannot be resumed.
    if cfg.train.tune == "adapter":  # seconds on cached vectors: no checkpoint to resume, always afresh
        result = asdict(train_adapter(cfg, overwrite=True))
    else:
        result = launch_training(ctx.out, cfg, resume) if cfg.launcher else \
            asdict(train(cfg, resume=resume, overwrite=not resume))
    (ctx.out / "history.json").write_text(json.dumps(result["history"], indent=1, default=float) + "\n",
                                          encoding="utf-8")
    return {"model_dir": result["output_dir"], "steps": result["steps"], "skipped_steps": result["skipped_steps"],
            "stopped_early": result["stopped_early"], "history_file": "history.json", "resumed": resume,
            "dev_before": result["before"], "dev_after": result["after"], "launcher": cfg.launcher,
            "model": file_stamp(result["output_dir"])}


def run_eval_tuned(ctx: Context, resume: bool) -> dict:
    return _evaluate(ctx, _tuned_model(ctx), "tuned")


def run_index(ctx: Context, resume: bool) -> dict:
    cfg = ctx.config
    if not cfg.index.enabled:
        raise NotApplicable("index.enabled is false")
    corpus_path, queries = _index_corpus(cfg)
    if corpus_path is None:
        raise NotApplicable("no corpus: set index.corpus (or eval.retrieval)")
    model = (ctx.results.get("train") or {}).get("model_dir") or cfg.model.name_or_path
    index = SearchIndex.build(stage_encoder(ctx, model), load_corpus(corpus_path), cfg.index.output,
                              factory=cfg.index.factory, model=model, recall_queries=queries, seed=cfg.seed,
                              form=IndexForm.of(cfg.index))
    index.config.update(corpus=str(corpus_path))  # the prompts used are stored by build (the model's or the recipe's)
    index.save()
    return {"path": cfg.index.output, "factory": cfg.index.factory, "count": len(index), "model": model,
            "recall": index.config.get("recall"), "compression": index.config.get("compression", "none"),
            "dimensions": index.config.get("dimensions"), "bytes": index.config.get("bytes")}


def run_report(ctx: Context, resume: bool) -> dict:
    cfg = ctx.config
    base, tuned = ctx.results.get("eval_base") or {}, ctx.results.get("eval_tuned") or {}
    trained = ctx.results.get("train") or {}
    history_file = ctx.out / trained.get("history_file", "history.json")
    history = json.loads(history_file.read_text()) if trained and history_file.is_file() else []
    before, after = base.get("metrics", {}), tuned.get("metrics", {})
    ood = sorted(set(base.get("ood_metrics", [])) | set(tuned.get("ood_metrics", [])))
    similarity = {}
    for tag, res in (("before", base), ("after", tuned)):
        if res.get("similarity_file") and (ctx.out / res["similarity_file"]).is_file():
            similarity[tag] = json.loads((ctx.out / res["similarity_file"]).read_text())
    summary = {
        "recipe": ctx.recipe, "output_dir": str(ctx.out), "seed": cfg.seed,
        "base_model": base_model_name(cfg.model.name_or_path) or cfg.model.name_or_path,
        "model_dir": trained.get("model_dir"), "before": before, "after": after,
        "text_rule": {tag: (ctx.results.get(f"eval_{tag}") or {}).get("encoder") for tag in ("base", "tuned")},
        "delta_points": {k: round(100 * (after[k] - before[k]), 4) for k in before if k in after},
        "ood_metrics": ood,
        "flags": {"forgetting": forgetting_flags(before, after, ood, cfg.eval.forgetting_threshold),
                  "overfitting": overfitting_flags(history)},
        "interpolation": interpolation_trials(history),
        "dev_evaluations": sum(1 for h in history if (h.get("eval") or {}).get("dev") and "interpolation" not in h),
        "data": ctx.results.get("check"), "mining": ctx.results.get("mine"), "train": trained or None,
        "index": ctx.results.get("index"), "stages": {**ctx.status, "report": {"status": "done"}},
        "report": str(ctx.out / "report.md"),
    }
    # The files are for sharing: paths relative to the run folder. The returned summary (printed) keeps them.
    shared = portable_paths(json.loads(json.dumps(summary, default=str)), ctx.out)
    write_report(shared, history, similarity, ctx.out)
    (ctx.out / "summary.json").write_text(json.dumps(shared, indent=2) + "\n", encoding="utf-8")
    return summary


# ---------------------------------------------------------------- the table, in run order

STAGES: tuple[Stage, ...] = (
    Stage("check", check_inputs, run_check, outputs=("data_check.json",)),
    Stage("eval_base", eval_base_inputs, run_eval_base, outputs=("similarity_base.json",)),
    Stage("mine", mine_inputs, run_mine, outputs=("mining.output",)),
    Stage("train", train_inputs, run_train, depends=("mine",), outputs=("train.output_dir", "history.json"),
          resumable=True),
    Stage("eval_tuned", eval_tuned_inputs, run_eval_tuned, depends=("train",), outputs=("similarity_tuned.json",)),
    Stage("index", index_inputs, run_index, depends=("train",), outputs=("index.output",)),
    Stage("report", report_inputs, run_report,
          depends=("check", "eval_base", "mine", "train", "eval_tuned", "index"),
          outputs=("report.md", "report.html", "summary.json")),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)
