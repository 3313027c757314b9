"""Run a recipe end to end: check -> eval_base -> mine -> train -> eval_tuned -> index -> report.

Every stage is skippable (`skip:` in the recipe) and resumable: a finished stage leaves a marker
`output_dir/stages/<name>.json` holding the hash of its inputs (its config sections, stamps of its
input files, and the hashes of the stages it reads from). `stages.py` holds the stage table (what
each stage reads and writes) and the stage bodies; `runner.py` the rule that reuses, resumes or runs
a stage; `report.py` the run report.
"""

from __future__ import annotations

from pathlib import Path

from textcl.config import RunConfig, save_config
from textcl.errors import ConfigError
from textcl.paths import place_outputs
from textcl.pipeline.runner import Context, NotApplicable, Stage, file_stamp, resume_rule, run_stage
from textcl.pipeline.stages import STAGE_NAMES, STAGES
from textcl.preflight import check_recipe

__all__ = ["STAGES", "STAGE_NAMES", "Context", "NotApplicable", "Stage", "file_stamp", "resume_rule", "run_pipeline",
           "run_stage"]


def run_pipeline(config: RunConfig, *, recipe: str | None = None, force: list[str] | None = None) -> dict:
    """Run every stage of a recipe; return the summary (also written to output_dir/summary.json)."""
    unknown = sorted(set(config.skip) - set(STAGE_NAMES))
    if unknown:
        raise ConfigError(f"skip: unknown stage(s) {unknown}; valid stages: {', '.join(STAGE_NAMES)}")
    bad_force = sorted(set(force or []) - set(STAGE_NAMES) - {"all"})
    if bad_force:
        raise ConfigError(f"--force: unknown stage(s) {bad_force}; valid stages: {', '.join(STAGE_NAMES)}, all")
    config = place_outputs(config)
    skip = set(config.skip)
    check_recipe(config, training="train" not in skip, evaluating=not {"eval_base", "eval_tuned"} <= skip)
    ctx = Context(config=config, out=Path(config.output_dir), recipe=recipe)
    ctx.out.mkdir(parents=True, exist_ok=True)
    save_config(config, ctx.out / "config.yaml")
    forced = set(STAGE_NAMES) if "all" in (force or []) else set(force or [])
    forced.add("report")  # cheap, and its stage table must describe this run
    for stage in STAGES:
        run_stage(ctx, stage, skip, force=stage.name in forced)
    return ctx.results.get("report") or {"stages": ctx.status}
