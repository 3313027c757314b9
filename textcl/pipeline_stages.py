"""The bodies of the pipeline stages (see `textcl.pipeline` for skipping and resuming).

Each stage declares its inputs (config sections + file fingerprints) and returns a JSON-able result;
large outputs (mined file, model, index, similarity samples, history) are files in output_dir.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

from textcl.config import RunConfig
from textcl.data.training import load_mining_source, load_training_rows
from textcl.eval.metrics import is_primary
from textcl.eval.similarity import examples_as_retrieval, scored_pair_samples, similarity_samples
from textcl.pipeline import Context, NotApplicable, Stage, fingerprint_path
from textcl.types import Encode, Example

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- shared helpers


def encoder_for(ctx: Context, model_path: str, *, scoring: bool = False) -> Encode:
    """A textcl Encoder for `model_path` with the recipe's model settings (cached per path and use).

    `scoring`: the encoder reports numbers (evaluation), so it stays off int8 (see scoring_precision);
    otherwise (mining, indexes, data checks) the recipe's precision and allow_int8 apply.
    """
    key = f"encoder:{model_path}:{'scoring' if scoring else 'speed'}"
    if key not in ctx.cache:
        from textcl.model import encoder_for, load_configured_model
        mc = ctx.config.model
        ctx.cache[key] = encoder_for(load_configured_model(mc, model_path), mc, scoring=scoring,
                                     show_progress=True)  # one bar per long step
    return ctx.cache[key]


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
    from textcl.data.io import iter_jsonl
    values = [obj.get(column) for _, obj in iter_jsonl(path)][:n]
    return values if len(values) == n and any(v is not None for v in values) else None


def _similarity(ctx: Context, encode: Encode) -> dict[str, list[float]]:
    """Histogram data: the first in-domain retrieval set, else STS set, else the training pairs."""
    from textcl.data.retrieval import load_retrieval_set
    from textcl.eval import load_sts_set
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
    from textcl.eval import dataset_name, evaluate
    ec = ctx.config.eval
    encode = encoder_for(ctx, model_path, scoring=True)
    metrics = evaluate(encode, ec, ec.split) if _eval_paths(ctx.config) else {}
    ood_names = [dataset_name(p) for p in [*ec.ood_sts, *ec.ood_retrieval]]
    sims = _similarity(ctx, encode)
    sim_file = ctx.out / f"similarity_{tag}.json"
    sim_file.write_text(json.dumps(sims) + "\n", encoding="utf-8")
    if not metrics and not sims:
        raise NotApplicable("no evaluation sets and no training pairs to measure")
    primary = {k: v for k, v in metrics.items() if is_primary(k)}
    log.info("%s model (%s split): %s", tag, ec.split, ", ".join(f"{k} {100 * v:.2f}" for k, v in primary.items()))
    return {"model": model_path, "metrics": {k: float(v) for k, v in metrics.items()},
            "ood_metrics": sorted(k for k in metrics if k.split("/")[0] in ood_names),
            "similarity_file": sim_file.name}


# ---------------------------------------------------------------- stages


def _check(ctx: Context) -> dict:
    from textcl.data.diversity import diversity_report
    cfg = ctx.config
    examples, sources = load_train_examples(cfg)
    encode = encoder_for(ctx, cfg.model.name_or_path)
    tokenizer = encode.model.tokenizer if hasattr(encode, "model") else None
    count = (lambda texts: [len(ids) for ids in tokenizer(texts, verbose=False)["input_ids"]]) \
        if tokenizer is not None else None
    report = diversity_report(examples, batch_size=cfg.train.batch_size, encode=encode,
                              near_duplicate_threshold=cfg.data.near_duplicate_threshold, sources=sources,
                              count_tokens=count, max_seq_length=cfg.model.max_seq_length)
    (ctx.out / "data_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _mine(ctx: Context) -> dict:
    from textcl.mine import mine, write_mined
    cfg = ctx.config
    if cfg.loss.name != "infonce" or not cfg.mining.enabled:
        raise NotApplicable(f"mining is off (mining.enabled={cfg.mining.enabled}, loss={cfg.loss.name})")
    if cfg.data.train is None:
        raise NotApplicable("data.train is not set")
    source = load_mining_source(cfg.data)
    encode = encoder_for(ctx, cfg.model.name_or_path)
    mined, stats = mine(source, encode, cfg.mining, seed=cfg.seed, progress=True)
    stats.provenance["precision"] = getattr(encode, "precision", None)
    if getattr(encode, "int8_report", None):
        stats.provenance["int8_guard"] = encode.int8_report
    write_mined(mined, cfg.mining.output, stats.provenance)
    return {"output": cfg.mining.output, "file": fingerprint_path(cfg.mining.output), **stats.to_dict()}


def _train(ctx: Context) -> dict:
    from textcl.train import checkpoint as ckpt
    from textcl.train.loop import train
    cfg = ctx.config
    mined = ctx.results.get("mine")
    if mined is None and cfg.mining.output and Path(cfg.mining.output).exists() and "mine" not in cfg.skip:
        # The mine stage did not produce this file in this configuration: do not train on a stale one.
        cfg = replace(cfg, mining=replace(cfg.mining, output=None))
    previous = ctx.cache.get("previous:train") or {}
    resumable = ckpt.find_resumable(Path(cfg.train.output_dir) / "checkpoints")
    resume = bool(resumable) and previous.get("complete") is False and \
        previous.get("hash") == ctx.read_marker("train").get("hash")
    if resume:
        log.info("train: resuming the interrupted run from %s", resumable)
    # The stage re-runs because its inputs changed (or --force): the old checkpoints cannot be resumed.
    result = asdict(train(cfg, resume=resume, overwrite=not resume)) if not cfg.launcher else _launch_training(ctx, cfg, resume)
    (ctx.out / "history.json").write_text(json.dumps(result["history"], indent=1, default=float) + "\n",
                                          encoding="utf-8")
    return {"model_dir": result["output_dir"], "steps": result["steps"], "skipped_steps": result["skipped_steps"],
            "stopped_early": result["stopped_early"], "history_file": "history.json", "resumed": resume,
            "dev_before": result["before"], "dev_after": result["after"], "launcher": cfg.launcher,
            "model": fingerprint_path(result["output_dir"])}


def _launch_training(ctx: Context, cfg: RunConfig, resume: bool) -> dict:
    """Train in subprocesses started by `cfg.launcher` (e.g. accelerate launch); rank 0 writes the result."""
    import shlex
    import subprocess

    from textcl.config import save_config
    from textcl.errors import TrainingError
    config_path, result_path = ctx.out / "stages" / "train_config.yaml", ctx.out / "stages" / "train_result.json"
    save_config(cfg, config_path)
    result_path.unlink(missing_ok=True)
    cmd = [*_resolve_launcher(shlex.split(cfg.launcher)), "-m", "textcl.pipeline_stages", str(config_path), str(result_path)]
    cmd += ["--resume"] if resume else []
    log.info("train: launching %s", " ".join(cmd))
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0 or not result_path.is_file():
        raise TrainingError(f"the training processes failed (exit code {proc.returncode}): {' '.join(cmd)}; "
                            "their log is above. Re-running `textcl run` resumes from the last checkpoint")
    return json.loads(result_path.read_text(encoding="utf-8"))


def _index(ctx: Context) -> dict:
    from textcl.index import SearchIndex, load_corpus
    cfg = ctx.config
    if not cfg.index.enabled:
        raise NotApplicable("index.enabled is false")
    corpus_path, queries = _index_corpus(cfg)
    if corpus_path is None:
        raise NotApplicable("no corpus: set index.corpus (or eval.retrieval)")
    model = (ctx.results.get("train") or {}).get("model_dir") or cfg.model.name_or_path
    index = SearchIndex.build(encoder_for(ctx, model), load_corpus(corpus_path), cfg.index.output,
                              factory=cfg.index.factory, model=model, recall_queries=queries, seed=cfg.seed)
    index.config.update(query_prompt=cfg.model.query_prompt, document_prompt=cfg.model.document_prompt,
                        corpus=str(corpus_path))
    index.save()
    return {"path": cfg.index.output, "factory": cfg.index.factory, "count": len(index), "model": model,
            "recall": index.config.get("recall")}


def _index_corpus(cfg: RunConfig) -> tuple[str | None, list[str] | None]:
    if cfg.index.corpus:
        return cfg.index.corpus, None
    from textcl.data.beir import is_beir_folder
    if cfg.eval.retrieval and is_beir_folder(Path(cfg.eval.retrieval[0])):  # a pairs file is no corpus
        from textcl.data.io import load_beir
        rset = load_beir(cfg.eval.retrieval[0], cfg.eval.split)
        return cfg.eval.retrieval[0], list(rset.queries.values())
    return None, None


def _report(ctx: Context) -> dict:
    from textcl.paths import portable_paths
    from textcl.report import forgetting_flags, interpolation_trials, overfitting_flags, write_report
    from textcl.train.card import base_model_name
    cfg = ctx.config
    base, tuned = ctx.results.get("eval_base") or {}, ctx.results.get("eval_tuned") or {}
    train = ctx.results.get("train") or {}
    history_file = ctx.out / train.get("history_file", "history.json")
    history = json.loads(history_file.read_text()) if train and history_file.is_file() else []
    before, after = base.get("metrics", {}), tuned.get("metrics", {})
    ood = sorted(set(base.get("ood_metrics", [])) | set(tuned.get("ood_metrics", [])))
    similarity = {}
    for tag, res in (("before", base), ("after", tuned)):
        if res.get("similarity_file") and (ctx.out / res["similarity_file"]).is_file():
            similarity[tag] = json.loads((ctx.out / res["similarity_file"]).read_text())
    summary = {
        "recipe": ctx.recipe, "output_dir": str(ctx.out), "seed": cfg.seed,
        "base_model": cfg.model.name_or_path, "model_dir": train.get("model_dir"),
        "before": before, "after": after,
        "delta_points": {k: round(100 * (after[k] - before[k]), 4) for k in before if k in after},
        "ood_metrics": ood,
        "flags": {"forgetting": forgetting_flags(before, after, ood, cfg.eval.forgetting_threshold),
                  "overfitting": overfitting_flags(history)},
        "interpolation": interpolation_trials(history),
        "dev_evaluations": sum(1 for h in history if (h.get("eval") or {}).get("dev") and "interpolation" not in h),
        "data": ctx.results.get("check"), "mining": ctx.results.get("mine"), "train": train or None,
        "index": ctx.results.get("index"), "stages": dict(ctx.status),
    }
    summary["stages"]["report"] = {"status": "done"}
    summary["base_model"] = base_model_name(cfg.model.name_or_path) or cfg.model.name_or_path
    summary["report"] = str(ctx.out / "report.md")
    # The files are for sharing: paths relative to the run folder. The returned summary (printed) keeps them.
    shared = portable_paths(json.loads(json.dumps(summary, default=str)), ctx.out)
    write_report(shared, history, similarity, ctx.out)
    (ctx.out / "summary.json").write_text(json.dumps(shared, indent=2) + "\n", encoding="utf-8")
    return summary


def build_stages() -> list[Stage]:
    def model_inputs(ctx: Context) -> dict:
        from textcl.model import resolve_model_path
        path = resolve_model_path(ctx.config.model.name_or_path)
        return {"model": asdict(ctx.config.model), "model_files": fingerprint_path(path)}

    def data_inputs(ctx: Context) -> dict:
        return {"data": asdict(ctx.config.data), "train_file": fingerprint_path(ctx.config.data.train),
                "loss": ctx.config.loss.name}

    def eval_inputs(ctx: Context) -> dict:
        return {"eval": asdict(ctx.config.eval), "seed": ctx.config.seed, "data": data_inputs(ctx),
                "files": [fingerprint_path(p) for p in _eval_paths(ctx.config)]}

    cfg = lambda ctx: ctx.config  # noqa: E731
    return [
        Stage("check", lambda c: {**data_inputs(c), **model_inputs(c), "batch_size": cfg(c).train.batch_size},
              _check),
        Stage("eval_base", lambda c: {**eval_inputs(c), **model_inputs(c)},
              lambda c: _evaluate(c, cfg(c).model.name_or_path, "base")),
        Stage("mine", lambda c: {**data_inputs(c), **model_inputs(c), "mining": asdict(cfg(c).mining),
                                 "seed": cfg(c).seed}, _mine),
        Stage("train", lambda c: {**data_inputs(c), **model_inputs(c), "loss": asdict(cfg(c).loss),
                                  "train": asdict(cfg(c).train), "eval": asdict(cfg(c).eval), "seed": cfg(c).seed},
              _train, depends=("mine",)),
        Stage("eval_tuned", lambda c: {**eval_inputs(c), "model": asdict(cfg(c).model)},
              lambda c: _evaluate(c, _tuned_model(c), "tuned"), depends=("train",)),
        Stage("index", lambda c: {"index": asdict(cfg(c).index), "corpus": fingerprint_path(_index_corpus(cfg(c))[0]),
                                  **model_inputs(c)}, _index, depends=("train",)),
        Stage("report", lambda c: {}, _report, depends=("check", "eval_base", "mine", "train", "eval_tuned", "index")),
    ]


def _tuned_model(ctx: Context) -> str:
    model_dir = (ctx.results.get("train") or {}).get("model_dir")
    if not model_dir or not Path(model_dir).is_dir():
        raise NotApplicable("no fine-tuned model (the train stage was skipped or did not run)")
    return model_dir


def _resolve_launcher(argv: list[str]) -> list[str]:
    """"python" is this interpreter; "accelerate" the one next to it when it is not on PATH (a venv)."""
    import shutil
    import sys
    if argv and argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    beside = Path(sys.executable).parent / argv[0] if argv else None
    if argv and shutil.which(argv[0]) is None and beside is not None and beside.is_file():
        return [str(beside), *argv[1:]]
    return argv


def _train_worker(argv: list[str]) -> int:
    """Entry point of a launched training process: CONFIG.yaml RESULT.json [--resume]."""
    import os

    from textcl.config import load_recipe
    from textcl.train.loop import train
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    resume = "--resume" in argv[2:]
    result = train(load_recipe(argv[0]), resume=resume, overwrite=not resume)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(argv[1]).write_text(json.dumps(asdict(result), default=float) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(_train_worker(sys.argv[1:]))
