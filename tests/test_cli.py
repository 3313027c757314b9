"""The command line reads as one tool: a user-facing top-level help, help text on every option with
choices listed, one name per concept (old spellings kept as aliases), --no-progress everywhere,
--version; default output is readable and progress bars never reach a log file."""

from __future__ import annotations

import argparse
import logging

import pytest

from textcl import progress
from textcl.cli import _Readable, build_parser, main


def _parsers(parser: argparse.ArgumentParser, name: str = "textcl"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child_name, child in action.choices.items():
                yield from _parsers(child, f"{name} {child_name}")


def test_top_level_help_is_for_users_and_version_exists(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "A typical first hour:" in out and "only module that reads argv" not in out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("textcl ")


def test_every_option_has_help_and_every_command_takes_no_progress():
    missing, without_flag = [], []
    for name, parser in _parsers(build_parser()):
        has_sub = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
        if not has_sub and "--no-progress" not in parser._option_string_actions:
            without_flag.append(name)
        missing += [f"{name} {a.option_strings or a.dest}" for a in parser._actions
                    if not a.help and not isinstance(a, argparse._SubParsersAction)]
    assert missing == [] and without_flag == []
    mine = dict(_parsers(build_parser()))["textcl mine"]
    assert mine._option_string_actions["--sampling"].choices == ["top", "random"]


@pytest.mark.parametrize("argv, dest, value", [
    (["index", "build", "--model", "m", "--corpus", "c", "--out", "o"], "out", "o"),
    (["index", "build", "--model", "m", "--corpus", "c", "--output", "o", "--index", "HNSW32"], "factory", "HNSW32"),
    (["index", "build", "--model", "m", "--corpus", "c", "--output", "o", "--search", "Flat"], "factory", "Flat"),
    (["eval", "--model", "m", "--search", "HNSW32"], "factory", "HNSW32"),
    (["eval", "--model", "m", "--factory", "HNSW32", "--out", "r.json"], "output", "r.json"),
    (["mine", "--index", "IVF16,Flat"], "factory", "IVF16,Flat"),
    (["mine", "--factory", "IVF16,Flat", "--out", "m.jsonl"], "output", "m.jsonl"),
])
def test_one_name_per_concept_with_old_spellings_as_aliases(argv, dest, value):
    assert getattr(build_parser().parse_args(argv), dest) == value


def test_readable_log_lines_and_no_bars_without_a_terminal(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # an earlier in-process `main([... --no-progress])` sets it
    record = logging.LogRecord("textcl.x", logging.WARNING, __file__, 1, "disk %s", ("full",), None)
    line = _Readable().format(record)
    assert line.endswith(" warning: disk full") and "textcl.x" not in line
    assert progress.bar(range(3)).disable  # pytest captures stderr: not a terminal, no escape codes
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True)
    assert not progress.bar(range(3)).disable
    monkeypatch.setenv("TQDM_DISABLE", "1")  # --no-progress
    assert progress.bar(range(3)).disable
