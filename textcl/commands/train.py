"""`textcl train RECIPE [--set key=value ...] [--allow-test-selection] [--resume [CHECKPOINT] | --overwrite]`:
fine-tune the recipe's model."""

from __future__ import annotations

import argparse
import logging

from textcl.config import load_recipe
from textcl.errors import TrainingInterrupted
from textcl.paths import place_outputs

log = logging.getLogger("textcl")
ALLOW_TEST_SELECTION = "eval.allow_test_selection=true"


def add_test_selection_flag(parser: argparse.ArgumentParser) -> None:
    """--allow-test-selection (`textcl run` and `textcl train`): the override it names."""
    parser.add_argument("--allow-test-selection", action="store_true",
                        help=f"let training select its checkpoint on the test split or on a one-file evaluation set "
                             f"(inflates the test score; the same as --set {ALLOW_TEST_SELECTION})")


def recipe_overrides(args: argparse.Namespace) -> list[str]:
    """The --set overrides, then those the flags stand for."""
    return [*args.overrides, *([ALLOW_TEST_SELECTION] if args.allow_test_selection else [])]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="fine-tune a sentence-embedding model from a recipe",
                                   description=__doc__)
    parser.add_argument("recipe", help="YAML recipe (see recipes/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set train.max_steps=10 (repeatable)")
    add_test_selection_flag(parser)
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                       help="continue from train.output_dir/checkpoints/latest, or from CHECKPOINT")
    again.add_argument("--overwrite", action="store_true",
                       help="start afresh even if train.output_dir holds a previous run (its checkpoints are deleted)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # start-up time: these load torch and sentence-transformers, and `textcl --help` imports this module
    from textcl.preflight import check_recipe
    from textcl.train.adapter import train_adapter
    from textcl.train.loop import train

    # The same output rule as `textcl run`: the model goes to {output_dir}/model unless train.output_dir is set.
    overrides = recipe_overrides(args)
    config = place_outputs(load_recipe(args.recipe, overrides))
    check_recipe(config, training=True, evaluating=False)  # in seconds, before any model loads
    try:
        if config.train.tune == "adapter":  # a linear map on cached vectors: seconds, nothing to resume
            result = train_adapter(config, overwrite=args.overwrite)
        else:
            result = train(config, resume=args.resume, overwrite=args.overwrite)
    except TrainingInterrupted as exc:
        again = " ".join(["textcl train", args.recipe, *(f"--set {o}" for o in overrides)])
        print(f"interrupted at step {exc.step}; resume with: {again}{' --resume' * bool(exc.checkpoint)}", flush=True)
        return 130
    log.info("trained %d steps (%d skipped); best model in %s", result.steps, result.skipped_steps,
             result.output_dir)
    if result.after:
        log.info("dev after training: %s", result.after.get("dev"))
    return 0
