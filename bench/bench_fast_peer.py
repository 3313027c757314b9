"""Query-side training's peer: sentence-transformers fine-tuned on NFCorpus with its documented
hard-negative recipe inside a fixed wall-clock budget (mining + training), scored by textcl's evaluator.

Rows (both: 1 positive per train query, MultipleNegativesRankingLoss, batch 32, lr 2e-5, warmup 10%,
linear, NO_DUPLICATES, fp32, 1 epoch or until the budget is spent, final model):
- st-documented: `mine_hard_negatives(range_min=10, range_max=50, absolute_margin=0,
  sampling_strategy="random", num_negatives=5)`, the settings of its docstring example;
- st-defaults: `mine_hard_negatives` with its defaults (top 3, no margin).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_fast_peer.py --rows st-documented --seeds 42 1 2
    PYTHONPATH=$PWD .venv/bin/python bench/bench_fast_peer.py --quick          # a few minutes: smoke test
    .venv/bin/python bench/bench_fast_peer.py --records bench/records/fast_peer.jsonl --out X.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from bench_fast import RECIPE_VARIANT
from common import NFCORPUS, ROOT, st_training_args, write_section  # sets up sys.path and the offline env
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
from sentence_transformers.sentence_transformer import losses
from sentence_transformers.util import mine_hard_negatives
from transformers import TrainerCallback, set_seed

from textcl.data.io import load_beir
from textcl.eval.retrieval import evaluate_retrieval
from textcl.models import Encoder, cpu_has_bf16, load_model, resolve_model_path
from textcl.types import RetrievalSet

RESULTS = ROOT / "bench" / "results" / "fast_peer"
ROWS: dict[str, dict] = {
    # sentence-transformers' docstring example (minus max_score/relative_margin, plus absolute_margin=0)
    "st-documented": {"range_min": 10, "range_max": 50, "absolute_margin": 0, "sampling_strategy": "random",
                      "num_negatives": 5},
    "st-defaults": {},  # range_min 0, no range_max, no margin, top 3 negatives
}
TRAIN = {"batch_size": 32, "lr": 2e-5, "warmup_ratio": 0.1, "max_seq_length": 256, "epochs": 1}  # warmup: common.py


@dataclass(frozen=True)
class Data:
    pairs: Dataset  # (anchor, positive): one sampled positive per train query
    train_positives: dict[str, set[str]]  # query text -> texts of all its train positives (for counting only)
    corpus: list[str]  # every document's title + " " + text: the mining candidates
    test: RetrievalSet


def load_data(folder: Path, seed: int, quick: bool) -> Data:
    """Train pairs with one positive per query drawn by `random.Random(seed)`, the corpus and the test set.
    Quick mode: the first 128 train queries, the 50 test queries with the fewest judged documents, and a
    corpus of the sampled positives, the judged test documents and the first 300 others (~700)."""
    train, test = load_beir(folder, "train"), load_beir(folder, "test")
    qids = sorted(train.qrels)[:128] if quick else sorted(train.qrels)
    rng = random.Random(seed)
    anchors, chosen, all_pos = [], [], {}
    for qid in qids:
        pos = sorted(d for d in train.positives(qid) if d in train.corpus)
        if not pos:
            continue
        anchors.append(train.queries[qid])
        chosen.append(rng.choice(pos))
        all_pos[train.queries[qid]] = {train.corpus[d].full_text for d in pos}
    corpus = train.corpus
    if quick:
        keep_q = sorted(test.qrels, key=lambda q: (len(test.qrels[q]), q))[:50]
        test = replace(test, queries={q: test.queries[q] for q in keep_q}, qrels={q: test.qrels[q] for q in keep_q})
        keep_d = set(chosen) | {d for q in keep_q for d in test.qrels[q]} | set(sorted(corpus)[:300])
        corpus = {d: corpus[d] for d in sorted(keep_d)}
        test = replace(test, corpus=corpus)
    pairs = Dataset.from_dict({"anchor": anchors, "positive": [corpus[d].full_text for d in chosen]})
    return Data(pairs, all_pos, [d.full_text for d in corpus.values()], test)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}  # cpu: this process's CPU seconds, all threads


class BudgetCallback(TrainerCallback):
    """Stops training once the next step would end past `deadline` (seconds of `clock`), judged by the
    last step's duration, so a run overshoots its budget by less than one step's jitter. The `cpu`
    clock (process CPU time) makes a budget that other jobs on a shared machine do not eat into."""

    def __init__(self, deadline: float, clock=time.perf_counter):
        self.deadline, self.clock = deadline, clock
        self.last = clock()
        self.stopped_by_budget = False

    def on_train_begin(self, args, state, control, **kw):
        self.last = self.clock()

    def on_step_end(self, args, state, control, **kw):
        now = self.clock()
        step_s, self.last = now - self.last, now
        if now + step_s > self.deadline:
            control.should_training_stop = self.stopped_by_budget = True


def ndcg10(model: SentenceTransformer, test: RetrievalSet, cache: Path | None = None) -> float:
    """textcl's exact evaluator, fp32 (what `textcl eval` computes): nDCG@10 x 100."""
    model.eval()  # a model straight out of the Trainer is in train mode, and Encoder would keep dropout on
    enc = Encoder(model, precision="fp32", batch_size=64, cache_dir=cache, show_progress=False)
    return 100 * evaluate_retrieval(enc, test, [10])[f"{test.name}/ndcg@10"]


def false_negatives(mined: Dataset, train_positives: dict[str, set[str]]) -> tuple[int, int]:
    """(negatives that are train positives of their query, all negatives): the false-negative count;
    `train_positives`: query text -> its positives' texts."""
    cols = [c for c in mined.column_names if c.startswith("negative")]
    bad = total = 0
    for row in mined:
        pos = train_positives.get(row["anchor"], set())
        for c in cols:
            total += 1
            bad += row[c] in pos
    return bad, total


def run_row(row: str, seed: int, data: Data, args: argparse.Namespace) -> dict:
    """Mine + train inside args.budget_s (of args.clock) from the row's start, then evaluate (not counted)."""
    clock = CLOCKS[args.clock]
    t0, c0 = time.perf_counter(), clock()
    set_seed(seed)  # mine_hard_negatives samples with Python's `random`
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = TRAIN["max_seq_length"]
    mine_kw = {**ROWS[row], **({"output_format": args.output_format} if row == "st-documented" else {})}
    mined = mine_hard_negatives(data.pairs, model, corpus=data.corpus, batch_size=64, use_faiss=False,
                                verbose=False, **mine_kw)
    t_mined = time.perf_counter()
    budget = BudgetCallback(c0 + args.budget_s, clock)
    loss_cls = losses.CachedMultipleNegativesRankingLoss if args.loss == "cmnrl" else losses.MultipleNegativesRankingLoss
    st_args = st_training_args(args.work / f"{row}-s{seed}", seed, bf16=False, num_train_epochs=TRAIN["epochs"],
                               max_steps=args.max_steps or -1, per_device_train_batch_size=TRAIN["batch_size"],
                               learning_rate=TRAIN["lr"])
    trainer = SentenceTransformerTrainer(model=model, args=st_args,
                                         train_dataset=mined, loss=loss_cls(model), callbacks=[budget])
    planned = len(trainer.get_train_dataloader())
    if clock() < budget.deadline:  # else mining alone spent the budget: no step
        trainer.train()
    else:
        budget.stopped_by_budget = True
    t_trained, used = time.perf_counter(), clock() - c0
    sched = getattr(trainer, "lr_scheduler", None)
    lr_last = sched.get_last_lr()[0] if sched is not None else None
    model.save(str(args.work / f"{row}-s{seed}" / "model"))  # kept (git-ignored) so it can be re-scored
    score = ndcg10(model, data.test)
    t_eval = time.perf_counter()
    fn, n_neg = false_negatives(mined, data.train_positives)
    return {"row": row, "seed": seed, "quick": args.quick, "ndcg@10": round(score, 4),
            "steps": trainer.state.global_step, "steps_per_epoch": planned, "stopped_by_budget": budget.stopped_by_budget,
            "lr_at_stop": lr_last, "mining_s": round(t_mined - t0, 1), "training_s": round(t_trained - t_mined, 1),
            "eval_s": round(t_eval - t_trained, 1), "budget_s": args.budget_s, "loss": args.loss,
            "clock": args.clock, "budget_used_s": round(used, 1),
            "mining": {**mine_kw, "pairs": len(data.pairs), "rows": len(mined), "negatives": n_neg,
                       "negatives_that_are_train_positives": fn},
            "train": TRAIN, "precision": "fp32", "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "test_queries": len(data.test.qrels), "corpus": len(data.corpus)}


def base_ndcg(args: argparse.Namespace) -> float:
    """The untrained model's test nDCG@10 (embeddings cached next to the results: cheap on a rerun)."""
    t = time.perf_counter()
    base = ndcg10(load_model(args.model), load_data(args.data, 0, args.quick).test, cache=args.results.parent / "cache")
    print(f"base nDCG@10 {base:.2f} ({time.perf_counter() - t:.0f} s)", flush=True)
    return round(base, 4)


def machine() -> str:
    try:
        name = next(x.split(":", 1)[1].strip() for x in subprocess.run(["lscpu"], capture_output=True, text=True)
                    .stdout.splitlines() if x.startswith("Model name"))
    except (OSError, StopIteration):
        name = "unknown CPU"
    return f"{name}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def _points(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def summary(rows: list[dict]) -> list[str]:
    """Markdown: one line per (row, seed) and mean ± std per row."""
    lines = ["| row | seed | test nDCG@10 | base | steps (of epoch) | mining s | training s | eval s | "
             "mined negatives that are train positives |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["mining"]
        lines.append(f"| {r['row']} | {r['seed']} | {r['ndcg@10']:.2f} | {_points(r.get('base_ndcg@10'))} | "
                     f"{r['steps']} ({r['steps_per_epoch']}) | {r['mining_s']:.0f} | {r['training_s']:.0f} | "
                     f"{r['eval_s']:.0f} | {m['negatives_that_are_train_positives']} of {m['negatives']} |")
    lines += ["", "| row | seeds | test nDCG@10 mean ± std |", "|---|---|---|"]
    for name in dict.fromkeys(r["row"] for r in rows):
        vals = [r["ndcg@10"] for r in rows if r["row"] == name]
        spread = f" ± {statistics.stdev(vals):.2f}" if len(vals) > 1 else " (1 seed: a hint, not a result)"
        lines.append(f"| {name} | {','.join(str(r['seed']) for r in rows if r['row'] == name)} | "
                     f"{statistics.mean(vals):.2f}{spread} |")
    return lines


def section(rows: list[dict], meta: dict, source: str, textcl: list[dict] = (), other_budgets: list[dict] = ()
            ) -> list[str]:
    """The BENCHMARKS.md section, pure: `rows` = load_rows' records, `meta` = the .meta.json (title and prose, no
    figures), `source` = the records' path as printed; `textcl` = bench_fast.py's records (the recipe's timing
    runs and seeds, compared here), `other_budgets` = peer records at another budget (a hint, not tabled above)."""
    lines = [f"## {meta.get('title', 'Query-side training: peer (sentence-transformers)')}", ""]
    lines += [*meta["intro"], ""] if meta.get("intro") else []
    if not rows:
        return [*lines, f"No recorded runs in {source}.", ""]
    machines = sorted({r["machine"] for r in rows})
    loads = [x for r in rows for x in r["load_avg_1m"]]
    budgets = ", ".join(sorted({f"{r['budget_s']:.0f} {r.get('clock', 'wall')} s" for r in rows}))
    data = sorted({(r["test_queries"], r["corpus"], r["mining"]["pairs"]) for r in rows})
    lines += [f"Data (from the records): {'; '.join(f'{q} test queries, {c} documents, {p} train pairs' for q, c, p in data)}. "
              f"Training settings: {', '.join(f'{k} {v}' for k, v in rows[0]['train'].items())}.", "",
              f"Machine: {'; '.join(machines)}; shared with other jobs (1-minute load average "
              f"{min(loads):.1f}-{max(loads):.1f} at the start and end of the runs). Budget: "
              f"{budgets} of mining + training per run; evaluation is outside it.", "", *summary(rows), "",
              "Commands: " + "; ".join(f"`{c}`" for c in dict.fromkeys(r["command"] for r in rows))
              + f". Results per run: `{source}`.", "", *_findings(rows, textcl, other_budgets),
              *meta.get("note", []), ""]
    return lines


def _ms(values: list[float]) -> str:
    return (f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)} seeds)" if len(values) > 1
            else f"{values[0]:.2f} (1 seed)")


def _span(values: list, fmt: str = "") -> str:
    """'a' when every value formats alike, else 'min-max'."""
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return lo if lo == hi else f"{lo}-{hi}"


def _findings(rows: list[dict], textcl: list[dict], other_budgets: list[dict]) -> list[str]:
    """Bullets computed from the records: how far the peer got, its mined data, and textcl beside it."""
    out = []
    for name in dict.fromkeys(r["row"] for r in rows):
        rs = [r for r in rows if r["row"] == name]
        m = [r["mining"] for r in rs]
        share = [100 * x["negatives_that_are_train_positives"] / x["negatives"] for x in m]
        lrs = [r["lr_at_stop"] for r in rs if r.get("lr_at_stop") is not None]
        base = [r["base_ndcg@10"] for r in rs if r.get("base_ndcg@10") is not None]
        mean = statistics.mean(r["ndcg@10"] for r in rs)
        vs_base = (f"; {'below' if mean < base[0] else 'above'} the base model ({base[0]:.2f})" if base else "")
        out.append(f"- **{name}**: test {_ms([r['ndcg@10'] for r in rs])}{vs_base}; "
                   f"{_span([r['steps'] for r in rs])} steps of a {_span([r['steps_per_epoch'] for r in rs])}-step "
                   "epoch" + (f" (lr at stop {_span(lrs, '.2g')}, the schedule planned over the epoch)" if lrs else "")
                   + f"; {_span([x['rows'] for x in m])} mined rows from {m[0]['pairs']} pairs, "
                   f"{_span(share, '.1f')}% of the mined negatives are other train positives of their query.")
    timed = [r for r in textcl if r.get("cpu_s") is not None]
    if timed:
        out.append("- **textcl's whole `textcl run` of the query-side recipe** (the section above's idle timing runs): "
                   + "; ".join(f"{r.get('variant', 'sample')}, seed {r['seed']}: {r['cpu_s']:.0f} CPU-seconds, "
                               f"{r['wall_s']:.0f} s wall" for r in timed) + ".")
    recipe = {}
    for r in textcl:
        if r.get("variant") == RECIPE_VARIANT:
            recipe.setdefault(r["seed"], r["nfcorpus_after"])  # the first record per seed, as the section above
    peer = [r["ndcg@10"] for r in rows if r["row"] == "st-documented"]
    if len(recipe) > 1 and len(peer) > 1:
        ours = [100 * v for v in recipe.values()]
        out.append(f"- **The recipe ({RECIPE_VARIANT}) vs st-documented**: {_ms(ours)} vs {_ms(peer)}: difference of "
                   f"means {statistics.mean(ours) - statistics.mean(peer):+.2f} points (stds above). The two budgets "
                   "were not measured alike (threads, load, evaluation counted for textcl, not for the peer), and the "
                   "peer is untuned (issue 29, item 2).")
    for r in other_budgets:
        out.append(f"- **At {r['budget_s']:.0f} {r.get('clock', 'wall')}-seconds** (`{r['command']}`): {r['row']} seed "
                   f"{r['seed']} {r['ndcg@10']:.2f} ({r['steps']} steps of {r['steps_per_epoch']}); one seed: a hint, "
                   "not in the table above, which keeps one budget.")
    return out


def load_rows(path: Path, quick: bool | None = None) -> list[dict]:
    """The last record of each (row, seed[, mode]) in a results file."""
    rows: dict[tuple, dict] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        r = json.loads(line)
        if quick is None or r["quick"] == quick:
            rows[(r["row"], r["seed"], r["quick"])] = r
    return list(rows.values())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    p.add_argument("--budget-s", type=float, default=None, help="mining + training seconds per run (900; quick 60)")
    p.add_argument("--clock", choices=list(CLOCKS), default="wall",
                   help="what the budget counts: wall seconds, or this process's CPU seconds (robust to other jobs)")
    p.add_argument("--quick", action="store_true", help="60 s budget, 50 test queries, small corpus")
    p.add_argument("--mode", choices=["quick", "full"], default=None, help="bench/run_all.py's flag (quick = --quick)")
    p.add_argument("--data", type=Path, default=NFCORPUS)
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--loss", choices=["mnrl", "cmnrl"], default="mnrl")
    p.add_argument("--output-format", choices=["triplet", "n-tuple"], default="triplet",
                   help="st-documented's mined rows: triplets as its docstring example, or one 5-negative row per query")
    p.add_argument("--max-steps", type=int, default=None, help="cap on steps (tests); default one epoch")
    p.add_argument("--base", choices=["first", "last", "skip"], default="first",
                   help="score the untrained model before the runs, after them (a long run records its rows first) or not")
    p.add_argument("--results", type=Path, default=RESULTS / "results.jsonl")
    p.add_argument("--records", type=Path, default=None, help="only write the section from this results file")
    p.add_argument("--out", type=Path, default=None, help="markdown section to write (default: print only)")
    args = p.parse_args()
    args.quick = args.quick or args.mode == "quick"
    if args.records:
        meta_file = args.records.with_suffix(".meta.json")
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        source = args.records.relative_to(ROOT) if args.records.is_relative_to(ROOT) else args.records
        write_section(args.out or RESULTS / "fast_peer.md", section(load_rows(args.records, quick=False), meta,
                                                                    str(source)))
        return 0
    args.budget_s = args.budget_s or (60.0 if args.quick else 900.0)
    args.model = resolve_model_path(args.model)
    args.work = args.results.parent / "work"
    # bf16 excluded: without AMX bf16 runs slower than fp32 on CPU (bench/bench_encode.py measures it).
    print(f"cpu_has_bf16 (AMX) = {cpu_has_bf16()}; training and evaluation in fp32", flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    command = "python bench/bench_fast_peer.py " + " ".join(sys.argv[1:])
    base = base_ndcg(args) if args.base == "first" else None
    for seed in args.seeds:
        data = load_data(args.data, seed, args.quick)
        for row in args.rows:
            load_before = os.getloadavg()[0]
            rec = {**run_row(row, seed, data, args), "base_ndcg@10": base, "machine": machine(),
                   "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)], "command": command,
                   "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
            with open(args.results, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            print(json.dumps(rec), flush=True)
    if args.base == "last":  # rewrite this run's records with the base score
        base = base_ndcg(args)
        rows = [json.loads(x) for x in args.results.read_text().splitlines()]
        rows = [{**r, "base_ndcg@10": base} if r["command"] == command and r["base_ndcg@10"] is None else r
                for r in rows]
        args.results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = [r for r in load_rows(args.results, args.quick) if r["row"] in args.rows and r["seed"] in args.seeds]
    lines = summary(done)
    if args.out:
        write_section(args.out, lines)
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
