"""Run a recipe end to end: check -> eval_base -> mine -> train -> eval_tuned -> index -> report.

Every stage is skippable (`skip:` in the recipe) and resumable: a finished stage leaves a marker
`output_dir/stages/<name>.json` holding the hash of its inputs (its config sections, fingerprints of
its input files, and the hashes of the stages it reads from). A later run with the same hash reuses
the stored result instead of running the stage again; any change re-runs it and everything
downstream of it. Stage bodies live in `textcl.pipeline_stages`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textcl.config import RunConfig, save_config
from textcl.errors import ConfigError
from textcl.paths import place_outputs
from textcl.preflight import check_recipe

log = logging.getLogger(__name__)

STAGES = ("check", "eval_base", "mine", "train", "eval_tuned", "index", "report")
CONTENT_HASH_LIMIT = 64 * 2**20  # bigger files are fingerprinted by size + mtime


class NotApplicable(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a stage body when the recipe gives it nothing to do (e.g. no eval sets)."""


def fingerprint_path(value: str | None) -> Any:
    """A stable fingerprint of a file, folder, or a non-path value (hub id) for stage hashes."""
    if value is None:
        return None
    p = Path(value)
    if p.is_file():
        st = p.stat()
        if st.st_size <= CONTENT_HASH_LIMIT:
            return {"sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file() and "checkpoints" not in x.parts):
            st = f.stat()
            h.update(f"{f.relative_to(p)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return {"tree": h.hexdigest()}
    return {"id": str(value)}


def hash_inputs(inputs: Any) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Stage:
    name: str
    inputs: Callable[[Context], dict]  # JSON-able description of everything the stage reads
    run: Callable[[Context], dict]  # does the work, returns a JSON-able result
    depends: tuple[str, ...] = ()


@dataclass
class Context:
    """What stages share: the config, the output folder, results and hashes of earlier stages."""

    config: RunConfig
    out: Path
    recipe: str | None = None
    results: dict[str, dict | None] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    status: dict[str, dict] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)  # loaded models/encoders, reused across stages

    def marker(self, name: str) -> Path:
        return self.out / "stages" / f"{name}.json"

    def read_marker(self, name: str) -> dict | None:
        path = self.marker(name)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            log.warning("ignoring a damaged stage marker %s", path)
            return None


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run_stage(ctx: Context, stage: Stage, skip: set[str], force: bool = False) -> None:
    """Run, reuse (same input hash) or skip one stage; record its status, result and hash in ctx."""
    previous = ctx.read_marker(stage.name)
    if stage.name in skip:
        previous = previous if previous and previous.get("complete") else None
        ctx.results[stage.name] = previous["result"] if previous else None
        ctx.hashes[stage.name] = hash_inputs([previous["hash"], previous["result"]]) if previous else "skipped"
        reused = " (keeping the result of an earlier run)" if previous else ""
        log.info("stage %s: skipped by the recipe%s", stage.name, reused)
        ctx.status[stage.name] = {"status": "skipped" + (", previous result kept" if previous else "")}
        return
    inputs = {"stage": stage.name, "inputs": stage.inputs(ctx),
              "upstream": {d: ctx.hashes.get(d) for d in stage.depends}}
    digest = hash_inputs(inputs)
    if previous and previous.get("hash") == digest and not force and previous.get("complete"):
        log.info("stage %s: inputs unchanged, reusing the result from %s", stage.name, ctx.marker(stage.name))
        ctx.results[stage.name] = previous["result"]
        ctx.hashes[stage.name] = hash_inputs([digest, previous["result"]])
        ctx.status[stage.name] = {"status": "cached", "seconds": previous.get("seconds", 0.0)}
        return
    log.info("stage %s: running", stage.name)
    ctx.cache[f"previous:{stage.name}"] = previous  # lets a stage resume its own interrupted work
    _write_json_atomic(ctx.marker(stage.name), {"hash": digest, "complete": False, "inputs": inputs})
    t0 = time.perf_counter()
    try:
        result = stage.run(ctx)
        status = "done"
    except NotApplicable as exc:
        result, status = None, f"not applicable: {exc}"
        log.info("stage %s: %s", stage.name, exc)
    seconds = time.perf_counter() - t0
    result = json.loads(json.dumps(result, default=str))  # the same value whether fresh or read back
    _write_json_atomic(ctx.marker(stage.name), {"hash": digest, "complete": True, "inputs": inputs,
                                                "result": result, "seconds": seconds})
    # Downstream stages hash this stage's result too: a forced re-run that changes it invalidates them.
    ctx.results[stage.name], ctx.hashes[stage.name] = result, hash_inputs([digest, result])
    ctx.status[stage.name] = {"status": status, "seconds": seconds}


def run_pipeline(config: RunConfig, *, recipe: str | None = None, force: list[str] | None = None) -> dict:
    """Run every stage of a recipe; return the summary (also written to output_dir/summary.json)."""
    from textcl.pipeline_stages import build_stages

    unknown = sorted(set(config.skip) - set(STAGES))
    if unknown:
        raise ConfigError(f"skip: unknown stage(s) {unknown}; valid stages: {', '.join(STAGES)}")
    bad_force = sorted(set(force or []) - set(STAGES) - {"all"})
    if bad_force:
        raise ConfigError(f"--force: unknown stage(s) {bad_force}; valid stages: {', '.join(STAGES)}, all")
    config = place_outputs(config)
    skip = set(config.skip)
    check_recipe(config, training="train" not in skip, evaluating=not {"eval_base", "eval_tuned"} <= skip)
    ctx = Context(config=config, out=Path(config.output_dir), recipe=recipe)
    ctx.out.mkdir(parents=True, exist_ok=True)
    save_config(config, ctx.out / "config.yaml")
    forced = set(STAGES) if "all" in (force or []) else set(force or [])
    forced.add("report")  # cheap, and its stage table must describe this run
    for stage in build_stages():
        run_stage(ctx, stage, set(config.skip), force=stage.name in forced)
    return ctx.results.get("report") or {"stages": ctx.status}
