"""Fine-tuned quality: textcl recipes vs sentence-transformers' own recipes, side by side, 3 seeds.

Two tasks, each scored on the OTHER task too (forgetting):
- NFCorpus retrieval (test nDCG@10, MTEB conventions): textcl `recipes/nfcorpus.yaml` (mine -> train
  -> pick the best dev checkpoint) vs sentence-transformers' `mine_hard_negatives` (its defaults: 3
  negatives, triplets, no margin) + `MultipleNegativesRankingLoss` + `SentenceTransformerTrainer`
  with the SAME steps, batch, lr, warmup, max_seq_length and precision.
- STS Benchmark (test Spearman of cosine): textcl `recipes/stsb.yaml` (CoSENT, best dev checkpoint)
  vs sentence-transformers' `CoSENTLoss` with its example settings (4 epochs, batch 16, lr 2e-5).

Procedure (one command): stage 1 runs an ablation grid of textcl settings (seed 42) and the ST STS
runs; the textcl setting with the best DEV score (never test) per task becomes the headline, and
stage 2 runs it with two more seeds next to ST's NFCorpus recipe on the same budget (3 seeds).
Every experiment is a subprocess (`--jobs` run at once; on a GPU many fit side by side) that appends
one JSON line to `results.jsonl`, so an interrupted run resumes and `--assemble` rebuilds the table.

    .venv/bin/python bench/bench_quality.py --mode full --jobs 1     # CPU: many hours on 2 cores
    python bench/bench_quality.py --mode full --jobs 12              # one GPU: ~10 minutes
    .venv/bin/python bench/bench_quality.py --assemble --results bench/results/quality
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import DATA, ROOT, st_training_args, write_section  # first: sets up sys.path and env

SEEDS = (42, 1, 2)
NF, STS = "nfcorpus/ndcg@10", "stsbenchmark/spearman_cosine"
PRIMARY = {"nfcorpus": NF, "stsb": STS}
OTHER = {"nfcorpus": STS, "stsb": NF}

# The grid's starting point, pinned so the labels keep their meaning when the recipes change (the
# recipes now hold the dev winners): the first recipe versions, on top of which each setting applies.
NF_BASE = ["mining.rows=query", "mining.num_negatives=1", "train.lr=2e-5", "train.max_steps=null", "train.epochs=1",
           "train.batch_size=32", "train.eval_every=40"]
STS_BASE = ["train.epochs=1", "train.batch_size=32", "train.lr=2e-5", "train.eval_every=45"]
# textcl ablation grid, seed 42. Keys are labels; values are recipe overrides. NFCorpus train has
# 2590 queries -> 81 steps per epoch at batch 32 (one row per query, one sampled positive per epoch).
NF_GRID: dict[str, list[str]] = {
    "recipe (1 epoch, lr 2e-5, 1 neg)": ["train.epochs=1", "train.eval_every=10"],
    "4 epochs": ["train.epochs=4"],
    "4 epochs, lr 5e-5": ["train.epochs=4", "train.lr=5e-5"],
    "4 epochs, lr 1e-4": ["train.epochs=4", "train.lr=1e-4"],
    "4 ep, lr 5e-5, 3 negatives": ["train.epochs=4", "train.lr=5e-5", "mining.num_negatives=3"],
    "4 ep, lr 5e-5, 0 negatives (in-batch only)": ["train.epochs=4", "train.lr=5e-5", "mining.enabled=false"],
    "4 ep, lr 5e-5, temperature 0.02": ["train.epochs=4", "train.lr=5e-5", "loss.temperature=0.02"],
    "4 ep, lr 5e-5, symmetric loss": ["train.epochs=4", "train.lr=5e-5", "loss.symmetric=true"],
    "4 ep, lr 5e-5, no false-negative masking": ["train.epochs=4", "train.lr=5e-5",
                                                 "loss.mask_false_negatives=false"],
    "4 ep, lr 5e-5, no mining margin": ["train.epochs=4", "train.lr=5e-5", "mining.relative_margin=null"],
    "4 ep, lr 5e-5, batch 64": ["train.epochs=4", "train.lr=5e-5", "train.batch_size=64"],
    "pair rows, 324 steps, lr 5e-5": ["mining.rows=pair", "train.max_steps=324", "train.lr=5e-5"],
    "10 epochs, lr 5e-5": ["train.epochs=10", "train.lr=5e-5", "train.eval_every=81"],
    "pair rows, 1200 steps, lr 5e-5": ["mining.rows=pair", "train.max_steps=1200", "train.lr=5e-5",
                                       "train.eval_every=150"],
}
# Not in the grid: for a 2-core CPU (15-17 s per step at batch 32, seq 256, fp32) the dev-best setting among
# the GPU grid's short runs (symmetric loss, best dev at step 160), capped at 160 steps. Run it with
# --setting 'nfcorpus=CPU budget: 160 steps, lr 5e-5, symmetric loss' (ST gets the same 160 steps).
NF_EXTRA: dict[str, list[str]] = {
    "CPU budget: 160 steps, lr 5e-5, symmetric loss": ["train.max_steps=160", "train.lr=5e-5", "loss.symmetric=true",
                                                       "train.eval_every=80"],
}
# STS-B train: 5749 pairs. Budget at most ST's example: 4 epochs at batch 16 (1437 steps).
STS_GRID: dict[str, list[str]] = {
    "recipe (1 epoch, batch 32, lr 2e-5)": ["train.epochs=1"],
    "4 epochs, batch 16, lr 2e-5 (ST's settings)": ["train.epochs=4", "train.batch_size=16", "train.eval_every=90"],
    "4 epochs, batch 16, lr 5e-5": ["train.epochs=4", "train.batch_size=16", "train.lr=5e-5", "train.eval_every=90"],
    "4 epochs, batch 32, lr 5e-5": ["train.epochs=4", "train.lr=5e-5"],
    "4 epochs, batch 32, lr 1e-4": ["train.epochs=4", "train.lr=1e-4"],
    "4 epochs, batch 16, lr 5e-5, scale 30": ["train.epochs=4", "train.batch_size=16", "train.lr=5e-5",
                                              "loss.temperature=0.0333333", "train.eval_every=90"],
}
QUICK_NF = {"recipe (1 epoch, lr 2e-5, 1 neg)": ["train.max_steps=6", "train.eval_every=3"]}
QUICK_STS = {"recipe (1 epoch, batch 32, lr 2e-5)": ["train.max_steps=6", "train.eval_every=3"]}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60]


def experiment(task: str, impl: str, label: str, seed: int, sets: list[str] | None = None,
               stage: int = 1) -> dict:
    return {"id": f"{task}-{impl}-{_slug(label)}-s{seed}", "task": task, "impl": impl, "label": label,
            "seed": seed, "sets": sets or [], "stage": stage}


# ---------------------------------------------------------------- one experiment (in a subprocess)


def _evaluate(model_path: str, data: Path, splits: dict[str, str]) -> dict[str, float]:
    """Scores of one saved model with textcl's evaluator: {metric: value} for each split given."""
    from textcl.config import EvalConfig
    from textcl.eval import evaluate
    from textcl.models import Encoder, load_model
    enc = Encoder(load_model(model_path), precision="auto", batch_size=64, show_progress=False)
    out: dict[str, float] = {}
    for split, prefix in splits.items():
        cfg = EvalConfig(retrieval=[str(data / "nfcorpus")], sts=[str(data / "stsbenchmark")], k_values=[10])
        out.update({f"{prefix}{k}": float(v) for k, v in evaluate(enc, cfg, split).items()
                    if k in (NF, STS)})
    return out


def run_textcl(exp: dict, work: Path, data: Path, model: str) -> dict:
    recipe = ROOT / "recipes" / ("nfcorpus.yaml" if exp["task"] == "nfcorpus" else "stsb.yaml")
    nf, sts = data / "nfcorpus", data / "stsbenchmark"
    sets = [f"output_dir={work}", f"train.output_dir={work}/model", f"seed={exp['seed']}",
            f"model.name_or_path={model}", "skip=[check,index]", "train.log_every=1000"]
    if exp["task"] == "nfcorpus":
        sets += [f"data.train={nf}", f"mining.output={work}/mined.jsonl", f"eval.retrieval=[{nf}]",
                 f"eval.ood_sts=[{sts}]", *NF_BASE]
    else:
        sets += [f"data.train={sts}", f"eval.sts=[{sts}]", f"eval.ood_retrieval=[{nf}]", *STS_BASE]
    sets += [*exp["sets"], *exp.get("extra", [])]  # later overrides win
    cmd = [sys.executable, "-m", "textcl", "run", str(recipe), *[a for s in sets for a in ("--set", s)]]
    subprocess.run(cmd, check=True, cwd=ROOT)
    summary = json.loads((work / "summary.json").read_text())
    history = json.loads((work / "history.json").read_text())
    key = PRIMARY[exp["task"]]
    dev = [(h["step"], h["eval"]["dev"][key]) for h in history if key in (h.get("eval") or {}).get("dev", {})]
    best_dev = max(dev, key=lambda t: t[1]) if dev else (None, None)
    return {"base": {k: summary["before"][k] for k in (NF, STS)},
            "test": {k: summary["after"][k] for k in (NF, STS)},
            "dev_curve": dev, "best_dev": best_dev[1], "best_step": best_dev[0],
            "steps": summary["train"]["steps"], "stopped_early": summary["train"]["stopped_early"],
            "mining": {k: (summary.get("mining") or {}).get(k) for k in ("rows", "rows_without_negatives",
                                                                          "negatives")}}


def _st_args(out: Path, seed: int, **kw: object) -> object:
    import torch
    return st_training_args(out, seed, bf16=torch.cuda.is_available() or _cpu_bf16(), **kw)


def _cpu_bf16() -> bool:
    from textcl.models import resolve_precision
    return resolve_precision("auto", "cpu") == "bf16"


def _seq_len(task: str, exp: dict) -> int | None:
    """The max_seq_length textcl's recipe uses for `task` (256 NFCorpus, 128 STS-B), with --set applied."""
    from textcl.config import load_recipe
    recipe = ROOT / "recipes" / ("nfcorpus.yaml" if task == "nfcorpus" else "stsb.yaml")
    return load_recipe(recipe, [s for s in exp.get("extra", []) if s.startswith("model.")]).model.max_seq_length


def run_st_nfcorpus(exp: dict, work: Path, data: Path, model_path: str) -> dict:
    """ST's recipe: all train (query, positive) pairs -> mine_hard_negatives defaults -> MNRL + trainer."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, losses
    from sentence_transformers.util import mine_hard_negatives

    from textcl.data.io import load_beir
    p = dict(exp["budget"])
    rset = load_beir(data / "nfcorpus", "train")
    anchors, positives = [], []
    for qid in sorted(rset.qrels):
        for did, grade in sorted(rset.qrels[qid].items()):
            if grade > 0 and did in rset.corpus and qid in rset.queries:
                anchors.append(rset.queries[qid])
                positives.append(rset.corpus[did].full_text)
    model = SentenceTransformer(model_path)
    model.max_seq_length = _seq_len("nfcorpus", exp)
    pairs = Dataset.from_dict({"anchor": anchors, "positive": positives})
    corpus = [d.full_text for d in rset.corpus.values()]  # every document is a candidate, as for textcl
    triplets = mine_hard_negatives(pairs, model, corpus=corpus, batch_size=128, verbose=False)
    args = _st_args(work / "st", exp["seed"], per_device_train_batch_size=p["batch_size"], max_steps=p["steps"],
                    learning_rate=p["lr"], dataloader_drop_last=True)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=triplets,
                               loss=losses.MultipleNegativesRankingLoss(model)).train()
    model.save(str(work / "model"))
    return {"test": _evaluate(str(work / "model"), data, {"test": ""}), "steps": p["steps"],
            "mining": {"rows": len(pairs), "rows_kept": len(triplets)}}


def run_st_stsb(exp: dict, work: Path, data: Path, model_path: str) -> dict:
    """ST's STS-B example: CoSENTLoss, 4 epochs, batch 16, lr 2e-5, warmup 10%, final model."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, losses

    from textcl.data.io import load_stsb
    train = load_stsb(data / "stsbenchmark", "train")
    ds = Dataset.from_dict({"sentence1": [p.sentence1 for p in train], "sentence2": [p.sentence2 for p in train],
                            "score": [p.score / 5.0 for p in train]})
    model = SentenceTransformer(model_path)
    model.max_seq_length = _seq_len("stsb", exp)
    args = _st_args(work / "st", exp["seed"], per_device_train_batch_size=16, num_train_epochs=4, learning_rate=2e-5)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=losses.CoSENTLoss(model)).train()
    model.save(str(work / "model"))
    return {"test": _evaluate(str(work / "model"), data, {"test": ""}), "steps": None}


def run_one(exp: dict, work: Path, data: Path, model: str) -> dict:
    t0 = time.perf_counter()
    if exp["impl"] == "textcl":
        res = run_textcl(exp, work, data, model)
    elif exp["task"] == "nfcorpus":
        res = run_st_nfcorpus(exp, work, data, model)
    else:
        res = run_st_stsb(exp, work, data, model)
    return {**exp, **res, "wall_s": round(time.perf_counter() - t0, 1)}


# ---------------------------------------------------------------- driver


def load_results(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["id"]: r for r in rows if "error" not in r}  # failed runs are retried


def launch(exps: list[dict], args: argparse.Namespace, results: Path) -> None:
    done = load_results(results)
    todo = [e for e in exps if e["id"] not in done]
    if args.deadline and time.time() > args.deadline - 30:
        print(f"time limit: {len(todo)} experiments not started", flush=True)
        return
    if not todo:
        return
    threads = str(max(1, (os.cpu_count() or 2) // max(1, min(args.jobs, len(todo)))))

    def one(exp: dict) -> None:
        if args.deadline and time.time() > args.deadline - 30:
            return
        work = Path(args.work) / exp["id"]
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        spec = work / "experiment.json"
        spec.write_text(json.dumps({**exp, "extra": args.extra}))
        env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, __file__, "--run-one", str(spec), "--data", args.data, "--model", args.model]
        t0 = time.perf_counter()
        with open(work / "log.txt", "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=max(1.0, args.deadline - time.time()) if args.deadline else None)
            except subprocess.TimeoutExpired:  # --time-limit reached: stop it, record it as unfinished
                os.killpg(proc.pid, 9)
                rc = proc.wait()
        if rc == 0 and (work / "result.json").exists():
            row = json.loads((work / "result.json").read_text())
            shutil.rmtree(work / "model", ignore_errors=True)
            shutil.rmtree(work / "st", ignore_errors=True)
        else:
            tail = (work / "log.txt").read_text(errors="replace")[-3000:]
            why = "stopped at --time-limit" if rc == -9 else f"exit {rc}"
            row = {**exp, "error": why, "log_tail": tail}
        with open(results, "a") as f:  # one line per experiment, appended as each ends
            f.write(json.dumps(row) + "\n")
        status = row.get("error") or f"{row.get('test', {}).get(PRIMARY[exp['task']], float('nan')):.4f}"
        print(f"[{time.strftime('%H:%M:%S')}] {exp['id']}: {status} ({time.perf_counter() - t0:.0f} s)", flush=True)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(one, todo))


def best_setting(rows: dict[str, dict], task: str, forced: dict[str, str] | None = None
                 ) -> tuple[str, list[str]] | None:
    """The grid setting with the best DEV score (seed 42) for `task`, never chosen on test; or the
    setting named with `--setting TASK=LABEL` (e.g. one chosen on dev by an earlier grid run)."""
    grid = [r for r in rows.values() if r["task"] == task and r["impl"] == "textcl" and r["seed"] == 42
            and r.get("best_dev") is not None and (not forced or task not in forced or r["label"] == forced[task])]
    if not grid:
        return None
    best = max(grid, key=lambda r: r["best_dev"])
    return best["label"], best["sets"]


def budget(sets: list[str]) -> dict:
    """Steps, batch and lr a textcl NFCorpus setting trains with (for ST's side-by-side run)."""
    from textcl.config import load_recipe
    cfg = load_recipe(ROOT / "recipes" / "nfcorpus.yaml", [*NF_BASE, *sets])
    steps_per_epoch = 2590 // cfg.train.batch_size
    steps = cfg.train.max_steps or cfg.train.epochs * steps_per_epoch
    return {"steps": steps, "batch_size": cfg.train.batch_size, "lr": cfg.train.lr}


def plan(args: argparse.Namespace, rows: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    full = args.mode == "full"
    grids = {"nfcorpus": NF_GRID if full else QUICK_NF, "stsb": STS_GRID if full else QUICK_STS}
    for task, label in args.forced.items():  # --setting: no grid for this task, only the named setting
        grids[task] = {label: {**NF_GRID, **NF_EXTRA, **STS_GRID}[label]}
    seeds = tuple(args.seeds) if args.seeds else SEEDS if full else SEEDS[:1]
    stage1: list[dict] = []
    if "stsb" in args.tasks:
        stage1 += [experiment("stsb", "sentence-transformers", "CoSENTLoss, 4 epochs, batch 16", s) for s in seeds]
    if "nfcorpus" in args.tasks:  # longest first
        stage1 += [experiment("nfcorpus", "textcl", k, 42, v) for k, v in reversed(grids["nfcorpus"].items())]
    if "stsb" in args.tasks:
        stage1 += [experiment("stsb", "textcl", k, 42, v) for k, v in grids["stsb"].items()]
    stage2 = []
    for task in args.tasks:
        chosen = best_setting(rows, task, args.forced)
        if chosen is None:
            continue
        label, sets = chosen
        stage2 += [experiment(task, "textcl", label, s, sets, stage=2) for s in seeds if s != 42]
        if task == "nfcorpus":
            b = budget(sets) if full else {"steps": 6, "batch_size": 32, "lr": 2e-5}
            for s in seeds:
                e = experiment(task, "sentence-transformers", f"mine_hard_negatives defaults + MNRL, {b['steps']} "
                               f"steps, batch {b['batch_size']}, lr {b['lr']:g}", s, stage=2)
                stage2.append({**e, "budget": b})
    return stage1, stage2


def _ms(values: list[float]) -> str:
    import statistics
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.2f} (1 seed)"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def report(rows: dict[str, dict], args: argparse.Namespace, failed: dict[str, str] | None = None) -> list[str]:
    """The section from finished experiments `rows`; `failed` = {id: why} of experiments that did not finish
    (None: read from args.results_file, for the live run)."""
    lines = [f"## Fine-tuned quality{': ' + args.title if args.title else ' (NFCorpus retrieval, STS Benchmark)'}", ""]
    lines.append(f"Machine: {args.machine}. Mode `{args.mode}`. Model: all-MiniLM-L6-v2 ({args.model}).")
    lines += ["", "Headline: the textcl setting with the best DEV score in the ablation below (seed 42; or the one "
              "named with --setting), run with the seeds listed; test reported. ST = sentence-transformers' own recipe on the same data and budget. Each "
              "model is also scored on the other task (forgetting); base = the same model before training, "
              "measured in the same run with the same recipe settings.", "",
              "| task | recipe | seeds | test (in-domain) | base | other task after | other task base | wall s / run |",
              "|---|---|---|---|---|---|---|---|"]
    per_seed: list[str] = []
    for task in ("nfcorpus", "stsb"):
        key, other = PRIMARY[task], OTHER[task]
        base = next((r["base"] for r in rows.values() if r["task"] == task and "base" in r), None)
        chosen = best_setting(rows, task, args.forced)
        groups = []
        if chosen:
            groups.append(("textcl: " + chosen[0], [r for r in rows.values() if r["task"] == task
                                                    and r["impl"] == "textcl" and r["label"] == chosen[0]]))
        st = [r for r in rows.values() if r["task"] == task and r["impl"] != "textcl"]
        if st:
            groups.append(("sentence-transformers: " + st[0]["label"], st))
        for name, rs in groups:
            per_seed.append(f"{task} {name}: " + ", ".join(f"{r['seed']} {100 * r['test'][key]:.2f}" for r in rs))
            wall = sum(r["wall_s"] for r in rs) / len(rs)
            b = (f"{100 * base[key]:.2f}", f"{100 * base[other]:.2f}") if base else ("-", "-")
            lines.append(f"| {task} | {name} | {','.join(str(r['seed']) for r in rs)} | "
                         f"{_ms([r['test'][key] for r in rs])} | {b[0]} | {_ms([r['test'][other] for r in rs])} | "
                         f"{b[1]} | {wall:.0f} |")
    lines += ["", "Test (in-domain) per seed: " + "; ".join(per_seed) + "."] if per_seed else []
    for task, title in (("nfcorpus", "NFCorpus ablation (seed 42; dev = best dev nDCG@10 during training)"),
                        ("stsb", "STS-B ablation (seed 42; dev = best dev Spearman during training)")):
        grid = [r for r in rows.values() if r["task"] == task and r["impl"] == "textcl" and r["seed"] == 42
                and r["stage"] == 1]
        if not grid:
            continue
        key, other = PRIMARY[task], OTHER[task]
        lines += ["", f"{title}:", "", "| setting | steps (best) | dev | test | other task | wall s |",
                  "|---|---|---|---|---|---|"]
        for r in sorted(grid, key=lambda r: -(r.get("best_dev") or 0)):
            lines.append(f"| {r['label']} | {r['steps']} ({r['best_step']}) | {100 * r['best_dev']:.2f} | "
                         f"{100 * r['test'][key]:.2f} | {100 * r['test'][other]:.2f} | {r['wall_s']:.0f} |")
    if failed is None:
        failed = {r["id"]: r["error"] for r in load_all(args.results_file) if "error" in r and r["id"] not in rows}
    if failed:
        lines += ["", "Not finished (see results.jsonl): " + ", ".join(f"{k} ({v})" for k, v in failed.items())]
    cmd = args.command or "python " + " ".join(["bench/bench_quality.py", *sys.argv[1:]])
    lines += ["", f"Command: `{cmd}`. Results per run: `{args.results_file}`.", *args.note, ""]
    return lines


def load_all(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def records_section(records: list[dict], meta: dict, source: str) -> list[str]:
    """One recorded results file's section, pure: `records` = its JSON lines (a failed experiment's line is
    superseded by a later success, as load_results), `meta` = its .meta.json (machine, command, note, mode, title,
    model, setting), `source` = the file's path as printed."""
    rows = {r["id"]: r for r in records if "error" not in r}
    failed = {r["id"]: r["error"] for r in records if "error" in r and r["id"] not in rows}
    ns = argparse.Namespace(results_file=source, machine=meta.get("machine", "not recorded"),
                            command=meta.get("command") or "not recorded", note=meta.get("note", []),
                            mode=meta.get("mode", "full"),
                            title=meta.get("title"), model=meta.get("model", "all-MiniLM-L6-v2"),
                            forced=dict(x.split("=", 1) for x in meta.get("setting", [])))
    return report(rows, ns, failed)


def assemble_records(folder: Path, args: argparse.Namespace) -> int:
    """One section per recorded results file (runs too long for `make bench`: GPU grids, CPU seconds)."""
    lines: list[str] = []
    for path in sorted(folder.glob("quality-*.jsonl")):
        meta_file = path.with_suffix(".meta.json")
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        source = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        lines += records_section(load_all(path), meta, str(source))
    write_section(args.out, lines or ["## Fine-tuned quality", "", "No recorded runs in " + str(folder), ""])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["quick", "full"], default="quick")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "quality.md"))
    parser.add_argument("--results", default=str(ROOT / "bench" / "results" / "quality"),
                        help="folder for results.jsonl, or a .jsonl file (kept: a re-run skips finished experiments)")
    parser.add_argument("--work", default=None, help="scratch folder for models (default: RESULTS/work)")
    parser.add_argument("--data", default=str(DATA), help="holds nfcorpus/, stsbenchmark/")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--jobs", type=int, default=1, help="experiments at once (a GPU fits ~12 MiniLM runs)")
    parser.add_argument("--machine", default=None, help="hardware line for the table (default: detected)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="extra recipe override for every textcl run (model.* also applies to ST)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 42 1 2 (full), 42 (quick)")
    parser.add_argument("--tasks", nargs="+", choices=["nfcorpus", "stsb"], default=["nfcorpus", "stsb"])
    parser.add_argument("--setting", action="append", default=[], metavar="TASK=LABEL",
                        help="skip the grid for TASK and run this grid setting (e.g. one chosen on dev earlier)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds: stop unfinished experiments then and write the table from what finished")
    parser.add_argument("--command", default=None, help="the command to print in the table (default: this one)")
    parser.add_argument("--note", action="append", default=[], help="a line to add under the table")
    parser.add_argument("--assemble", action="store_true", help="only rebuild the section from results.jsonl")
    parser.add_argument("--title", default=None, help="section title suffix")
    parser.add_argument("--records", default=None,
                        help="assemble one section per recorded run: DIR/*.jsonl with DIR/*.meta.json "
                             "(machine, command, note, mode, title, setting) — what `make bench` prints")
    parser.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data = str(Path(args.data).resolve())
    args.forced = dict(x.split("=", 1) for x in args.setting)
    if args.records:
        return assemble_records(Path(args.records), args)
    if args.run_one:
        exp = json.loads(Path(args.run_one).read_text())
        work = Path(args.run_one).parent
        from textcl.models import resolve_model_path  # "all-MiniLM-L6-v2" -> the bundled offline copy
        res = run_one(exp, work, Path(args.data), resolve_model_path(args.model))
        (work / "result.json").write_text(json.dumps(res))
        return 0
    results_dir = Path(args.results)
    if results_dir.suffix == ".jsonl":  # a results file itself (e.g. bench/records/quality-1-h200.jsonl)
        results_dir, args.results_file = results_dir.parent, results_dir
    else:
        args.results_file = results_dir / "results.jsonl"
    results_dir.mkdir(parents=True, exist_ok=True)
    args.work = args.work or str(results_dir / "work")
    if args.machine is None:
        import torch
        args.machine = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                        else f"CPU, {os.cpu_count()} cores") + f", torch {torch.__version__}"
    results = args.results_file
    args.deadline = time.time() + args.time_limit if args.time_limit else None
    if not args.assemble:
        stage1, _ = plan(args, load_results(results))
        launch(stage1, args, results)
        _, stage2 = plan(args, load_results(results))
        launch(stage2, args, results)
    write_section(args.out, report(load_results(results), args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
