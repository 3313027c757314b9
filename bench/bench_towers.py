"""Query-side methods on NFCorpus, one script on one machine, interleaved by seed: the linear query adapter
(`recipes/nfcorpus-adapter.yaml`), the full query tower (`recipes/nfcorpus-fast.yaml`), a LoRA query tower (the fast
recipe + `train.lora`) and chaining (the fast recipe started from the same seed's adapter: `train.init_adapter`).
Each `textcl run` records test and dev nDCG@10, training seconds, the output folder's bytes (and the LoRA updates'
alone) and the load average into --records; `--table` only tables them.

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_towers.py --seeds 42 1 2 --expensive-seeds 42
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

from common import (  # first: sys.path, env
    ROOT,
    append_record,
    provenance,
    read_jsonl,
    recipe_scope,
    run_corpus_scope,
    scope_note,
    shown_runs,
    write_section,
)

RECIPES = {"adapter": ROOT / "recipes" / "nfcorpus-adapter.yaml", "full": ROOT / "recipes" / "nfcorpus-fast.yaml",
           "lora": ROOT / "recipes" / "nfcorpus-fast.yaml", "chain": ROOT / "recipes" / "nfcorpus-fast.yaml"}
SCOPE = recipe_scope(RECIPES["full"])  # train.corpus_scope both recipes set today: the runs the table shows
KEY = "nfcorpus/ndcg@10"
LABELS = {"adapter": "linear adapter (`tune: adapter`, lr 3e-4)",
          "lora": "LoRA query tower (`tune: query` + `lora: {{r: 8, alpha: 16, query/value}}`, lr {lr:g} chosen on dev)",
          "full": "full query tower (`nfcorpus-fast.yaml`, lr 1e-4)",
          "chain": "adapter -> full query tower (`init_adapter`, adapter frozen, lr 1e-4)"}
LORA = ["train.lora.r=8", "train.lora.alpha=16"]
LORA_LR = 1e-3  # LoRA's usual 10x the full lr: the first runs' (records without lora_lr); --lora-lrs searches on dev


def _bytes(folder: Path) -> int:
    """Bytes of the files a user ships: everything but `checkpoints/` (training state, best copy)."""
    return sum(f.stat().st_size for f in folder.rglob("*")
               if f.is_file() and "checkpoints" not in f.relative_to(folder).parts)


def _sizes(model: Path) -> dict:
    """Bytes of the output model folder, of its largest transformer folder (one copy of the base model) and of the
    LoRA updates alone (`lora/`)."""
    transformers = [_bytes(d) for d in model.iterdir() if d.is_dir() and d.name.endswith("Transformer")]
    if not transformers:  # a one-tower model keeps its transformer at the top
        transformers = [sum(f.stat().st_size for f in model.iterdir() if f.is_file())]
    lora = model / "lora"
    return {"output_bytes": _bytes(model), "transformer_bytes": max(transformers),
            "lora_bytes": _bytes(lora) if lora.is_dir() else None}


def run_one(method: str, seed: int, work: Path, threads: int | None, lora_lr: float = LORA_LR) -> dict:
    out = work / (f"{method}-s{seed}" if method != "lora" or lora_lr == LORA_LR else f"lora-lr{lora_lr:g}-s{seed}")
    sets = [f"seed={seed}", f"output_dir={out}", f"model.cache_dir={work / 'cache'}", "skip=[check,index]"]
    sets += {"lora": [*LORA, f"train.lr={lora_lr}"],
             "chain": [f"train.init_adapter={work / f'adapter-s{seed}' / 'model'}"]}.get(method, [])
    cmd = [str(Path(sys.executable).parent / "textcl"), "run", str(RECIPES[method]), "--no-progress"]
    cmd += [x for s in sets for x in ("--set", s)]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t0
    summary = json.loads((out / "summary.json").read_text())
    stages = {k: v.get("seconds") for k, v in summary["stages"].items() if isinstance(v, dict)}
    if method == "adapter":
        info = json.loads((out / "model" / "adapter" / "adapter.json").read_text())
        dev_before, dev_after = info["dev_base"].get(KEY), info["dev_best"].get(KEY)
    else:
        train = summary.get("train") or {}
        dev_before, dev_after = (((train.get(f"dev_{t}") or {}).get("dev") or {}).get(KEY) for t in ("before", "after"))
    return {"method": method, "seed": seed, **({"lora_lr": lora_lr} if method == "lora" else {}), "test_before": summary["before"][KEY], "test_after": summary["after"][KEY],
            "dev_before": dev_before, "dev_after": dev_after, "train_s": stages.get("train"), "stages_s": stages,
            "wall_s": round(wall, 1), **_sizes(out / "model"), "threads": threads or os.cpu_count(),
            "corpus_scope": run_corpus_scope(out),
            "load_avg_1m": [round(load, 2), round(os.getloadavg()[0], 2)],
            "run_command": ("" if threads is None else f"OMP_NUM_THREADS={threads} ")
            + " ".join(["textcl", *cmd[1:]]).replace(str(ROOT) + "/", "")}


def _pts(values: list[float]) -> str:
    pts = [100 * v for v in values if v is not None]
    if not pts:
        return "not recorded"
    return f"{statistics.mean(pts):.2f} ± {statistics.stdev(pts):.2f}" if len(pts) > 1 else f"{pts[0]:.2f}"


def _lr(r: dict) -> float | None:
    return r.get("lora_lr", LORA_LR) if r["method"] == "lora" else None


def lora_choice(rows: list[dict]) -> tuple[float, dict[float, float]]:
    """The LoRA lr with the best seed-42 dev score (kept model), and each searched lr's dev score."""
    dev = {_lr(r): r["dev_after"] for r in rows if r["method"] == "lora" and r["seed"] == 42}
    return (max(dev, key=dev.get) if dev else LORA_LR), dev


def table(rows: list[dict]) -> list[str]:
    """Markdown: per method, test and dev nDCG@10 (mean ± std over seeds; one seed is labelled a hint), training
    seconds, output bytes and bytes beyond one copy of the base model. LoRA: the lr with the best seed-42 dev."""
    rows = shown_runs(rows, SCOPE)  # runs of the recipes as they are today, when there are any
    rows = list({(r["method"], r["seed"], _lr(r)): r for r in rows}.values())  # a rerun (--again) counts once: its
    # last record
    chosen, searched = lora_choice(rows)
    rows = [r for r in rows if r["method"] != "lora" or _lr(r) == chosen]
    base = [r["test_before"] for r in rows if r["method"] == "adapter"] or [rows[0]["test_before"]]
    dev_base = [r["dev_before"] for r in rows if r["method"] == "adapter" and r["dev_before"] is not None]
    lines = [f"Base all-MiniLM-L6-v2: test nDCG@10 {100 * base[0]:.2f}, dev {_pts(dev_base[:1])}.", "",
             "| method | seeds | test nDCG@10 | dev nDCG@10 (kept model) | training s | output MB | beyond one base "
             "copy, MB |", "|---|---|---|---|---|---|---|"]
    for method in LABELS:
        rs = [r for r in rows if r["method"] == method]
        if not rs:
            continue
        seeds = ",".join(str(r["seed"]) for r in rs) + (" — 1 seed (a hint)" if len(rs) == 1 else "")
        extra = [r["output_bytes"] - r["transformer_bytes"] for r in rs]
        lora = [r["lora_bytes"] for r in rs if r.get("lora_bytes")]
        beyond = f"{statistics.mean(extra) / 1e6:.2f}" + (f" (LoRA updates alone: {lora[0] / 1e6:.2f})" if lora else "")
        lines.append(f"| {LABELS[method].format(lr=chosen)} | {seeds} | {_pts([r['test_after'] for r in rs])} | "
                     f"{_pts([r['dev_after'] for r in rs])} | {statistics.mean(r['train_s'] for r in rs):.0f} | "
                     f"{statistics.mean(r['output_bytes'] for r in rs) / 1e6:.1f} | {beyond} |")
    chain = [r for r in rows if r["method"] == "chain"]
    kept_start = [r["seed"] for r in chain if r["dev_after"] == r["dev_before"]]
    if chain:
        lines += ["", f"Chaining kept its starting model (base + that seed's adapter: its dev score before training "
                  f"equals the kept model's) at {len(kept_start)} of {len(chain)} seeds"
                  + (": query-tower training from the adapter never beat the adapter on dev." if len(kept_start) ==
                     len(chain) else ".")]
    if len(searched) > 1:
        lines += ["", "LoRA learning rate, searched at seed 42 on dev (nDCG@10 of the kept model): "
                  + ", ".join(f"{lr:g}: {100 * v:.2f}" for lr, v in sorted(searched.items())) + "."]
    loads = [x for r in rows for x in r["load_avg_1m"]]
    commands = list(dict.fromkeys(r["run_command"].split(" --set seed=")[0] for r in rows))
    lines += ["", f"Training s: the `train` stage of `textcl run` (for the adapter: encoding the training queries "
                  "plus seconds of optimizer steps; the corpus embeddings come from a shared cache). "
                  f"{rows[0]['threads']} threads per run, 1-minute load average {min(loads):.1f}-{max(loads):.1f} "
                  "before and after the runs" + (" (at most the run's own threads: an otherwise idle machine)"
                                                 if max(loads) <= rows[0]["threads"] + 0.5 else
                                                 ": timings are on a loaded machine") + ". Output MB: the model folder a user ships, "
                  "without `checkpoints/`" + (" (re-measured after the runs, `--resize`, for runs first recorded "
                  "with their checkpoints counted)" if any(r.get("sizes_recomputed") for r in rows) else "")
                  + ". A LoRA run whose kept model is a WiSE-FT mix is saved merged, without `lora/`.", "",
              provenance(rows),
              "", "Commands (each with `--set seed=S output_dir=... model.cache_dir=... skip=[check,index]`, LoRA and "
                  "chaining with the overrides named in the table): "
              + "; ".join(f"`{c}`" for c in commands) + ".", *scope_note(rows, "recipes/nfcorpus-fast.yaml (and -adapter)")]
    return lines


def load_records(path: Path) -> list[dict]:
    return read_jsonl(path, "towers.jsonl")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    p.add_argument("--expensive-seeds", type=int, nargs="+", default=None,
                   help="seeds of the query-tower rows (~9 min each on 2 cores); default: --seeds")
    p.add_argument("--methods", nargs="+", default=list(LABELS), choices=list(LABELS))
    p.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "towers")
    p.add_argument("--records", type=Path, default=ROOT / "bench" / "records" / "towers.jsonl")
    p.add_argument("--lora-lrs", type=float, nargs="+", default=[LORA_LR],
                   help="LoRA learning rates searched at seed 42; later seeds run the one with the best dev score")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of each run")
    p.add_argument("--again", action="store_true", help="run recorded (method, seed, lr) again, e.g. one first "
                   "timed on a loaded machine; the table keeps the last record of each")
    p.add_argument("--table", action="store_true", help="only table the records")
    p.add_argument("--mode", choices=["quick", "full"], default=None, help="bench/run_all.py's flag (tables records)")
    p.add_argument("--out", type=Path, default=None, help="markdown section to write")
    p.add_argument("--resize", action="store_true", help="re-measure the output bytes of recorded runs (without "
                   "checkpoints/) and append each as a corrected record; run nothing")
    args = p.parse_args()
    if args.resize:
        for r in list({(r["method"], r["seed"]): r for r in load_records(args.records)}.values()):
            model = args.work / f"{r['method']}-s{r['seed']}" / "model"
            if model.is_dir():
                fixed = {k: v for k, v in r.items() if k not in ("command", "commit", "machine", "written")}
                append_record(args.records, {**fixed, **_sizes(model), "sizes_recomputed": True})
        args.table = True
    if not (args.table or args.mode):
        expensive = set(args.expensive_seeds if args.expensive_seeds is not None else args.seeds)
        done = set() if args.again else {(r["method"], r["seed"], _lr(r)) for r in load_records(args.records)
                                         if r.get("corpus_scope", "all") == SCOPE}  # runs of an earlier recipe: again
        for seed in args.seeds:  # interleaved: every method of a seed before the next seed
            for method in args.methods:
                if method != "adapter" and seed not in expensive:
                    continue
                lrs = [None] if method != "lora" else args.lora_lrs if seed == 42 else \
                    [lora_choice(shown_runs(load_records(args.records), SCOPE))[0]]
                for lr in lrs:
                    if (method, seed, lr) in done:  # resumable: a recorded run is not run again
                        continue
                    record = append_record(args.records, run_one(method, seed, args.work, args.threads,
                                                                 *([lr] if lr else [])))
                    print(json.dumps(record), flush=True)
    rows = load_records(args.records)
    write_section(args.out or args.work / "towers.md",
                  ["## Query adapter, LoRA query tower, full query tower and chaining on NFCorpus", "",
                   *(table(rows) if rows else ["No recorded runs."]), ""])
    return 0


if __name__ == "__main__":
    sys.exit(main())
