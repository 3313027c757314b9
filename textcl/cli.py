"""The `textcl` command line: the only module that reads argv, configures logging and seeds.

Each sub-command lives in `textcl/commands/<name>.py` and exposes `register(subparsers)`, which
adds its parser and sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from textcl.errors import TextclError

COMMANDS = ("check", "eval", "mine", "train", "run", "index", "soup")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textcl", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"textcl.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"textcl.commands.{name}":
                raise
            continue  # command not built yet
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except TextclError as exc:
        logging.getLogger("textcl").error("%s", exc)
        return 2
    except KeyboardInterrupt:  # outside training's own handler (loading, evaluation, mining): no traceback
        print(f"interrupted; run `textcl {args.command} ...` again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
