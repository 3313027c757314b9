"""Run every benchmark in bench/ (each writes its markdown to bench/results/ and, where it records, a line to
bench/records/), then regenerate BENCHMARKS.md and the README's results block from bench/records/ alone
(bench/tables.py, `make bench-tables`). A bench that writes no record yet is not in BENCHMARKS.md.

The long benches (fine-tuned quality, query-side seeds, forgetting replays, full fine-tuning runs, the peer) are
run on their own; their records are what the tables show.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import tables

HERE = Path(__file__).resolve().parent
ORDER = ["encode", "int8", "mine", "mine_scale", "search", "train", "fast", "forgetting", "full_corpus", "fast_peer", "corpus_scale",
         "quality"]
# Benches run on their own (hours of training, or measuring by hand-chosen runs): here only their records are
# tabled, by bench/tables.py.
RECORD_ONLY = ("quality", "fast", "forgetting", "full_corpus", "fast_peer", "adapter", "generalisation", "any_model")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["quick", "full"], default="quick")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--assemble", action="store_true", help="run nothing; only regenerate the tables")
    args = parser.parse_args()
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    scripts = sorted(HERE.glob("bench_*.py"), key=lambda p: (ORDER.index(p.stem[6:]) if p.stem[6:] in ORDER
                                                             else 99, p.stem))
    failed = []
    for script in scripts:
        name = script.stem[6:]
        if args.assemble or name in RECORD_ONLY or (args.only and name not in args.only):
            continue
        out = results / f"{name}.md"
        print(f"== {script.name} ({args.mode})", flush=True)
        how = ["--mode", args.mode]
        rc = subprocess.call([sys.executable, str(script), *how, "--out", str(out)])
        if rc != 0:
            failed.append(script.name)
    tables.main([])  # BENCHMARKS.md and the README block, from the records alone
    if failed:
        print("failed:", ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
