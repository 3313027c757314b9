"""Shared by the bench scripts: write one BENCHMARKS.md section and echo it."""

from __future__ import annotations

from pathlib import Path


def write_section(out: str | Path, lines: list[str]) -> None:
    """Write the markdown `lines` to `out` (bench/run_all.py assembles them) and print them."""
    text = "\n".join(lines)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text + "\n", encoding="utf-8")
    print(text)
