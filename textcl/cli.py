"""The `textcl` command line: the only module that reads argv, configures logging and seeds.

Each sub-command lives in `textcl/commands/<name>.py` and exposes `register(subparsers)`, which
adds its parser and sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version

from textcl.errors import TextclError

DESCRIPTION = """\
textcl: fine-tune sentence-embedding models with contrastive learning, from data to a search index.

A typical first hour:
  textcl check data/faq.csv                      what a data file holds, and what would be skipped
  textcl eval --model all-MiniLM-L6-v2 --retrieval faq.csv      the base model on your data
  textcl run recipes/quickstart.yaml             check, evaluate, mine, train, evaluate, index, report
  textcl index search out/quickstart/index "your question"

Run `textcl COMMAND --help` for a command's options; -v shows details (debug logging)."""
COMMANDS = ("check", "eval", "mine", "train", "run", "index", "soup", "adapter")
QUIET_LIBRARIES = ("faiss", "sentence_transformers", "transformers", "huggingface_hub", "accelerate", "datasets",
                   "urllib3", "httpx", "filelock", "matplotlib", "PIL")


def _version() -> str:
    try:
        return version("textcl")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown (not installed)"


def _add_no_progress(parser: argparse.ArgumentParser) -> None:
    """Every command (and sub-command) takes --no-progress, so scripts can pass it anywhere."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if sub is not None:
        for child in dict.fromkeys(sub.choices.values()):
            _add_no_progress(child)
    elif "--no-progress" not in parser._option_string_actions:
        parser.add_argument("--no-progress", action="store_true", help="no progress bars (they are off anyway "
                            "when the output is not a terminal)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textcl", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, with library messages")
    parser.add_argument("--version", action="version", version=f"textcl {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"textcl.commands.{name}").register(sub)
    _add_no_progress(parser)
    return parser


class _Readable(logging.Formatter):
    """`12:01:02 message`, with `warning:` / `error:` in front of what needs attention."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        return f"{self.formatTime(record, '%H:%M:%S')} {prefix}{record.getMessage()}"


def configure_output(verbose: bool, no_progress: bool) -> None:
    """What a person wants to read by default: textcl's own messages and one bar per long step; the
    libraries' INFO lines (FAISS loading, weight-loading bars) only with -v."""
    if no_progress:
        os.environ["TQDM_DISABLE"] = "1"
    if not verbose:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # weight-loading bars of transformers
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
                         if verbose else _Readable())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])
    logging.getLogger("textcl").setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_output(args.verbose, getattr(args, "no_progress", False))
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
