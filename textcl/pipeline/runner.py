"""The stage runner: a stage's hash, its marker `output_dir/stages/<name>.json`, and THE resume rule.

A stage's hash covers what it declares it reads (`Stage.inputs`: config sections and stamps of its
files) and the results of the stages it depends on; `resume_rule` decides from that hash and the
stage's previous marker whether it is reused, resumed or run. Nothing here knows a concrete stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

from textcl.config import RunConfig

log = logging.getLogger(__name__)

CONTENT_HASH_LIMIT = 64 * 2**20  # bigger files are stamped by size + mtime

Action = Literal["skip", "reuse", "resume", "run"]


class NotApplicable(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a stage body when the recipe gives it nothing to do (e.g. no eval sets)."""


@dataclass(frozen=True)
class Stage:
    """One row of the stage table.

    `inputs(config)`: a JSON-able description of everything the stage reads besides upstream results
    (hashed). `run(ctx, resume)`: does the work and returns a JSON-able result; `resume` is True only for
    a `resumable` stage whose previous run with the same inputs was interrupted. `depends`: the stages
    whose results it reads (their hashes join its hash). `outputs`: what it writes, each a recipe key
    (`section.key`, e.g. `mining.output`) or a path under output_dir.
    """

    name: str
    inputs: Callable[[RunConfig], dict]
    run: Callable[[Context, bool], dict | None]
    depends: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    resumable: bool = False


@dataclass
class Context:
    """What stages share: the config, the output folder, results and hashes of earlier stages."""

    config: RunConfig
    out: Path
    recipe: str | None = None
    results: dict[str, dict | None] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    status: dict[str, dict] = field(default_factory=dict)
    encoders: dict[str, Any] = field(default_factory=dict)  # loaded models' encoders, reused across stages

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


def file_stamp(value: str | None) -> Any:
    """What identifies the state of a file, folder, or non-path value (hub id) for stage hashes: a file's
    content hash (size + mtime above CONTENT_HASH_LIMIT), a folder's names, sizes and mtimes."""
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


def output_paths(stage: Stage, config: RunConfig, out: Path) -> list[str]:
    """The stage's declared outputs as paths: recipe keys resolved in `config`, other names under `out`."""
    paths = []
    for name in stage.outputs:
        section, _, key = name.partition(".")
        sub = getattr(config, section, None) if key else None
        if is_dataclass(sub) and key in {f.name for f in fields(sub)}:
            value = getattr(sub, key)
            if value is not None:
                paths.append(str(value))
        else:
            paths.append(str(out / name))
    return paths


def resume_rule(stage: Stage, previous: dict | None, digest: str, forced: bool) -> Action:
    """THE rule for a stage that is not skipped, from its previous marker and its current input hash:

    - "reuse": a complete previous run had the same hash (and the stage is not forced): keep its result;
    - "resume": a previous run with the same hash started and never completed (killed, Ctrl-C) and the
      stage can continue its own work (`resumable`, e.g. training from its last checkpoint); forcing
      does not discard that work;
    - "run": anything else (new or changed inputs, forced): run from scratch.
    A skipped stage (`skip:` in the recipe) never runs; its complete previous result, if any, is kept.
    """
    same = previous is not None and previous.get("hash") == digest
    if same and previous.get("complete") and not forced:
        return "reuse"
    if same and previous.get("complete") is False and stage.resumable:
        return "resume"
    return "run"


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _keep_skipped(ctx: Context, stage: Stage, previous: dict | None) -> None:
    previous = previous if previous and previous.get("complete") else None
    ctx.results[stage.name] = previous["result"] if previous else None
    ctx.hashes[stage.name] = hash_inputs([previous["hash"], previous["result"]]) if previous else "skipped"
    reused = " (keeping the result of an earlier run)" if previous else ""
    log.info("stage %s: skipped by the recipe%s", stage.name, reused)
    ctx.status[stage.name] = {"status": "skipped" + (", previous result kept" if previous else "")}


def run_stage(ctx: Context, stage: Stage, skip: set[str], force: bool = False) -> None:
    """Skip, reuse, resume or run one stage (see `resume_rule`); record its status, result and hash in ctx."""
    previous = ctx.read_marker(stage.name)
    if stage.name in skip:
        _keep_skipped(ctx, stage, previous)
        return
    inputs = {"stage": stage.name, "inputs": stage.inputs(ctx.config),
              "upstream": {d: ctx.hashes.get(d) for d in stage.depends}}
    digest = hash_inputs(inputs)
    action = resume_rule(stage, previous, digest, force)
    if action == "reuse":
        log.info("stage %s: inputs unchanged, reusing the result from %s", stage.name, ctx.marker(stage.name))
        ctx.results[stage.name] = previous["result"]
        ctx.hashes[stage.name] = hash_inputs([digest, previous["result"]])
        ctx.status[stage.name] = {"status": "cached", "seconds": previous.get("seconds", 0.0)}
        return
    log.info("stage %s: running", stage.name)
    # Marked incomplete until it returns: a run killed in between is resumed or re-run (resume_rule).
    _write_json_atomic(ctx.marker(stage.name), {"hash": digest, "complete": False, "inputs": inputs})
    t0 = time.perf_counter()
    try:
        result = stage.run(ctx, action == "resume")
        status = "done"
    except NotApplicable as exc:
        result, status = None, f"not applicable: {exc}"
        log.info("stage %s: %s", stage.name, exc)
    seconds = time.perf_counter() - t0
    result = json.loads(json.dumps(result, default=str))  # the same value whether fresh or read back
    outputs = output_paths(stage, ctx.config, ctx.out) if status == "done" else []
    _write_json_atomic(ctx.marker(stage.name), {"hash": digest, "complete": True, "inputs": inputs,
                                                "result": result, "outputs": outputs, "seconds": seconds})
    # Downstream stages hash this stage's result too: a forced re-run that changes it invalidates them.
    ctx.results[stage.name], ctx.hashes[stage.name] = result, hash_inputs([digest, result])
    ctx.status[stage.name] = {"status": status, "seconds": seconds}
