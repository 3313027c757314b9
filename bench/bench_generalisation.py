"""Generalisation benchmarks the recipe was never tuned on (issue 29): NFCorpus test queries scored on
documents no train/dev qrel names ("new documents"), and smaller label budgets (50 / 150 / 500 / all train
queries). Per (method, split, seed): one `textcl run` of the method's recipe, unchanged except that
training data and the in-domain evaluation set point at the split; base and tuned test nDCG@10 and the dev
score come from the run's summary.json. One record per run in bench/records/generalisation.jsonl.

    .venv/bin/python bench/bench_generalisation.py --splits new-docs --seeds 1 2 3 --threads 1   # ~10+ min per run
    .venv/bin/python bench/bench_generalisation.py --splits budget-50 budget-150 --method adapter
    .venv/bin/python bench/bench_generalisation.py --pool     # new-docs runs re-scored on the new documents only
    .venv/bin/python bench/bench_generalisation.py --table                            # from the records alone

On a shared, oversubscribed machine give each run one thread (`--threads 1`, OMP_NUM_THREADS): two threads per
run spun instead of stepping here (a recipe run went from ~7 to ~1-4 s per step).

Resumable: a (method, split, seed) with a record is skipped; an interrupted `textcl run` continues from its
finished stages. The splits are written by bench/splits.py under --work/splits (never committed). The data
check and index stages are skipped (`skip=[check, index]`): neither changes a number recorded here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import splits
from common import ROOT, append_record  # sets up sys.path and env (splits needs neither)

RECORDS = ROOT / "bench" / "records" / "generalisation.jsonl"
METHODS = {"recipe": ROOT / "recipes" / "nfcorpus-fast.yaml", "adapter": ROOT / "recipes" / "nfcorpus-adapter.yaml"}
METRIC = "nfcorpus/ndcg@10"
OOD = "stsbenchmark/spearman_cosine"
BUDGETS = {"budget-50": 50, "budget-150": 150, "budget-500": 500, "budget-all": None}
SPLITS = ("new-docs", *BUDGETS)


def split_folder(split: str, seed: int, work: Path) -> Path:
    """The BEIR leaf folder of `split` for `seed` (a budget's sample depends on the seed), written if missing."""
    source, out = splits.SOURCE, work / "splits"
    if split == "new-docs":
        name, make = "new-docs", lambda o: splits.new_docs_split(source, o)
    else:
        total = len(splits.train_queries(source))
        n = BUDGETS[split] or total
        name, make = splits.budget_name(n, seed, total), lambda o: splits.budget_split(source, o, n, seed)
    if not (out / name / "split.json").is_file():
        make(out / name)
    return out / name / "nfcorpus"


def run_command(method: str, leaf: Path, out: Path, seed: int, cache: Path) -> list[str]:
    """`textcl run` of the method's recipe: training data and in-domain eval set = the split, the rest as is."""
    return [str(Path(sys.executable).parent / "textcl"), "run", str(METHODS[method]), "--no-progress",
            "--set", f"data.train={leaf}", "--set", f"eval.retrieval=[{leaf}]", "--set", f"output_dir={out}",
            "--set", f"seed={seed}", "--set", f"model.cache_dir={cache}", "--set", "skip=[check, index]"]


def summary_row(out: Path) -> dict:
    """Base / tuned test and dev scores, the out-of-domain STS-B score and what training kept, from summary.json."""
    s = json.loads((out / "summary.json").read_text())
    train = s.get("train") or {}
    dev_before, dev_after = (train.get("dev_before") or {}).get("dev", {}), (train.get("dev_after") or {}).get("dev", {})
    history = json.loads((out / "history.json").read_text()) if (out / "history.json").is_file() else []
    budget = next((h for h in history if "forgetting_budget" in h), {})
    stages = {k: v.get("seconds") for k, v in s.get("stages", {}).items() if isinstance(v, dict)}
    return {"stages_total_s": round(sum(v for v in stages.values() if v), 1), "base_test": s["before"].get(METRIC), "tuned_test": s["after"].get(METRIC),
            "base_dev": dev_before.get(METRIC), "tuned_dev": dev_after.get(METRIC),
            "base_stsb": s["before"].get(OOD), "tuned_stsb": s["after"].get(OOD),
            "steps": train.get("steps"), "stopped_early": train.get("stopped_early"),
            "chosen_alpha": budget.get("chosen"), "stages_s": stages}


def _claim(out: Path) -> bool:
    """Claim a run folder for this process (a second bench process skips it instead of running it twice)."""
    lock = out / ".bench-running"
    out.mkdir(parents=True, exist_ok=True)
    if lock.is_file():
        try:
            os.kill(int(lock.read_text()), 0)
            return False  # its process is alive
        except (ValueError, ProcessLookupError):
            lock.unlink()  # left by a process that died
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def run_one(method: str, split: str, seed: int, work: Path, records: Path, note: str = "",
            threads: int | None = None) -> dict | None:
    """One `textcl run` and its record; None when another process is running it."""
    leaf = split_folder(split, seed, work)
    out = work / method / f"{split}-s{seed}"
    facts = json.loads((leaf.parent / "split.json").read_text())
    cmd = run_command(method, leaf, out, seed, work / "cache")
    if not _claim(out):
        print(f"skip {method} {split} seed {seed}: another process is running it in {out}", flush=True)
        return None
    print(" ".join(cmd), flush=True)
    # a folder whose run finished without its record (its bench process was stopped): textcl reuses every
    # stage, so this invocation's wall time is seconds; the run's own time is `stages_total_s`
    collected = (out / "summary.json").is_file()
    load_before = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    try:
        subprocess.run(cmd, check=True, env={**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})})
    finally:
        (out / ".bench-running").unlink(missing_ok=True)
    wall = time.perf_counter() - t0
    row = {"method": method, "split": split, "seed": seed, **summary_row(out), "wall_s": round(wall, 1),
           "collected": collected, "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
           "train_queries": facts.get("n") or (facts.get("train") or {}).get("queries_kept"),
           "run_command": " ".join(cmd[1:]), "threads": threads or os.environ.get("OMP_NUM_THREADS"), "note": note}
    return append_record(records, row)


def pool_eval(model: str, leaf: Path, work: Path, report: Path) -> float:
    """Test nDCG@10 of `model` on the new-documents pool (`textcl eval`; documents by the base tower, cached)."""
    if not report.is_file():
        subprocess.run([str(Path(sys.executable).parent / "textcl"), "eval", "--model", model, "--retrieval", str(leaf),
                        "--split", "test", "--k", "10", "--cache-dir", str(work / "cache"), "--output", str(report),
                        "--no-progress"], check=True)
    results = json.loads(report.read_text())["results"]
    return next(r["value"] for r in results if r["key"] == METRIC)


def pool_records(work: Path, records: Path) -> None:
    """Every finished new-documents run, scored again with the corpus cut to the new documents only
    (splits.new_docs_pool): one record per run, split `new-docs-pool`, dev scores copied from the run's."""
    leaf = work / "splits" / "new-docs-pool" / "nfcorpus"
    if not (leaf.parent / "split.json").is_file():
        splits.new_docs_pool(splits.SOURCE, leaf.parent)
    done = {(r["method"], r["seed"]) for r in read_records(records) if r["split"] == "new-docs-pool"}
    for run in [r for r in read_records(records) if r["split"] == "new-docs"]:
        if (run["method"], run["seed"]) in done:
            continue
        out = work / run["method"] / f"new-docs-s{run['seed']}"
        t0 = time.perf_counter()
        base = pool_eval("all-MiniLM-L6-v2", leaf, work, work / "pool-base.json")
        tuned = pool_eval(str(out / "model"), leaf, work, out / "pool-eval.json")
        append_record(records, {"method": run["method"], "split": "new-docs-pool", "seed": run["seed"],
                                "base_test": base, "tuned_test": tuned, "base_dev": run["base_dev"],
                                "tuned_dev": run["tuned_dev"], "wall_s": round(time.perf_counter() - t0, 1),
                                "load_before": run["load_before"], "model": str(out / "model")})
        done.add((run["method"], run["seed"]))


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _pts(values: list[float]) -> str:
    vals = [100 * v for v in values]
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def _cell_rows(rows: list[dict], split_names: list[str], label) -> list[str]:
    """One table row per (split, method): base, tuned, gain (mean ± std over seeds), worst seed's gain, dev."""
    lines = []
    for split in split_names:
        for method in METHODS:
            runs = {r["seed"]: r for r in rows if r["split"] == split and r["method"] == method}  # first per seed
            runs = {s: r for s, r in runs.items() if r.get("tuned_test") is not None}
            if not runs:
                continue
            rs = list(runs.values())
            gains = [r["tuned_test"] - r["base_test"] for r in rs]
            lines.append(f"| {label(split)} | {method} | {len(rs)} | {_pts([r['base_test'] for r in rs])} | "
                         f"{_pts([r['tuned_test'] for r in rs])} | {_pts(gains)} | {100 * min(gains):+.2f} | "
                         f"{_pts([r['base_dev'] for r in rs])} -> {_pts([r['tuned_dev'] for r in rs])} | "
                         f"{statistics.median(r.get('stages_total_s', r['wall_s']) for r in rs):.0f} |")
    return lines


HEADER = ["| split | method | seeds | base test nDCG@10 | tuned test nDCG@10 | gain | worst seed gain | "
          "dev nDCG@10 base -> tuned | median run time (s) |", "|---|---|---|---|---|---|---|---|---|"]


def table(rows: list[dict]) -> list[str]:
    """Markdown tables from the records alone: new documents, then the label budget curve."""
    first: dict[tuple, dict] = {}
    for r in rows:
        first.setdefault((r["method"], r["split"], r["seed"]), r)
    rows = list(first.values())
    loads = [r["load_before"][0] for r in rows]
    lines = ["## Generalisation: new documents and label budgets (`bench/bench_generalisation.py`)", "",
             "Points x100, mean ± std over the seeds in the `seeds` column (the first record per seed). `recipe` = "
             "`recipes/nfcorpus-fast.yaml` unchanged but for its training data and in-domain set; `adapter` = "
             "`recipes/nfcorpus-adapter.yaml`. Dev is the split's own dev qrels (what selection saw).", "",
             "### New documents", "",
             "NFCorpus documents with sha256(id) mod 100 < 20 are new: every train and dev qrel naming one is removed; "
             "test keeps only (query, new document) pairs; the corpus stays whole (bench/splits.py). The second row "
             "(`--pool`: a diagnostic) scores the same runs' models on the same test qrels with the corpus cut to the "
             "new documents, so seen documents — relevant ones too — cannot crowd new ones out of the top 10; its dev "
             "column repeats the run's.", "", *HEADER]
    lines += _cell_rows(rows, ["new-docs", "new-docs-pool"],
                        lambda s: "new documents" if s == "new-docs" else "new documents, pool of new documents only")
    lines += ["", "### Label budget", "",
              "Train qrels of a seeded sample of N train queries (the sample's seed = the run's seed); dev and test "
              "unchanged.", "", *HEADER]
    lines += _cell_rows(rows, [s for s in BUDGETS], lambda s: f"N = {s.split('-')[1]}")
    if loads:
        lines += ["", f"Run times are the sum of a `textcl run`'s stage times (data check and index skipped) on a 2-core machine shared "
                      f"with other jobs (1-minute load average {min(loads):.1f}-{max(loads):.1f} at the start of the "
                      "runs): read them as loaded-machine times, not a speed result."]
    noted: dict[str, list[str]] = {}
    for r in rows:
        if r.get("note"):
            noted.setdefault(r["note"], []).append(f"{r['method']} {r['split']} seed {r['seed']}")
    for note, runs in noted.items():
        lines += ["", f"{', '.join(runs)}: {note}."]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", nargs="*", choices=SPLITS, default=["new-docs"])
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument("--method", choices=list(METHODS), default="recipe")
    parser.add_argument("--work", default=str(ROOT / "out" / "generalisation"),
                        help="splits, run folders and the embedding cache (never committed)")
    parser.add_argument("--records", default=str(RECORDS))
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of each run (default: inherited)")
    parser.add_argument("--note", default="", help="the records' note, e.g. that a run was resumed")
    parser.add_argument("--table", action="store_true", help="print the tables from the records; run nothing")
    parser.add_argument("--pool", action="store_true",
                        help="score finished new-documents runs on the new documents only (a diagnostic); run nothing else")
    args = parser.parse_args()
    records = Path(args.records)
    if args.pool:
        pool_records(Path(args.work).resolve(), records)
    elif not args.table:
        if not METHODS[args.method].is_file():
            parser.error(f"{METHODS[args.method]} does not exist: method {args.method!r} is not available here")
        for split in args.splits:
            for seed in args.seeds:
                if any(r["method"] == args.method and r["split"] == split and r["seed"] == seed
                       for r in read_records(records)):
                    print(f"skip {args.method} {split} seed {seed}: recorded in {records}", flush=True)
                    continue
                run_one(args.method, split, seed, Path(args.work).resolve(), records, args.note, args.threads)
    print("\n".join(table(read_records(records))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
