"""Shared by the bench scripts (imported first): repository on sys.path, offline hub, data paths, and
the one way a script writes its BENCHMARKS.md section."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"  # read-only benchmark data (never copied into the repo)
NFCORPUS = DATA / "nfcorpus"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded while benchmarking
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def write_section(out: str | Path, lines: list[str]) -> None:
    """Write the markdown `lines` to `out` (bench/run_all.py assembles them) and print them."""
    text = "\n".join(lines)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text + "\n", encoding="utf-8")
    print(text)
