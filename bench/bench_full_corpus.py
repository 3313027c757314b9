"""Full fine-tuning against the cached corpus (`train.tune: both`, `negatives: corpus`, with and without
`corpus_refresh_every`) next to query-side training, on NFCorpus dev: the dev nDCG@10 after each evaluation
of finished `textcl run` folders, with their settings and CPU cost per step. Runs take minutes to hours on
2 cores, so they are run by hand (commands in the section) and collected; `make bench` tables the records.

    .venv/bin/python bench/bench_full_corpus.py --collect "LABEL=RUN_FOLDER" ... --note "..."
    .venv/bin/python bench/bench_full_corpus.py --records bench/records --out X.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml
from common import ROOT, append_record, provenance, write_section  # sets up sys.path and env

SETTINGS = ("tune", "lr", "corpus_refresh_every", "corpus_positives", "similarity_anchor", "max_steps")


def collect(label: str, run: Path, note: str) -> dict:
    """Settings, dev curve and time of one finished `textcl run` folder."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    if (run / "history.json").is_file():
        history = json.loads((run / "history.json").read_text())
        summary = json.loads((run / "summary.json").read_text())
    else:  # a run stopped by hand: its last checkpoint's history
        last = sorted((run / "model" / "checkpoints").glob("step-*/trainer_state.json"))[-1]
        history, summary = json.loads(last.read_text())["history"], {"after": {}}
    evals = [h for h in history if "eval" in h and "interpolation" not in h]
    metric = evals[0]["metric"]
    train_s = (summary.get("stages", {}).get("train") or {}).get("seconds")
    return {"label": label, "seed": config["seed"], "model": config["model"]["name_or_path"],
            "settings": {k: config["train"].get(k) for k in SETTINGS},
            "dev": [[h["step"], h["eval"]["dev"][metric]] for h in evals], "metric": metric,
            "steps": (summary.get("train") or {}).get("steps"), "train_s": train_s,
            "test_after": summary["after"].get("nfcorpus/ndcg@10"), "note": note}


def section(rows: list[dict]) -> list[str]:
    lines = ["## Full fine-tuning against the cached corpus vs query-side (NFCorpus dev)", "",
             "Issue 21's item 3: the corpus negatives of query-side training used to train both towers (`train.tune: "
             "both`, `negatives: corpus`: each query's positive is embedded live, the rest of the corpus comes from "
             "the cache), with the cache re-embedded every N steps (`corpus_refresh_every`, ANCE-style) or never, "
             "against query-side training (`tune: query`: documents keep the base model). Each row is one `textcl run "
             "recipes/nfcorpus-fast.yaml` with the `--set` overrides shown (seed 42, one seed: a hint). NFCorpus dev "
             "nDCG@10 x100 at each evaluation (step 0 = the starting model). The train stage's seconds include the "
             "dev evaluations and the refreshes: with `tune: both` each of them re-embeds the 3,633 documents, and a "
             "step embeds each query's positive document with gradient.", "",
             "Commands (the recipe as it was before `similarity_anchor`; collected with `bench/bench_full_corpus.py "
             "--collect LABEL=RUN_FOLDER`): full rows `textcl run recipes/nfcorpus-fast.yaml --set train.tune=both "
             "--set train.corpus_positives=sample --set train.lr=LR [--set train.corpus_refresh_every=N] --set "
             "train.max_steps=STEPS --set train.eval_every=20 --set train.interpolate_base=[] --set "
             "train.early_stopping_patience=null`; the last row `textcl run recipes/nfcorpus-fast.yaml --set "
             "model.name_or_path=FOLDER --set train.interpolate_base=[]`, FOLDER = the step-20 weights of the "
             "`refresh every 5` row saved as a sentence-transformers folder.", "",
             "| run | tune | lr | refresh every | steps planned | start model | dev nDCG@10 by step | test nDCG@10 (kept "
             "model) | train stage (s) | note |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["settings"]
        curve = ", ".join(f"{step}: {100 * v:.2f}" for step, v in r["dev"])
        start = Path(r["model"]).name
        train_s = f"{r['train_s']:.0f}" if r["train_s"] is not None else "—"
        test = f"{100 * r['test_after']:.2f}" if r.get("test_after") is not None else "—"
        lines.append(f"| {r['label']} | {s['tune']} | {s['lr']:g} | {s['corpus_refresh_every'] or '—'} | "
                     f"{s['max_steps'] or 'epochs'} | {start} | "
                     f"{curve} | {test} | {train_s} | {r['note']} |")
    return [*lines, "", provenance(rows)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--collect", nargs="*", default=None, metavar="LABEL=FOLDER")
    parser.add_argument("--note", default="")
    parser.add_argument("--results", default=str(ROOT / "bench" / "results" / "full_corpus.jsonl"))
    parser.add_argument("--records", default=None, help="table RECORDS/full_corpus.jsonl")
    parser.add_argument("--mode", choices=["quick", "full"], default=None, help="bench/run_all.py's flag (unused)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "full_corpus.md"))
    args = parser.parse_args()
    if args.collect is not None:
        for item in args.collect:
            label, folder = item.split("=", 1)
            append_record(args.results, collect(label, Path(folder), args.note))  # + command, commit, machine
        return 0
    path = Path(args.records) / "full_corpus.jsonl" if args.records else Path(args.results)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    if rows:
        write_section(args.out, section(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
