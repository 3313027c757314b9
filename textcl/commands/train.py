"""`textcl train RECIPE [--set key=value ...] [--resume [CHECKPOINT]]`: fine-tune the recipe's model."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("textcl")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="fine-tune a sentence-embedding model from a recipe",
                                   description=__doc__)
    parser.add_argument("recipe", help="YAML recipe (see recipes/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set train.max_steps=10 (repeatable)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue from train.output_dir/checkpoints/latest, or from CHECKPOINT")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from textcl.config import load_recipe
    from textcl.train.loop import train

    config = load_recipe(args.recipe, args.overrides)
    result = train(config, resume=args.resume)
    log.info("trained %d steps (%d skipped); best model in %s", result.steps, result.skipped_steps,
             result.output_dir)
    if result.after:
        log.info("dev after training: %s", result.after.get("dev"))
    return 0
