"""`textcl run RECIPE`: data check, base evaluation, mining, training, evaluation, index and report."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from textcl.commands.train import add_test_selection_flag, recipe_overrides
from textcl.config import load_recipe
from textcl.errors import TrainingInterrupted


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="run a recipe end to end (check, eval_base, mine, train, eval_tuned, index, report)",
        description="Run every stage of a recipe. Finished stages whose inputs did not change are reused; "
                    "list stages under `skip:` in the recipe (or --set 'skip=[mine]') to leave them out.")
    p.add_argument("recipe", help="YAML recipe (see recipes/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set seed=1 --set output_dir=out/x --set train.lr=1e-4")
    add_test_selection_flag(p)
    p.add_argument("--force", action="append", default=[], metavar="STAGE",
                   help="re-run this stage (and what depends on its result) even if its inputs are unchanged; "
                        "'all' re-runs everything")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # start-up time: these load torch and sentence-transformers, and `textcl --help` imports this module
    from textcl.pipeline import run_pipeline
    from textcl.pipeline.report import format_table

    overrides = recipe_overrides(args)
    config = load_recipe(args.recipe, overrides)
    try:
        summary = run_pipeline(config, recipe=args.recipe, force=args.force)
    except TrainingInterrupted as exc:  # the train stage saved a checkpoint; a re-run resumes it
        again = " ".join([cli_name(), "run", args.recipe, *(f"--set {o}" for o in overrides)])
        print(f"interrupted at step {exc.step}; resume with: {again}", flush=True)
        return 130
    print()
    print("stages: " + ", ".join(f"{name} {st['status']}" for name, st in summary.get("stages", {}).items()))
    data = summary.get("data") or {}
    for warning in data.get("warnings", []):
        print(f"data warning: {warning}")
    print()
    print(format_table(summary.get("before", {}), summary.get("after", {}), summary.get("ood_metrics", [])))
    flags = summary.get("flags", {})
    for f in flags.get("forgetting", []):
        print(f"FORGETTING: {f['metric']} dropped {f['drop_points']:.2f} points (threshold {f['threshold_points']})")
    for f in flags.get("overfitting", []):
        print(f"OVERFITTING: dev {f['metric']} fell {f['drop_points']:.2f} points after step {f['best_step']} "
              "while the train loss kept falling")
    index = summary.get("index")
    if index:
        print(f"\nindex: {index['path']} ({index['count']} documents, {index['factory']}); try: "
              f"{cli_name()} index search {index['path']} \"your query\"")
    if summary.get("report"):
        print(f"report: {summary['report']}")
        print(f"summary: {summary['output_dir']}/summary.json")
    return 0


def cli_name() -> str:
    """`textcl` when the shell finds this installation's command, else its path (e.g. `.venv/bin/textcl`),
    so a printed command works when pasted into a shell that has not activated the environment."""
    beside = Path(sys.executable).parent / "textcl"
    found = shutil.which("textcl")
    if not beside.is_file() or (found and Path(found).resolve() == beside.resolve()):
        return "textcl"
    try:
        return os.path.relpath(beside)
    except ValueError:  # another drive (Windows)
        return str(beside)
