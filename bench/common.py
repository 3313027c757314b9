"""Shared by the bench scripts (imported first): repository on sys.path, offline hub, data paths, and
the one way a script writes its BENCHMARKS.md section."""

from __future__ import annotations

import os
import platform
import subprocess
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


def st_training_args(out: str | Path, seed: int, *, bf16: bool, **kw: object) -> object:
    """sentence-transformers' trainer arguments as the ST peers of every bench use them: 10% warmup then
    linear decay, NO_DUPLICATES batches, no checkpoints or logging; `kw` adds steps, batch size, lr, ..."""
    import torch  # imported where used: this module is imported first and stays light
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    return SentenceTransformerTrainingArguments(
        output_dir=str(out), seed=seed, warmup_steps=0.1, lr_scheduler_type="linear", bf16=bf16,
        use_cpu=not torch.cuda.is_available(), save_strategy="no", report_to="none", logging_steps=10_000,
        disable_tqdm=True, batch_sampler=BatchSamplers.NO_DUPLICATES, **kw)


def write_section(out: str | Path, lines: list[str]) -> None:
    """Write the markdown `lines` to `out` (bench/run_all.py assembles them) and print them."""
    text = "\n".join(lines)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text + "\n", encoding="utf-8")
    print(text)


def machine_facts() -> dict:
    """What a record says about where it ran: CPU model, cores, and the load average right now."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()]}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)bench/records"],  # records being appended is not a code change
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty else "")


def read_jsonl(path: str | Path, name: str | None = None) -> list[dict]:
    """The records of a .jsonl file (or of `name` in a folder, as bench/run_all.py passes bench/records); [] when
    it does not exist yet."""
    import json
    path = Path(path)
    path = path / name if name and path.is_dir() else path
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()] if path.is_file() else []


def append_record(path: str | Path, record: dict) -> dict:
    """Append one measured row (JSON line) with its provenance: the command line, git commit, machine and the
    load average when it was written (`load_before` is the caller's, taken before the measurement)."""
    import datetime
    import json
    full = {**record, "command": " ".join(sys.argv), "commit": git_commit(), "machine": machine_facts(),
            "written": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(full, sort_keys=True) + "\n")
    return full


def provenance(records: list[dict]) -> str:
    """One line saying where `records` were measured, from the records alone (pure: no clock, no /proc): their
    commits, machines and load averages, and how many records carry none of them."""
    n = len(records)
    commits = list(dict.fromkeys(str(r["commit"]) for r in records if r.get("commit")))
    machines = list(dict.fromkeys(
        (f"{m.get('cpu')}, {m.get('cores')} cores" if isinstance(m, dict) else str(m))
        for r in records if (m := r.get("machine"))))
    loads = [x for r in records for x in _loads(r)]

    def of(found: list, what: str) -> str:
        missing = n - sum(1 for r in records if r.get(what))
        tail = f" ({missing} of {n} records carry none)" if missing and found else ""
        return ("; ".join(found) + tail) if found else f"not recorded (none of the {n} records)"

    with_load = sum(1 for r in records if _loads(r))
    load = (f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not recorded")
    if loads and with_load < n:
        load += f" ({n - with_load} of {n} records carry none)"
    return (f"Provenance (from the records): commit {of(commits, 'commit')}; machine {of(machines, 'machine')}; "
            f"1-minute load average {load}.")


def _loads(record: dict) -> list[float]:
    """The 1-minute load averages a record carries (before/after its measurement, or at writing)."""
    out: list[float] = []
    for key in ("load_before", "load_after", "load_avg_1m"):
        v = record.get(key)
        if isinstance(v, (int, float)):
            out.append(float(v))
        elif isinstance(v, list) and v:
            out.extend(float(x) for x in (v if key == "load_avg_1m" else v[:1]))
    m = record.get("machine")
    if not out and isinstance(m, dict) and m.get("load_avg"):
        out.append(float(m["load_avg"][0]))
    return out


def run_corpus_scope(out: str | Path) -> str:
    """A finished `textcl run` folder's resolved train.corpus_scope (`all` when its config predates the key)."""
    import yaml
    config = Path(out) / "config.yaml"
    if not config.is_file():
        return "all"
    return ((yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("train") or {}).get("corpus_scope", "all")


def recipe_scope(recipe: str | Path) -> str:
    """The train.corpus_scope a recipe file sets (`all` when it sets none)."""
    import yaml
    return ((yaml.safe_load(Path(recipe).read_text(encoding="utf-8")) or {}).get("train") or {}).get("corpus_scope", "all")


def shown_runs(rows: list[dict], scope: str) -> list[dict]:
    """The runs a section shows: those trained with `scope`, the corpus scope their recipe sets today, or every run
    when none was (`scope_note` then says so)."""
    return [r for r in rows if r.get("corpus_scope", "all") == scope] or rows


def scope_note(rows: list[dict], recipe: str) -> list[str]:
    """A section's sentence on its runs from before `recipe` set `train.corpus_scope: labelled` (records without the
    key ran before it existed: every corpus document was a negative)."""
    old = sum(1 for r in rows if r.get("corpus_scope", "all") == "all")
    if not old:
        return []
    return ["", f"{old} of the {len(rows)} runs here trained with `train.corpus_scope: all`, before `{recipe}` set "
                "`labelled` (every corpus document a negative, not only those a train qrel names; nearly every "
                "NFCorpus document is named by one)."]
