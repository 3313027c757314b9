"""The forgetting budget (`train.max_ood_drop`) replayed on finished query-side runs: for each run folder,
score the best checkpoint and its WiSE-FT mixes a x tuned + (1 - a) x base query tower with textcl's own
evaluators (in-domain dev, out-of-domain sets on their dev split for the budget, every set on test for the
report), choose with `textcl.train.selection.choose_mix` — the rule `mix_with_base` applies — and table the
test scores of the checkpoint and of the chosen mix. Documents keep the cached base embeddings.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_forgetting.py bench/results/fast/seed-42 ... \\
        --budget 0.5 --alphas 0.5 0.6 0.7 0.8 0.9
    .venv/bin/python bench/bench_forgetting.py --records bench/records/forgetting.jsonl --out X.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
from pathlib import Path

from common import ROOT, append_record, provenance, write_section  # first: sets up sys.path and env

from textcl.config import load_recipe
from textcl.eval import evaluate
from textcl.models import Encoder, MemoEncoder, RoutedEncoder, load_model, split_towers
from textcl.soup import interpolate
from textcl.train.evaluation import build_ood_dev, ood_drop, pick_metric
from textcl.train.selection import choose_mix

SETS = {"nfcorpus/ndcg@10": "NFCorpus test nDCG@10", "stsbenchmark/spearman_cosine": "STS-B test Spearman (query tower)",
        "stsb-retrieval/ndcg@10": "STS-B paraphrase retrieval nDCG@10"}


def replay(run: Path, budget: float, alphas: list[float], cache: Path | None) -> dict:
    """Candidates (alpha 1.0 = the run's selected checkpoint, then each mix) with dev, out-of-domain dev drop
    and test scores; the one choose_mix keeps."""
    config = load_recipe(run / "config.yaml")
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, max_ood_drop=budget,
                                                                   interpolate_base=alphas))
    query, document = split_towers(load_model(run / "model", device="cpu"))
    base, tuned = ({k: v.clone() for k, v in m.state_dict().items()} for m in (document, query))
    documents = MemoEncoder(Encoder(document, precision="fp32", cache_dir=cache or config.model.cache_dir,
                                    show_progress=False))
    encoder = RoutedEncoder(Encoder(query, precision="fp32", show_progress=False), documents)
    ood_dev = build_ood_dev(config)
    dev_cfg = dataclasses.replace(config.eval, ood_sts=[], ood_retrieval=[])
    query.load_state_dict(base)
    base_ood, base_test = ood_dev(encoder), evaluate(encoder, config.eval, config.eval.split)
    candidates = []
    for alpha in [1.0, *sorted(alphas)]:
        query.load_state_dict(interpolate(base, tuned, alpha) if alpha < 1.0 else tuned)
        _, dev = pick_metric(evaluate(encoder, dev_cfg, config.eval.dev_split), config.eval.metric_for_best)
        test = evaluate(encoder, config.eval, config.eval.split)
        candidates.append({"alpha": alpha, "dev": dev, "ood_drop": ood_drop(ood_dev(encoder), base_ood),
                           "test": {k: test.get(k) for k in SETS}})
        print(json.dumps(candidates[-1]), flush=True)
    return {"run": str(run), "seed": config.seed, "budget": budget, "alphas": alphas, "candidates": candidates,
            "chosen": _choice(candidates, budget), "best_dev": _choice(candidates, math.inf),
            "base_test": {k: base_test.get(k) for k in SETS}}


def _choice(candidates: list[dict], budget: float) -> float:
    """The alpha `choose_mix` keeps among the replayed candidates (budget inf = best on dev alone)."""
    return choose_mix([{k: c[k] for k in ("alpha", "dev", "ood_drop")} for c in candidates], budget)["alpha"]


def _pts(values: list[float | None]) -> str:
    vals = [100 * v for v in values if v is not None]
    if not vals:
        return "-"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}" if len(vals) > 1 else f"{vals[0]:.2f}"


def section(rows: list[dict], command: str) -> list[str]:
    """Mean ± std over runs of the checkpoint (a = 1), the best mix on dev (`interpolate_base` alone) and the
    mix within the budget, then each run's candidates."""
    def of(r: dict, alpha: float) -> dict:
        return next(c for c in r["candidates"] if c["alpha"] == alpha)

    # records written before "best_dev" was recorded: computed here, on copies (a table function changes no record)
    rows = [{**r, "best_dev": r.get("best_dev", _choice(r["candidates"], math.inf))} for r in rows]
    pick = {r["seed"]: of(r, r["chosen"]) for r in rows}
    best = {r["seed"]: of(r, r["best_dev"]) for r in rows}
    ckpt = {r["seed"]: r["candidates"][0] for r in rows}
    lines = [f"## Forgetting budget on query-side runs (`train.max_ood_drop: {rows[0]['budget']}`)", "",
             f"Command: `{command}`. For each finished `recipes/nfcorpus-fast.yaml` run (the `all` runs of the "
             "section above, trained before the recipe had `train.similarity_anchor`): the selected checkpoint "
             f"(a = 1) and its WiSE-FT mixes a x tuned + (1 - a) x base query tower, a in {rows[0]['alphas']}, "
             "scored with textcl's evaluators, and chosen by `textcl.train.selection.choose_mix`, the rules training "
             "applies after its last step: *best on dev* = `train.interpolate_base` alone (the best NFCorpus dev "
             "score among the checkpoint and the mixes); *within budget* = with `train.max_ood_drop` (the best dev "
             "score among those whose STS-B **dev** Spearman, the out-of-domain set with a dev split, is within the "
             "budget of the base model's; else the one that forgets least). Test scores; points x100, "
             f"mean ± std over {len(rows)} runs.", "",
             "| set | base | checkpoint (a = 1) | best on dev | within budget |", "|---|---|---|---|---|"]
    for key, label in SETS.items():
        lines.append(f"| {label} | {100 * rows[0]['base_test'][key]:.2f} | "
                     f"{_pts([ckpt[r['seed']]['test'][key] for r in rows])} | "
                     f"{_pts([best[r['seed']]['test'][key] for r in rows])} | "
                     f"{_pts([pick[r['seed']]['test'][key] for r in rows])} |")
    # the dev scores that made each choice (issue 29, item 4): selection score and the budget's measure
    lines.append("| NFCorpus dev nDCG@10 (selection) | not recorded | "
                 + " | ".join(_pts([c[r["seed"]]["dev"] for r in rows]) for c in (ckpt, best, pick)) + " |")
    lines.append("| STS-B dev drop from base (points; the budget's measure) | 0 | "
                 + " | ".join(_pts([c[r["seed"]]["ood_drop"] / 100 for r in rows]) for c in (ckpt, best, pick)) + " |")
    lines += ["", "Chosen a per seed: best on dev " + ", ".join(f"{r['seed']}: {r['best_dev']}" for r in rows)
              + "; within budget " + ", ".join(f"{r['seed']}: {r['chosen']}" for r in rows) + "."]
    lines += ["", "| seed | a | NFCorpus dev | STS-B dev drop (points) | NFCorpus test | STS-B test | "
              "STS-B retrieval test | chosen |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for c in r["candidates"]:
            t = c["test"]
            lines.append(f"| {r['seed']} | {c['alpha']} | {100 * c['dev']:.2f} | {c['ood_drop']:.2f} | "
                         f"{100 * t['nfcorpus/ndcg@10']:.2f} | {100 * t['stsbenchmark/spearman_cosine']:.2f} | "
                         f"{100 * t['stsb-retrieval/ndcg@10']:.2f} | "
                         + " ".join(w for a, w in ((r["best_dev"], "best on dev"), (r["chosen"], "within budget"))
                                    if c["alpha"] == a) + " |")
    lines += ["", f"The budget itself ({rows[0]['budget']} STS-B dev points) is a setting, not a choice among "
              "budgets: these records replay one budget, so no dev comparison of budgets exists here. "
              "The dev rows above are what chose each mix.", "", provenance(rows)]
    return [*lines, ""]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", type=Path, help="finished `textcl run` output folders")
    p.add_argument("--budget", type=float, default=0.5)
    p.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.9])
    p.add_argument("--cache", type=Path, default=None, help="document embedding cache (default: the run's)")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "forgetting.jsonl")
    p.add_argument("--records", type=Path, default=None, help="only table this results file (or folder's forgetting.jsonl)")
    p.add_argument("--mode", choices=["quick", "full"], default=None, help="bench/run_all.py's flag (unused: replays need runs)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "forgetting.md")
    args = p.parse_args()
    if args.records is None:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        for run in args.runs:
            append_record(args.results, replay(run, args.budget, args.alphas, args.cache))
    path = args.records or args.results
    if path.is_dir():  # bench/run_all.py passes the records folder
        path = path / "forgetting.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    if rows:
        write_section(args.out, section(rows, "python bench/bench_forgetting.py RUN... --budget "
                                              f"{rows[0]['budget']} --alphas {' '.join(map(str, rows[0]['alphas']))}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
