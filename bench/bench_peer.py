"""textcl's query-side recipe against sentence-transformers tuned like it, in one script (issue 29, item 3).

The peer: `SentenceTransformerTrainer` + MultipleNegativesRankingLoss on NFCorpus train, every qrels positive
its own row, hard negatives from `mine_hard_negatives` with its docstring's settings, batch 32, warmup 10%
then linear decay planned over the steps the budget holds, and dev-based checkpoint selection
(`load_best_model_at_end` with an `InformationRetrievalEvaluator` on NFCorpus dev, 3 evaluations a run).
Its learning rate is chosen on dev from {2e-5, 5e-5, 1e-4, 2e-4} (seed 42), as textcl's recipe was.

The budget rule: one `textcl run recipes/nfcorpus-fast.yaml` (index off, an empty embedding cache, so it pays
for embedding the corpus) is timed first; its whole wall time, its evaluations included, is the peer's budget
for mining + training, the peer's evaluations excluded (generous to the peer). The peer's step count is that
budget less its mining time over its step time, measured on this machine before the search. Both tools get
the same threads (all cores) and precision (bf16 where the CPU has AMX, else fp32). Test nDCG@10 of every
model is scored by one evaluator: textcl's exact evaluator in fp32 (what `textcl eval --precision fp32` gives).

Order: textcl seed 42, the peer's search (seed 42), then textcl and the chosen peer interleaved for seeds 1
and 2. Records (one line per run, resumable: a finished run is skipped) go to bench/records/peer.jsonl.

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=1073741824 \
        PYTHONPATH=$PWD .venv/bin/python bench/bench_peer.py      # about 80 min on 2 idle cores

The glibc settings keep freed memory in the process: without them a peer training step (32 triplets of up to 256
tokens) spent half its time in the kernel faulting pages back in here (bf16 step 12.2 s -> 7.1 s with them).
They apply to the peer's runs and to textcl's later seeds alike; the budget run (textcl, seed 42) ran without.
    PYTHONPATH=$PWD .venv/bin/python bench/bench_peer.py --split new-docs --seeds 1 2 3
    PYTHONPATH=$PWD .venv/bin/python bench/bench_peer.py --split budget-50 --seeds 1

`--split` trains the chosen peer (lr and step count from the search's records, whatever the split's size) on a
bench_generalisation split (its train and dev qrels) and appends the run to bench/records/generalisation.jsonl as method `peer`, scored on
the split's test qrels with the whole corpus, as that bench scores textcl's runs. Test scores in peer.jsonl are
nDCG@10 x100; dev scores (and every score in generalisation.jsonl) are fractions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_fast_peer import false_negatives, ndcg10  # first: sets up sys.path and the offline env
from common import (
    NFCORPUS,
    ROOT,
    append_record,
    provenance,
    read_jsonl,
    recipe_scope,
    run_corpus_scope,
    scope_note,
)
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
from sentence_transformers.sentence_transformer import losses
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.util import mine_hard_negatives
from transformers import TrainerCallback, set_seed

from textcl.data.io import load_beir
from textcl.models import cpu_has_bf16, resolve_model_path

RECORDS = ROOT / "bench" / "records" / "peer.jsonl"
WORK = ROOT / "bench" / "results" / "peer"
RECIPE = ROOT / "recipes" / "nfcorpus-fast.yaml"
SCOPE = recipe_scope(RECIPE)  # the train.corpus_scope the recipe sets today
LRS = (2e-5, 5e-5, 1e-4, 2e-4)
SEARCH_SEED, SEEDS = 42, (42, 1, 2)
# mine_hard_negatives' docstring example (output_format left at its default, "triplet")
MINING = {"range_min": 10, "range_max": 50, "max_score": 0.8, "relative_margin": 0.05, "num_negatives": 5,
          "sampling_strategy": "random"}
TRAIN = {"batch_size": 32, "warmup_ratio": 0.1, "scheduler": "linear", "max_seq_length": 256, "evaluations": 3}
DEV_NAME = "nfcorpus-dev"


def train_pairs(folder: Path) -> Dataset:
    """(anchor, positive): every train qrel with a positive score, one row each (ST's docs for multi-positive data)."""
    train = load_beir(folder, "train")
    anchors, positives = [], []
    for qid in sorted(train.qrels):
        for did in sorted(d for d in train.positives(qid) if d in train.corpus):
            anchors.append(train.queries[qid])
            positives.append(train.corpus[did].full_text)
    return Dataset.from_dict({"anchor": anchors, "positive": positives})


class TimedIR(InformationRetrievalEvaluator):
    """sentence-transformers' retrieval evaluator that adds up the seconds it spends (the peer's evaluations are
    outside its budget), under bf16 autocast where training is (its encoding is not what is compared)."""

    def __init__(self, *args, bf16: bool = False, **kw):
        super().__init__(*args, **kw)
        self.bf16, self.seconds = bf16, 0.0

    def __call__(self, model, *args, **kw):
        import torch
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = super().__call__(model, *args, **kw)
        self.seconds += time.perf_counter() - t
        return out


def dev_evaluator(folder: Path, bf16: bool) -> TimedIR:
    dev = load_beir(folder, "dev")
    return TimedIR(queries={q: dev.queries[q] for q in dev.qrels},
                   corpus={d: doc.full_text for d, doc in dev.corpus.items()},
                   relevant_docs={q: set(dev.positives(q)) for q in dev.qrels}, name=DEV_NAME, ndcg_at_k=[10],
                   mrr_at_k=[10], accuracy_at_k=[1], precision_recall_at_k=[10], map_at_k=[100], batch_size=64,
                   show_progress_bar=False, bf16=bf16)


class StepClock(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter())


def st_args(out: Path, seed: int, lr: float, steps: int, bf16: bool, evaluate: bool,
            batch_size: int = TRAIN["batch_size"]):
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    every = max(1, steps // TRAIN["evaluations"])
    kw = ({"eval_strategy": "steps", "eval_steps": every, "save_strategy": "steps", "save_steps": every,
           "save_only_model": True, "load_best_model_at_end": True,
           "metric_for_best_model": f"eval_{DEV_NAME}_cosine_ndcg@10", "greater_is_better": True}
          if evaluate else {"save_strategy": "no"})
    return SentenceTransformerTrainingArguments(
        output_dir=str(out), seed=seed, max_steps=steps, per_device_train_batch_size=batch_size,
        learning_rate=lr, warmup_steps=TRAIN["warmup_ratio"], lr_scheduler_type=TRAIN["scheduler"], bf16=bf16,
        use_cpu=True, report_to="none", logging_steps=10_000, disable_tqdm=True,
        batch_sampler=BatchSamplers.NO_DUPLICATES, **kw)


def new_model(model_path: str) -> SentenceTransformer:
    model = SentenceTransformer(model_path, device="cpu")
    model.max_seq_length = TRAIN["max_seq_length"]
    return model


def mine(pairs: Dataset, model_path: str, corpus: list[str], seed: int) -> tuple[Dataset, float]:
    set_seed(seed)  # mine_hard_negatives samples with Python's `random`
    t = time.perf_counter()
    mined = mine_hard_negatives(pairs, new_model(model_path), corpus=corpus, batch_size=64, use_faiss=False,
                                verbose=False, **MINING)
    return mined, time.perf_counter() - t


def step_seconds(mined: Dataset, model_path: str, bf16: bool, work: Path) -> float:
    """The median wall seconds of one training step (steps 3-8 of a throwaway run)."""
    clock, model = StepClock(), new_model(model_path)
    trainer = SentenceTransformerTrainer(model=model, args=st_args(work, 0, 1e-5, 8, bf16, False),
                                         train_dataset=mined, loss=losses.MultipleNegativesRankingLoss(model),
                                         callbacks=[clock])
    trainer.train()
    shutil.rmtree(work, ignore_errors=True)
    return statistics.median(b - a for a, b in zip(clock.times[2:], clock.times[3:]))


def train_peer(mined: Dataset, model_path: str, lr: float, seed: int, steps: int, bf16: bool, data: Path,
               work: Path, batch_size: int = TRAIN["batch_size"]) -> tuple[SentenceTransformer, dict]:
    model = new_model(model_path)
    timed = dev_evaluator(data, bf16)
    trainer = SentenceTransformerTrainer(model=model, args=st_args(work, seed, lr, steps, bf16, True, batch_size),
                                         train_dataset=mined, loss=losses.MultipleNegativesRankingLoss(model),
                                         evaluator=timed)
    t = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t
    key = f"eval_{DEV_NAME}_cosine_ndcg@10"
    dev = [(h["step"], h[key]) for h in trainer.state.log_history if key in h]
    best = trainer.state.best_model_checkpoint
    shutil.rmtree(work, ignore_errors=True)  # this run's own checkpoints (the kept weights are in `model`)
    return model, {"steps": trainer.state.global_step, "dev_by_step": dev, "best_checkpoint": Path(best).name
                   if best else None, "dev_best": max(v for _, v in dev), "train_s": round(wall - timed.seconds, 1),
                   "dev_eval_s": round(timed.seconds, 1)}


def run_textcl(seed: int, work: Path) -> dict:
    """One `textcl run` of the recipe, index off, in a new folder with an empty embedding cache; its wall time."""
    out = work / f"textcl-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    cmd = [str(Path(sys.executable).parent / "textcl"), "run", str(RECIPE), "--set", f"seed={seed}",
           "--set", f"output_dir={out}", "--set", f"train.output_dir={out / 'model'}",
           "--set", f"model.cache_dir={out / 'cache'}", "--set", "index.enabled=false"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t
    summary = json.loads((out / "summary.json").read_text())
    dev = ((summary.get("train") or {}).get("dev_after") or {}).get("dev") or {}
    return {"wall_s": round(wall, 1), "out": str(out), "stages_s": {k: v.get("seconds") for k, v in
                                                                    summary.get("stages", {}).items()
                                                                    if isinstance(v, dict)},
            "test_own_eval": summary["after"].get("nfcorpus/ndcg@10"), "dev_best": dev.get("nfcorpus/ndcg@10"),
            "corpus_scope": run_corpus_scope(out)}


def done(kind: str, seed: int, lr: float | None = None) -> dict | None:
    """The first record of (kind, seed, lr), as the tables read it; None when that run is not recorded (a textcl
    run of the recipe before it set today's corpus scope counts as not recorded)."""
    r = _first(read_jsonl(RECORDS)).get((kind, seed, lr))
    return None if r is not None and kind == "textcl" and r.get("corpus_scope", "all") != SCOPE else r


def record(row: dict, load_before: float) -> dict:
    rec = append_record(RECORDS, {**row, "load_before": round(load_before, 2),
                                  "load_after": round(os.getloadavg()[0], 2)})
    print(json.dumps({k: v for k, v in rec.items() if k not in ("dev_by_step",)}), flush=True)
    return rec


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--data", type=Path, default=NFCORPUS)
    p.add_argument("--split", choices=["new-docs", "budget-50", "budget-150", "budget-500"], default=None,
                   help="run the chosen peer on this bench_generalisation split (records in generalisation.jsonl)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="--split's seeds")
    args = p.parse_args()
    if args.split:
        return run_split(args)
    model_path = resolve_model_path(args.model)
    bf16 = cpu_has_bf16()
    import torch
    print(f"AMX bf16: {bf16}; threads {torch.get_num_threads()}", flush=True)
    test = load_beir(args.data, "test")
    base_cache = WORK / "base-cache"
    if not done("base", 0):
        load = os.getloadavg()[0]
        record({"kind": "base", "seed": 0, "test": ndcg10(new_model(model_path), test, cache=base_cache)}, load)

    def textcl(seed: int) -> dict:
        if (r := done("textcl", seed)) is None:
            load = os.getloadavg()[0]
            row = run_textcl(seed, WORK)
            router = SentenceTransformer(str(Path(row["out"]) / "model"), device="cpu")
            r = record({"kind": "textcl", "seed": seed, **row, "test": ndcg10(router, test, cache=base_cache),
                        "precision": "bf16" if bf16 else "fp32"}, load)
        return r

    budget = textcl(SEARCH_SEED)["wall_s"]
    pairs = train_pairs(args.data)
    corpus = [d.full_text for d in load_beir(args.data, "train").corpus.values()]
    mined_by_seed: dict[int, tuple[Dataset, float]] = {}

    def mined(seed: int) -> tuple[Dataset, float]:
        if seed not in mined_by_seed:
            mined_by_seed[seed] = mine(pairs, model_path, corpus, seed)
        return mined_by_seed[seed]

    if (probe := done("probe", SEARCH_SEED)) is None:
        load = os.getloadavg()[0]
        data, mining_s = mined(SEARCH_SEED)
        step_s = step_seconds(data, model_path, bf16, WORK / "probe")
        steps = max(TRAIN["evaluations"], math.floor((budget - mining_s) / step_s) // TRAIN["evaluations"]
                    * TRAIN["evaluations"])
        positives: dict[str, set[str]] = {}
        for a, pos in zip(pairs["anchor"], pairs["positive"]):
            positives.setdefault(a, set()).add(pos)
        fn, n_neg = false_negatives(data, positives)
        probe = record({"kind": "probe", "seed": SEARCH_SEED, "budget_s": budget, "mining_s": round(mining_s, 1),
                        "step_s": round(step_s, 3), "steps": steps, "pairs": len(pairs), "rows": len(data),
                        "negatives": n_neg, "negatives_that_are_train_positives": fn, "mining": MINING,
                        "train": TRAIN, "precision": "bf16" if bf16 else "fp32",
                        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}}, load)

    def peer(seed: int, lr: float) -> dict:
        if (r := done("peer", seed, lr)) is None:
            load = os.getloadavg()[0]
            data, mining_s = mined(seed)
            model, row = train_peer(data, model_path, lr, seed, probe["steps"], bf16, args.data,
                                    WORK / f"peer-s{seed}-lr{lr:g}")
            r = record({"kind": "peer", "seed": seed, "lr": lr, **row, "mining_s": round(mining_s, 1),
                        "budget_s": budget, "test": ndcg10(model, test)}, load)
        return r

    chosen = best_on_dev([peer(SEARCH_SEED, lr) for lr in LRS])
    for seed in SEEDS[1:]:
        textcl(seed)
        peer(seed, chosen)
    print("\n".join(table(read_jsonl(RECORDS))))
    return 0


def run_split(args: argparse.Namespace) -> int:
    """The chosen peer on a generalisation split, one record per seed in generalisation.jsonl (method `peer`)."""
    import bench_generalisation as gen
    sbs, probe = side_by_side(read_jsonl(RECORDS)), _first(read_jsonl(RECORDS)).get(("probe", SEARCH_SEED, None))
    if sbs is None or probe is None:
        raise SystemExit(f"{RECORDS} has no complete search: run bench_peer.py without --split first")
    model_path, bf16 = resolve_model_path(args.model), cpu_has_bf16()
    work = ROOT / "out" / "generalisation"
    for seed in args.seeds:
        if any(r["method"] == "peer" and r["split"] == args.split and r["seed"] == seed
               for r in read_jsonl(gen.RECORDS)):
            print(f"skip peer {args.split} seed {seed}: recorded", flush=True)
            continue
        row = peer_on_split(gen.split_folder(args.split, seed, work), seed, model_path, sbs["lr"], probe["steps"],
                            bf16, WORK / f"{args.split}-s{seed}")
        print(json.dumps(append_record(gen.RECORDS, {"split": args.split, **row})), flush=True)
    return 0


def peer_on_split(leaf: Path, seed: int, model_path: str, lr: float, steps: int, bf16: bool, work: Path,
                  mine_fn=mine, batch_size: int = TRAIN["batch_size"]) -> dict:
    """Mine and train the peer on `leaf`'s train and dev qrels; its and the base model's test and dev nDCG@10
    (fractions) on `leaf`'s qrels with the whole corpus, as bench_generalisation scores textcl's runs."""
    load = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    pairs = train_pairs(leaf)
    data, mining_s = mine_fn(pairs, model_path, [d.full_text for d in load_beir(leaf, "train").corpus.values()], seed)
    model, row = train_peer(data, model_path, lr, seed, steps, bf16, leaf, work, batch_size)
    wall = time.perf_counter() - t0
    test, dev = load_beir(leaf, "test"), load_beir(leaf, "dev")
    base = new_model(model_path)
    scores = {"base_test": ndcg10(base, test, cache=work.parent / "base-cache") / 100,
              "base_dev": ndcg10(base, dev, cache=work.parent / "base-cache") / 100,
              "tuned_test": ndcg10(model, test) / 100, "tuned_dev": ndcg10(model, dev) / 100}
    return {"method": "peer", "seed": seed, **scores, "lr": lr, "steps": row["steps"],
            "best_checkpoint": row["best_checkpoint"], "mining_s": round(mining_s, 1), "train_s": row["train_s"],
            "dev_eval_s": row["dev_eval_s"], "stages_total_s": round(mining_s + row["train_s"], 1),
            "wall_s": round(wall, 1), "load_before": load, "load_after": [round(x, 2) for x in os.getloadavg()],
            "train_queries": len(set(pairs["anchor"])), "note": ""}


def _ms(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def _first(rows: list[dict]) -> dict[tuple, dict]:
    """The first record per (kind, seed, lr); for textcl's runs the first trained with the corpus scope its recipe
    sets today when there is one (older runs stay in the record file)."""
    first: dict[tuple, dict] = {}
    for r in rows:
        key = (r["kind"], r["seed"], r.get("lr"))
        if key not in first or (r["kind"] == "textcl" and r.get("corpus_scope", "all") == SCOPE
                                and first[key].get("corpus_scope", "all") != SCOPE):
            first[key] = r
    return first


def _base_test(first: dict[tuple, dict]) -> float | None:
    """The base model's test nDCG@10 (points) from the records `_first` keeps."""
    return next((r["test"] for (k, _, _), r in first.items() if k == "base"), None)


def best_on_dev(search: list[dict]) -> float:
    """The peer lr whose kept checkpoint scored best on dev in the search."""
    return max(search, key=lambda r: r["dev_best"])["lr"]


def side_by_side(rows: list[dict]) -> dict | None:
    """The chosen peer lr (best dev of the seed-42 search) and, per seed both tools ran, the test scores x100 and
    textcl - peer; None until the search is complete."""
    first = _first(rows)
    search = [r for (k, s, _), r in first.items() if k == "peer" and s == SEARCH_SEED]
    if len(search) < len(LRS):
        return None
    chosen = best_on_dev(search)
    textcl = {s: r for (k, s, _), r in first.items() if k == "textcl"}
    peer = {s: r for (k, s, lr), r in first.items() if k == "peer" and lr == chosen}
    seeds = sorted(set(textcl) & set(peer), key=SEEDS.index)
    ours, theirs = [textcl[s]["test"] for s in seeds], [peer[s]["test"] for s in seeds]  # points already
    return {"lr": chosen, "seeds": seeds, "base": _base_test(first), "textcl": ours, "peer": theirs, "diff": [a - b for a, b in zip(ours, theirs)],
            "textcl_rows": [textcl[s] for s in seeds], "peer_rows": [peer[s] for s in seeds]}


def table(rows: list[dict]) -> list[str]:
    """The BENCHMARKS.md section from the records alone: the peer's search on dev, then both tools per seed."""
    first = _first(rows)
    base = _base_test(first)
    probe = next((r for (k, _, _), r in first.items() if k == "probe"), None)
    textcl = {s: r for (k, s, _), r in first.items() if k == "textcl"}
    peers = [r for (k, _, _), r in first.items() if k == "peer"]
    lines = ["## textcl vs sentence-transformers tuned on dev (`bench/bench_peer.py`)", ""]
    if probe is None or SEARCH_SEED not in textcl:
        return [*lines, "No complete search recorded yet.", ""]
    lines += [f"NFCorpus test nDCG@10 x100, every model scored by textcl's exact evaluator in fp32; base "
              f"all-MiniLM-L6-v2 {base:.2f}. The peer's budget is textcl's whole run at seed {SEARCH_SEED} "
              f"({probe['budget_s']:.0f} s wall, its evaluations included) for mining + training, its own dev "
              f"evaluations excluded: {probe['steps']} steps of {probe['step_s']:.2f} s after {probe['mining_s']:.0f} s "
              f"of mining ({probe['pairs']} train pairs, one row each -> {probe['rows']} triplets; "
              f"{probe['negatives_that_are_train_positives']} of {probe['negatives']} mined negatives are train "
              f"positives of their query). Precision {probe['precision']} for both tools' training"
              + (f"; the peer's process ran with glibc {', '.join(f'{k}={v}' for k, v in sorted(probe['malloc_env'].items()))}"
                 if probe.get("malloc_env") else "") + ". Dev columns: textcl's are its own graded dev nDCG@10 "
              "(what its selection saw), the peer's are sentence-transformers' `InformationRetrievalEvaluator` "
              "(binary relevance: what `load_best_model_at_end` saw); compare test columns only.", "",
              "Learning-rate search (seed 42, chosen on dev):", "",
              "| peer lr | dev nDCG@10 by step | kept (best dev) | test nDCG@10 | training s (+ mining: the budget used) | "
              "dev evaluation s (outside the budget) |",
              "|---|---|---|---|---|---|"]
    search = [r for r in peers if r["seed"] == SEARCH_SEED]
    for r in sorted(search, key=lambda r: r["lr"]):
        steps = ", ".join(f"{s}: {100 * v:.2f}" for s, v in r["dev_by_step"])
        lines.append(f"| {r['lr']:g} | {steps} | {100 * r['dev_best']:.2f} | {r['test']:.2f} | "
                     f"{r['train_s']:.0f} | {r['dev_eval_s']:.0f} |")
    if len(search) < len(LRS):
        return [*lines, "", f"Search incomplete: {len(search)} of {len(LRS)} learning rates recorded.", ""]
    sbs = side_by_side(rows)
    lines += ["", f"Side by side (peer at lr {sbs['lr']:g}; textcl's `recipes/nfcorpus-fast.yaml` unchanged, its "
              "choices made on dev in earlier benches):", "",
              "| seed | textcl test | textcl dev | textcl wall s | peer test | peer dev (kept) | textcl - peer |",
              "|---|---|---|---|---|---|---|"]
    for s, a, b, d, t, q in zip(sbs["seeds"], sbs["textcl"], sbs["peer"], sbs["diff"], sbs["textcl_rows"],
                                sbs["peer_rows"]):
        lines.append(f"| {s} | {a:.2f} | {100 * t['dev_best']:.2f} | {t['wall_s']:.0f} | {b:.2f} | "
                     f"{100 * q['dev_best']:.2f} | {d:+.2f} |")
    if len(sbs["seeds"]) > 1:
        lines += ["", f"Mean over {len(sbs['seeds'])} seeds: textcl {_ms(sbs['textcl'])}, peer {_ms(sbs['peer'])}; "
                  f"textcl - peer {_ms(sbs['diff'])} (per-seed differences; smallest {min(sbs['diff']):+.2f})."]
    return [*lines, *scope_note(sbs["textcl_rows"], "recipes/nfcorpus-fast.yaml"), "", provenance(rows), ""]


if __name__ == "__main__":
    sys.exit(main())
