"""Linear query adapter on NFCorpus end to end: `textcl run recipes/nfcorpus-adapter.yaml` for every (lr, seed) of
a small grid; the lr is chosen on dev (mean over seeds of the dev nDCG@10 of the kept adapter) and its test
nDCG@10 is reported as mean ± std over the seeds, with training seconds and wall time per run.

The first run embeds the corpus and the queries (cold: its wall time is the one a user's first run pays); later
runs reuse those base-model embeddings through model.cache_dir. Each run appends one record (command, git
commit, machine, seed, load average, scores, timings) to --records.

    .venv/bin/python bench/bench_adapter.py                                  # 3 lrs x 3 seeds
    .venv/bin/python bench/bench_adapter.py --records bench/records/adapter.jsonl --table   # table only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import (  # first: sets up sys.path and env
    ROOT,
    read_jsonl,
    recipe_scope,
    run_corpus_scope,
    scope_note,
    shown_runs,
    write_section,
)

RECIPE = ROOT / "recipes" / "nfcorpus-adapter.yaml"
SCOPE = recipe_scope(RECIPE)  # train.corpus_scope the recipe sets today: the runs the table shows
KEY = "nfcorpus/ndcg@10"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{cpu}, {os.cpu_count()} cores"


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "textcl", "recipes"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return head.strip() + (" (uncommitted changes in textcl/ or recipes/)" if dirty else "")


def run_one(seed: int, lr: float, work: Path, extra: list[str], threads: int | None) -> dict:
    """One `textcl run`; its record (scores from summary.json and adapter.json, wall time of the process)."""
    from textcl.models import resolve_precision  # loads torch: only when runs are made, not to table records

    out = work / f"lr{lr:g}-s{seed}"
    cold = not (work / "cache").is_dir()
    cmd = [str(Path(sys.executable).parent / "textcl"), "run", str(RECIPE), "--no-progress", "--set", f"seed={seed}",
           "--set", f"train.lr={lr}", "--set", f"output_dir={out}", "--set", f"model.cache_dir={work / 'cache'}",
           *extra]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t0
    summary = json.loads((out / "summary.json").read_text())
    adapter = json.loads((out / "model" / "adapter" / "adapter.json").read_text())
    stages = {k: v.get("seconds") for k, v in summary["stages"].items() if isinstance(v, dict)}
    return {"seed": seed, "lr": lr, "test_before": summary["before"][KEY], "test_after": summary["after"][KEY],
            "dev_base": adapter["dev_base"].get(KEY), "dev_best": adapter["dev_best"].get(KEY),
            "best_step": adapter["best_step"], "steps": adapter["steps"], "steps_per_epoch": adapter["steps_per_epoch"],
            "train_s": adapter["train_s"], "eval_s": adapter["eval_s"], "stages_s": stages, "wall_s": round(wall, 1),
            "cold": cold, "precision": _precision(extra, resolve_precision("auto", "cpu")),
            "corpus_scope": run_corpus_scope(out),
            "threads": threads or os.cpu_count(),
            "command": ("" if threads is None else f"OMP_NUM_THREADS={threads} ")
            + " ".join(["textcl", *cmd[1:]]).replace(str(ROOT) + "/", ""), "commit": commit(), "machine": machine(),
            "load_avg_1m": [round(load, 2), round(os.getloadavg()[0], 2)],
            "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def _precision(extra: list[str], auto: str) -> str:
    """What the runs encode with: a `model.precision=` override, else the recipe's auto on this CPU."""
    given = [x.split("=", 1)[1] for x in extra if x.startswith("model.precision=")]
    return f"model.precision {given[-1]}" if given else f"model.precision auto -> {auto} on this CPU"


def _ms(values: list[float]) -> str:
    pts = [100 * v for v in values]
    return f"{statistics.mean(pts):.2f} ± {statistics.stdev(pts):.2f}" if len(pts) > 1 else f"{pts[0]:.2f} (1 seed)"


def table(rows: list[dict]) -> list[str]:
    """Markdown: per lr, dev and test nDCG@10 (mean ± std over seeds), steps to the best, training seconds; the lr
    best on dev is marked; then the runs' wall times (every run; a (seed, lr) run more than once, e.g. again with a
    cold cache, counts once for quality: its last record)."""
    runs = shown_runs(rows, SCOPE)
    rows = list({(r["seed"], r["lr"]): r for r in runs}.values())
    lrs = sorted({r["lr"] for r in rows})
    dev_mean = {lr: statistics.mean(r["dev_best"] for r in rows if r["lr"] == lr) for lr in lrs}
    chosen = max(lrs, key=lambda lr: dev_mean[lr])
    base = statistics.mean(r["test_before"] for r in rows)
    lines = [f"Base all-MiniLM-L6-v2 test nDCG@10: {100 * base:.2f}.", "",
             "| lr | seeds | dev nDCG@10 (kept step) | test nDCG@10 | best step (of steps per epoch) | training s "
             "(optimizer steps) | dev evaluation s |", "|---|---|---|---|---|---|---|"]
    for lr in lrs:
        rs = [r for r in rows if r["lr"] == lr]
        mark = " **(chosen on dev)**" if lr == chosen else ""
        lines.append(f"| {lr:g}{mark} | {','.join(str(r['seed']) for r in rs)} | {_ms([r['dev_best'] for r in rs])} | "
                     f"{_ms([r['test_after'] for r in rs])} | "
                     f"{', '.join(str(r['best_step']) for r in rs)} ({rs[0]['steps_per_epoch']}) | "
                     f"{statistics.mean(r['train_s'] for r in rs):.1f} | {statistics.mean(r['eval_s'] for r in rs):.1f} |")
    cold = [r for r in runs if r["cold"]]
    warm = [r["wall_s"] for r in runs if not r["cold"]]
    loads = [x for r in runs for x in r["load_avg_1m"]]
    cold_s = ", ".join(f"{r['wall_s']:.0f} s" for r in cold) or "none"
    commands = list(dict.fromkeys(r["command"] for r in rows))
    lines += ["", f"Whole `textcl run` wall time: {cold_s} cold (corpus and "
                  f"queries embedded), {statistics.mean(warm) if warm else float('nan'):.0f} s mean with "
                  f"the embedding cache; all {len(runs)} runs: {sum(r['wall_s'] for r in runs):.0f} s. "
                  f"{rows[0]['machine']}, {rows[0].get('threads', '?')} thread(s) per run, 1-minute load average "
                  f"{min(loads):.1f}-{max(loads):.1f} before and after the runs"
                  + (" (at most the run's own threads: an otherwise idle machine)."
                     if max(loads) <= (rows[0].get("threads") or 0) + 0.5 else ": timings are on a loaded machine."),
                  "",
              f"Precision: {rows[0]['precision']}. Commands: " + "; ".join(f"`{c}`" for c in commands[:2])
              + f"{' ...' if len(commands) > 2 else ''}; commit {rows[-1]['commit']}.", *scope_note(rows, "recipes/nfcorpus-adapter.yaml")]
    return lines


def load_records(path: Path) -> list[dict]:
    """The records of a .jsonl file, or of adapter.jsonl in a folder (bench/run_all.py passes bench/records)."""
    return read_jsonl(path, "adapter.jsonl")


def run_grid(args: argparse.Namespace) -> None:
    """Every (seed, lr) run, each record appended as soon as it finishes (a stopped bench keeps its runs)."""
    t0 = time.perf_counter()
    args.records.parent.mkdir(parents=True, exist_ok=True)
    extra = [x for o in args.overrides for x in ("--set", o)]
    for seed in args.seeds:
        for lr in args.lrs:
            line = json.dumps(run_one(seed, lr, args.work, extra, args.threads))
            with open(args.records, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
            print(line, flush=True)
    print(f"bench wall time {time.perf_counter() - t0:.0f} s", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3])
    p.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "adapter")
    p.add_argument("--records", type=Path, default=ROOT / "bench" / "records" / "adapter.jsonl")
    p.add_argument("--table", action="store_true", help="only table the records")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS of each run (on a shared, loaded machine 1 thread ran 7x faster than 2)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="more recipe overrides")
    p.add_argument("--mode", choices=["quick", "full"], default=None, help="bench/run_all.py's flag (tables records)")
    p.add_argument("--out", type=Path, default=None, help="markdown section to write")
    args = p.parse_args()
    if not (args.table or args.mode):
        run_grid(args)
    rows = load_records(args.records)
    write_section(args.out or args.work / "adapter.md", ["## Linear query adapter on NFCorpus (`train.tune: adapter`)",
                                                         "", *(table(rows) if rows else ["No recorded runs."]), ""])
    return 0


if __name__ == "__main__":
    sys.exit(main())
