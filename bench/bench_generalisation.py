"""Generalisation benchmarks the recipe was never tuned on (issue 29): NFCorpus test queries scored on
documents no train/dev qrel names ("new documents"), and smaller label budgets (50 / 150 / 500 / all train
queries). Per (method, split, seed): one `textcl run` of the method's recipe, unchanged except that
training data and the in-domain evaluation set point at the split; base and tuned test nDCG@10 and the dev
score come from the run's summary.json. One record per run in bench/records/generalisation.jsonl.

    .venv/bin/python bench/bench_generalisation.py --splits new-docs --seeds 1 2 3 --threads 1   # ~10+ min per run
    .venv/bin/python bench/bench_generalisation.py --splits budget-50 budget-150 --method adapter
    .venv/bin/python bench/bench_generalisation.py --pool     # new-docs runs re-scored on the new documents only
    .venv/bin/python bench/bench_generalisation.py --judged   # ... with relevant seen documents left out of rankings
    .venv/bin/python bench/bench_generalisation.py --whole    # ... on the unchanged test set, every document
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
import yaml
from common import (  # sets up sys.path and env (splits needs neither)
    ROOT,
    append_record,
    read_jsonl,
    recipe_scope,
    run_corpus_scope,
)

RECORDS = ROOT / "bench" / "records" / "generalisation.jsonl"
METHODS = {"recipe": ROOT / "recipes" / "nfcorpus-fast.yaml", "adapter": ROOT / "recipes" / "nfcorpus-adapter.yaml"}
SCOPES = {m: recipe_scope(p) for m, p in METHODS.items()}  # train.corpus_scope the recipes set today
METRIC = "nfcorpus/ndcg@10"
OOD = "stsbenchmark/spearman_cosine"
BUDGETS = {"budget-50": 50, "budget-150": 150, "budget-500": 500, "budget-all": None}
SPLITS = ("new-docs", "new-docs-later", "new-docs-heldout", "new-docs-labelled", *BUDGETS)
HELDOUT = "heldout/ndcg@10"
# new-docs-heldout: the recipe's forgetting budget (train.max_ood_drop) also watches the held-out documents' dev
# qrels, over finer WiSE-FT mixes; the starting model (a = 0) is always a candidate
HELDOUT_SETS = ["train.interpolate_base=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]"]
PRECISION = "bf16"  # --judged encodes as the runs' evaluation did (their `auto` was bf16 there); checked below


def scope_of(method: str, extra: tuple[str, ...] = ()) -> str:
    """The train.corpus_scope a run of `method`'s recipe with the `--set`s `extra` trains with."""
    for e in extra:
        if e.startswith("train.corpus_scope="):
            return e.split("=", 1)[1]
    return SCOPES[method]


def corpus_scope(r: dict) -> str | None:
    """A record's train.corpus_scope (None for the peer): recorded since the recipes set it, else read off its
    command or split (records from before: `all` unless a `--set` or the `new-docs-labelled` split said so)."""
    if r["method"] not in METHODS:
        return None
    if "corpus_scope" in r:
        return r["corpus_scope"]
    return "labelled" if "train.corpus_scope=labelled" in r.get("run_command", "") \
        or r["split"].startswith("new-docs-labelled") else "all"


def split_folder(split: str, seed: int, work: Path) -> Path:
    """The BEIR leaf folder of `split` for `seed` (a budget's sample depends on the seed), written if missing."""
    source, out = splits.SOURCE, work / "splits"
    if split in ("new-docs", "new-docs-later", "new-docs-labelled"):  # one split; -later trains against the seen
        # documents only, -labelled against those a training qrel names (train.corpus_scope: labelled)
        name, make = "new-docs", lambda o: splits.new_docs_split(source, o)
    elif split == "new-docs-heldout":
        name, make = split, lambda o: splits.heldout_split(source, o)
    else:
        total = len(splits.train_queries(source))
        n = BUDGETS[split] or total
        name, make = splits.budget_name(n, seed, total), lambda o: splits.budget_split(source, o, n, seed)
    if not (out / name / "split.json").is_file():
        make(out / name)
    return out / name / "nfcorpus"


def run_command(method: str, leaf: Path, out: Path, seed: int, cache: Path, corpus: Path | None = None,
                extra: tuple[str, ...] = ()) -> list[str]:
    """`textcl run` of the method's recipe: training data and in-domain eval set = the split, the rest as is;
    `corpus`: the training corpus (default: the split's whole corpus); `extra`: more `--set` overrides."""
    return [str(Path(sys.executable).parent / "textcl"), "run", str(METHODS[method]), "--no-progress",
            "--set", f"data.train={leaf}", "--set", f"eval.retrieval=[{leaf}]", "--set", f"output_dir={out}",
            "--set", f"seed={seed}", "--set", f"model.cache_dir={cache}", "--set", "skip=[check, index]",
            *(["--set", f"train.corpus={corpus}"] if corpus is not None else []),
            *[x for e in extra for x in ("--set", e)]]


def heldout_overrides(recipe: Path, leaf: Path) -> tuple[str, ...]:
    """new-docs-heldout's `--set`s: the split's held-out set joins the recipe's out-of-domain retrieval sets (the
    recipe's own paths resolved against the recipe), which its forgetting budget watches, with finer mixes."""
    ood = [str((recipe.parent / o).resolve())
           for o in (yaml.safe_load(recipe.read_text()).get("eval") or {}).get("ood_retrieval", [])]
    return (f"eval.ood_retrieval=[{', '.join([*ood, str(leaf.parent / 'heldout')])}]", *HELDOUT_SETS)


def summary_row(out: Path) -> dict:
    """Base / tuned test and dev scores, the out-of-domain STS-B score and what training kept, from summary.json."""
    s = json.loads((out / "summary.json").read_text())
    train = s.get("train") or {}
    dev_before, dev_after = (train.get("dev_before") or {}).get("dev", {}), (train.get("dev_after") or {}).get("dev", {})
    history = json.loads((out / "history.json").read_text()) if (out / "history.json").is_file() else []
    budget = next((h for h in history if "forgetting_budget" in h), {})
    significance = next((h["significance"] for h in history if "significance" in h), None)
    stages = {k: v.get("seconds") for k, v in s.get("stages", {}).items() if isinstance(v, dict)}
    return {"stages_total_s": round(sum(v for v in stages.values() if v), 1), "base_test": s["before"].get(METRIC), "tuned_test": s["after"].get(METRIC),
            "base_dev": dev_before.get(METRIC), "tuned_dev": dev_after.get(METRIC),
            "base_stsb": s["before"].get(OOD), "tuned_stsb": s["after"].get(OOD),
            "steps": train.get("steps"), "stopped_early": train.get("stopped_early"),
            "chosen_alpha": budget.get("chosen"), "stages_s": stages,
            "min_gain_se": _min_gain_se(out / "config.yaml"), "corpus_scope": run_corpus_scope(out),
            **({"base_heldout_test": s["before"][HELDOUT], "tuned_heldout_test": s["after"].get(HELDOUT)}
               if HELDOUT in s["before"] else {}),
            "significance": significance}


def _min_gain_se(config: Path) -> float:
    """The run's resolved eval.min_gain_se (0 when its config is missing: the rule did not exist)."""
    return ((yaml.safe_load(config.read_text()) or {}).get("eval") or {}).get("min_gain_se", 0.0) \
        if config.is_file() else 0.0


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
    extra = heldout_overrides(METHODS[method], leaf) if split == "new-docs-heldout" else \
        ("train.corpus_scope=labelled",) if split == "new-docs-labelled" else ()
    scope = scope_of(method, extra)
    # runs from before the recipes set corpus_scope: labelled keep their folders; later ones get their own
    out = work / method / (f"{split}-s{seed}" if scope == "all" or split == "new-docs-labelled"
                           else f"{split}-{scope}-s{seed}")
    facts = json.loads((leaf.parent / "split.json").read_text())
    corpus = None
    if split == "new-docs-later":
        corpus = work / "splits" / "new-docs-seen-corpus"
        if not (corpus / "corpus.jsonl").is_file():
            splits.seen_corpus(splits.SOURCE, corpus)
    cmd = run_command(method, leaf, out, seed, work / "cache", corpus, extra)
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
    """Test nDCG@10 of `model` on `leaf` (`textcl eval`; documents by the base tower, cached)."""
    if not report.is_file():
        subprocess.run([str(Path(sys.executable).parent / "textcl"), "eval", "--model", model, "--retrieval", str(leaf),
                        "--split", "test", "--k", "10", "--cache-dir", str(work / "cache"), "--output", str(report),
                        "--no-progress"], check=True)
    results = json.loads(report.read_text())["results"]
    return next(r["value"] for r in results if r["key"] == METRIC)


DIAGNOSED = ("new-docs", "new-docs-labelled")  # the new-documents runs --pool and --judged score again


def _undiagnosed(records: Path, suffix: str) -> list[dict]:
    """The shown runs of the `DIAGNOSED` splits that have no `<split>-<suffix>` record yet."""
    rows = read_jsonl(records)
    done = {(r["method"], r["split"], r["seed"]) for r in rows}
    return [r for r in kept_records(rows) if r["split"] in DIAGNOSED and r["method"] in METHODS
            and (r["method"], f"{r['split']}-{suffix}", r["seed"]) not in done]


def pool_records(work: Path, records: Path) -> None:
    """Every finished new-documents run, scored again with the corpus cut to the new documents only
    (splits.new_docs_pool): one record per run, split `<split>-pool`, dev scores copied from the run's."""
    leaf = work / "splits" / "new-docs-pool" / "nfcorpus"
    if not (leaf.parent / "split.json").is_file():
        splits.new_docs_pool(splits.SOURCE, leaf.parent)
    for run in _undiagnosed(records, "pool"):
        out = run_folder(run, work)
        t0 = time.perf_counter()
        base = pool_eval("all-MiniLM-L6-v2", leaf, work, work / "pool-base.json")
        tuned = pool_eval(str(out / "model"), leaf, work, out / "pool-eval.json")
        append_record(records, {"method": run["method"], "split": f"{run['split']}-pool", "seed": run["seed"],
                                "base_test": base, "tuned_test": tuned, "base_dev": run["base_dev"],
                                "tuned_dev": run["tuned_dev"], "wall_s": round(time.perf_counter() - t0, 1),
                                "load_before": run["load_before"], "model": str(out / "model")})


def rule(r: dict) -> int:
    """Which eval.min_gain_se rule a record's run had: 0 none; 1 the plain test of the kept model's dev gain; 2 the
    test that accounts for its choice among every model evaluated on dev (its record names the threshold), or a
    run whose start stayed best on dev (no test: the same result under either)."""
    if not r.get("min_gain_se"):
        return 0
    significance = r.get("significance")
    return 2 if significance is None or "threshold" in significance else 1


def kept_records(rows: list[dict]) -> list[dict]:
    """Per (method, split, seed, corpus scope), the record the tables show: the first of those with the newest
    eval.min_gain_se rule (`rule`); the others stay in the record file."""
    first: dict[tuple, dict] = {}
    for r in rows:
        key = (r["method"], r["split"], r["seed"], corpus_scope(r))
        if key not in first or rule(r) > rule(first[key]):
            first[key] = r
    return list(first.values())


def cells(rows: list[dict]) -> list[dict]:
    """The kept records as the tables show them: a run of a recipe whose corpus scope is not the recipe's own today
    is its own method (`recipe, corpus_scope: all`), and `new-docs-labelled` (the recipes' setting now) is
    `new-docs`."""
    shown = []
    for r in kept_records(rows):
        scope, method, split = corpus_scope(r), r["method"], r["split"]
        if scope is not None and scope != scope_of(method):
            method = f"{method}, corpus_scope: {scope}"
        if split.startswith("new-docs-labelled"):
            split = "new-docs" + split.removeprefix("new-docs-labelled")
        shown.append({**r, "method": method, "split": split})
    return shown


def run_folder(run: dict, work: Path) -> Path:
    """A recorded run's output folder: its command's output_dir (runs went to several work folders)."""
    for part in run.get("run_command", "").split(" "):
        if part.startswith("output_dir="):
            return Path(part.removeprefix("output_dir="))
    return work / run["method"] / f"{run['split']}-s{run['seed']}"


WHOLE_OF = ("new-docs", "new-docs-later", "new-docs-heldout", "new-docs-labelled")  # runs --whole scores on the whole test


def whole_records(work: Path, records: Path) -> None:
    """Every finished new-documents run (in the corpus, added later, chosen watching held-out documents) scored
    again on the unchanged NFCorpus test qrels, every document: what the split's training costs or gains where
    most relevant documents are seen ones. One record per run, split `<split>-whole`, dev scores and the run's
    eval.min_gain_se rule and corpus scope copied: a run recorded after its cell's last whole record (a rerun under a
    newer rule, in the same folder) is scored again, and its record is the one shown."""
    rows = read_jsonl(records)
    scored: dict[tuple, str] = {}  # cell -> when its newest whole record was written
    for r in rows:
        key = (r["method"], r["split"], r["seed"], corpus_scope(r))
        scored[key] = max(scored.get(key, ""), r.get("written", ""))
    for run in [r for r in kept_records(rows) if r["split"] in WHOLE_OF and r["method"] in METHODS]:
        split = f"{run['split']}-whole"
        if scored.get((run["method"], split, run["seed"], corpus_scope(run)), "") >= run.get("written", ""):
            continue
        out = run_folder(run, work)
        t0, load_before = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
        base = pool_eval("all-MiniLM-L6-v2", splits.SOURCE, work, work / "whole-base.json")
        tuned = pool_eval(str(out / "model"), splits.SOURCE, work, out / "whole-eval.json")
        append_record(records, {"method": run["method"], "split": split, "seed": run["seed"], "base_test": base,
                                "tuned_test": tuned, "base_dev": run["base_dev"], "tuned_dev": run["tuned_dev"],
                                "wall_s": round(time.perf_counter() - t0, 1), "load_before": load_before,
                                "model": str(out / "model"),
                                **{k: run[k] for k in ("min_gain_se", "significance", "corpus_scope") if k in run}})


def judged_eval(model: str, leaf: Path, work: Path, leave_out: dict[str, set[str]]) -> float:
    """Test nDCG@10 of `model` on the new-documents test qrels (corpus whole, as `new-docs`), with each query's
    `leave_out` documents taken out of its ranking before the cut at 10 (neither rewarded nor penalised)."""
    from textcl.config import ModelConfig
    from textcl.data.beir import load_beir
    from textcl.eval.metrics import evaluate_run, mean_metrics
    from textcl.eval.retrieval import default_ignore_identical_ids, retrieve
    from textcl.models import encoder_for, load_configured_model

    rset = load_beir(leaf, "test")
    mc = ModelConfig(name_or_path=model, cache_dir=str(work / "cache"), precision=PRECISION)
    encode = encoder_for(load_configured_model(mc), mc, scoring=True, show_progress=False)
    extra = max((len(v) for v in leave_out.values()), default=0)
    run, _ = retrieve(encode, rset, 10 + extra, ignore_identical_ids=default_ignore_identical_ids(rset.name)[0])
    cut = {q: dict([(d, s) for d, s in docs.items() if d not in leave_out.get(q, ())][:10]) for q, docs in run.items()}
    return mean_metrics(evaluate_run(rset.qrels, cut, [10]))["ndcg@10"]


def judged_records(work: Path, records: Path) -> None:
    """Every finished new-documents run scored again with the SEEN documents that the original test qrels judge
    relevant to a query taken out of that query's ranking (split `new-docs-judged`): ranking a relevant seen
    document above a new one is then neither rewarded nor penalised. Self-check: with nothing left out, the
    base model's score equals the run's recorded base score."""
    leaf = split_folder("new-docs", 0, work)
    seen = {q: {d for d, rel in docs.items() if rel > 0 and not splits.is_new(d)}
            for q, docs in splits.read_qrels(splits.SOURCE, "test").items()}
    todo = _undiagnosed(records, "judged")
    if not todo:
        return
    plain = judged_eval("all-MiniLM-L6-v2", leaf, work, {})
    if abs(plain - todo[0]["base_test"]) > 1e-6:
        raise AssertionError(f"self-check: base {plain} here, {todo[0]['base_test']} in the run's summary")
    base = judged_eval("all-MiniLM-L6-v2", leaf, work, seen)
    for run in todo:
        t0, load_before = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
        tuned = judged_eval(str(run_folder(run, work) / "model"), leaf, work, seen)
        append_record(records, {"method": run["method"], "split": f"{run['split']}-judged", "seed": run["seed"],
                                "base_test": base, "tuned_test": tuned, "base_dev": run["base_dev"],
                                "tuned_dev": run["tuned_dev"], "wall_s": round(time.perf_counter() - t0, 1),
                                "load_before": load_before, "left_out_per_query": statistics.mean(
                                    len(v) for v in seen.values())})


def _pts(values: list[float], sign: str = "") -> str:
    """Points x100: the value, or mean ± std; `sign="+"` for gains."""
    vals = [100 * v for v in values]
    if len(vals) == 1:
        return f"{vals[0]:{sign}.2f}"
    return f"{statistics.mean(vals):{sign}.2f} ± {statistics.stdev(vals):.2f}"


def _cell_rows(rows: list[dict], split_names: list[str], label) -> list[str]:
    """One table row per (split, method): base, tuned, gain (mean ± std over seeds), worst seed's gain, dev."""
    lines = []
    order = [*METHODS, "peer"]
    methods = sorted({r["method"] for r in rows}, key=lambda m: (order.index(m.split(",")[0]), m))
    for split in split_names:
        for method in methods:
            runs = {r["seed"]: r for r in rows if r["split"] == split and r["method"] == method}  # first per seed
            runs = {s: r for s, r in runs.items() if r.get("tuned_test") is not None}
            if not runs:
                continue
            rs = list(runs.values())
            gains = [r["tuned_test"] - r["base_test"] for r in rs]
            lines.append(f"| {label(split)} | {method} | {len(rs)} | {_pts([r['base_test'] for r in rs])} | "
                         f"{_pts([r['tuned_test'] for r in rs])} | {_pts(gains, '+')} | {100 * min(gains):+.2f} | "
                         f"{_pts([r['base_dev'] for r in rs])} -> {_pts([r['tuned_dev'] for r in rs])} | "
                         f"{statistics.median(r.get('stages_total_s', r['wall_s']) for r in rs):.0f} |")
    return lines


def _new_docs_label(split: str) -> str:
    return {"new-docs": "new documents", "new-docs-pool": "new documents, pool of new documents only",
            "new-docs-judged": "new documents, relevant seen documents left out of each ranking",
            "new-docs-later": "new documents added after training (never training negatives)",
            "new-docs-heldout": "new documents, model chosen watching held-out seen documents"}[split]


HEADER = ["| split | method | seeds | base test nDCG@10 | tuned test nDCG@10 | gain | worst seed gain | "
          "dev nDCG@10 base -> tuned | median run time (s) |", "|---|---|---|---|---|---|---|---|---|"]


def table(rows: list[dict]) -> list[str]:
    """Markdown tables from the records alone: new documents, then the label budget curve."""
    rows = cells(rows)
    loads = [r["load_before"][0] for r in rows]
    lines = ["## Generalisation: new documents and label budgets (`bench/bench_generalisation.py`)", "",
             "Points x100, mean ± std over the seeds in the `seeds` column (the first record per seed). `recipe` = "
             "`recipes/nfcorpus-fast.yaml` unchanged but for its training data and in-domain set; `adapter` = "
             "`recipes/nfcorpus-adapter.yaml`; `peer` = sentence-transformers at the setting `bench/bench_peer.py` chose on "
             "dev (its run time: mining + training, evaluations excluded). Dev is the split's own dev qrels (what "
             "selection saw). Both recipes set `train.corpus_scope: labelled`: the query side (or adapter) trains "
             "against the documents a training qrel names, so documents no training query is labelled with (the new "
             "ones among them) are not its negatives, while evaluation searches the whole corpus. Rows "
             "`recipe, corpus_scope: all` and `adapter, corpus_scope: all` are runs from before the recipes set it "
             "(every corpus document a negative of every query).", "",
             "### New documents", "",
             "NFCorpus documents with sha256(id) mod 100 < 20 are new: every train and dev qrel naming one is removed; "
             "test keeps only (query, new document) pairs; the corpus stays whole (bench/splits.py). The rows "
             "`pool of new documents only` (`--pool`: a diagnostic) score the same runs' models on the same test qrels with the corpus cut to the "
             "new documents, so seen documents — relevant ones too — cannot crowd new ones out of the top 10; their dev "
             "column repeats the run's. The rows `relevant seen documents left out` (`--judged`: a diagnostic) keep the "
             "whole corpus but take out of "
             "each query's ranking the seen documents that the original test qrels judge relevant to it, so ranking a "
             "relevant seen document above a new one is neither rewarded nor penalised. The rows `added after training` (`new-docs-later`) "
             "are runs of their own: the same split, but the training corpus (`train.corpus`) holds the seen documents "
             "only, as when documents are added after training, so new documents are never its negatives.", "",
             *HEADER]
    lines += _cell_rows(rows, ["new-docs", "new-docs-pool", "new-docs-judged", "new-docs-later", "new-docs-heldout"],
                        _new_docs_label)
    held = sorted((r for r in rows if r["split"] == "new-docs-heldout" and r.get("tuned_test") is not None),
                  key=lambda r: (r["method"], r["seed"]))
    if held:
        lines += ["", "The rows `model chosen watching held-out seen documents` (`new-docs-heldout`) are runs of their "
                  "own: the same split, but a further 16% of the "
                  "documents (20% of the seen ones, the next sha256 buckets) lose their train and dev qrels too, and "
                  "their dev qrels become an out-of-domain set (`eval.ood_retrieval`) that the recipe's forgetting "
                  "budget (`train.max_ood_drop`, 0.5 points) watches when it picks among the WiSE-FT mixes "
                  "a = 0.1 ... 0.9, the best checkpoint and the starting model: a proxy, chosen without looking at the "
                  "new documents, for documents the model never trained towards. Per run, the mix kept and the "
                  "held-out documents' test nDCG@10 base -> tuned: "
                  + "; ".join(f"{r['method']} seed {r['seed']}: a = {r.get('chosen_alpha')}, "
                              f"{100 * r['base_heldout_test']:.2f} -> {100 * r['tuned_heldout_test']:.2f}"
                              for r in held if "base_heldout_test" in r) + "."]
    whole = [f"{w}-whole" for w in WHOLE_OF if w != "new-docs-labelled"]  # shown as new-docs (`cells`)
    if any(r["split"] in whole for r in rows):
        lines += ["", "The same runs' models on the unchanged NFCorpus test qrels, every document (`--whole`; most "
                  "relevant documents are seen ones): what each way of training on the split does where the corpus "
                  "did not change. Dev: the run's own.", "", *HEADER]
        lines += _cell_rows(rows, whole, lambda s: _new_docs_label(s.removesuffix("-whole")) + ": whole test")
    lines += ["", "### Label budget", "",
              "Train qrels of a seeded sample of N train queries (the sample's seed = the run's seed); dev and test "
              "unchanged. Both recipes set `eval.min_gain_se: 1.64`: a run keeps the base model unless its dev gain is "
              "at least 1.64 standard errors of the per-query paired difference, raised for having been chosen among "
              "every checkpoint and mix evaluated on the same dev queries (max-T: the 95% quantile of the best "
              "candidate's t under random sign flips of each query's differences); a cell's record from before the "
              "rule, or from before it accounted for the choice, stays in the record file but is superseded. The peer has no such rule: it "
              "keeps its best dev checkpoint, trained for the same number of steps as on every train query "
              "(`bench_peer.py --split budget-N`).", "", *HEADER]
    lines += _cell_rows(rows, [s for s in BUDGETS], lambda s: f"N = {s.split('-')[1]}")
    if loads:
        lines += ["", f"Run times are the sum of a `textcl run`'s stage times (data check and index skipped) on a 2-core machine shared "
                      f"with other jobs (1-minute load average {min(loads):.1f}-{max(loads):.1f} at the start of the "
                      "runs): read them as loaded-machine times, not a speed result."]
    plain = {}
    for r in rows:
        if rule(r) == 1:
            plain.setdefault(f"{r['method']} {r['split']}", []).append(str(r["seed"]))
    if plain:
        lines += ["", "Runs whose `eval.min_gain_se` test did not yet account for the choice among checkpoints and mixes "
                  "(a dev t of at least 1.64 kept the tuned model): " + "; ".join(
                      f"{cell} seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}" for cell, seeds in plain.items())
                  + ". Their t values are in the records (`significance`)."]
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
    parser.add_argument("--whole", action="store_true",
                        help="score finished new-documents runs on the whole, unchanged test set (what the split's "
                             "training does to seen documents); run nothing else")
    parser.add_argument("--judged", action="store_true",
                        help="score finished new-documents runs with the seen documents judged relevant to each query "
                             "left out of its ranking (a diagnostic); run nothing else")
    args = parser.parse_args()
    records = Path(args.records)
    if args.judged:
        judged_records(Path(args.work).resolve(), records)
    elif args.pool:
        pool_records(Path(args.work).resolve(), records)
    elif args.whole:
        whole_records(Path(args.work).resolve(), records)
    elif not args.table:
        if not METHODS[args.method].is_file():
            parser.error(f"{METHODS[args.method]} does not exist: method {args.method!r} is not available here")
        for split in args.splits:
            for seed in args.seeds:
                se = (yaml.safe_load(METHODS[args.method].read_text()).get("eval") or {}).get("min_gain_se", 0.0)
                scope = scope_of(args.method, ("train.corpus_scope=labelled",) if split == "new-docs-labelled" else ())
                if any(r["method"] == args.method and r["split"] == split and r["seed"] == seed
                       and corpus_scope(r) == scope and (rule(r) == 2 or not se) for r in read_jsonl(records)):  # a record of an
                    # older eval.min_gain_se rule is run again (move its run folder aside first: its stages are reused)
                    print(f"skip {args.method} {split} seed {seed}: recorded in {records}", flush=True)
                    continue
                run_one(args.method, split, seed, Path(args.work).resolve(), records, args.note, args.threads)
    print("\n".join(table(read_jsonl(records))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
