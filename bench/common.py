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


def native_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX512-BF16 or AMX). Without them torch emulates bf16:
    on the AVX2-only AMD EPYC VM encoding ran 2.8 docs/s in bf16 vs 17 in fp32, so quick mode skips its
    bf16 rows there (they alone would take over half an hour) and mining compares both tools in fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_rows(mode: str) -> bool:
    """Whether a bench runs its bf16 rows: always in full mode, in quick mode only where bf16 is native."""
    return mode == "full" or native_bf16()


BF16_SKIPPED = ("bf16 rows not run: this CPU has no bf16 instructions (no AVX512-BF16 or AMX), so torch emulates "
                "bf16 at a fraction of fp32's speed and textcl's `precision: auto` uses fp32 here; `--mode full` "
                "measures them anyway.")


def bench_precision() -> str:
    """The precision both tools get where a bench compares them at one precision: bf16 if native, else fp32."""
    return "bf16" if native_bf16() else "fp32"


def write_section(out: str | Path, lines: list[str]) -> None:
    """Write the markdown `lines` to `out` (bench/run_all.py assembles them) and print them."""
    text = "\n".join(lines)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text + "\n", encoding="utf-8")
    print(text)
