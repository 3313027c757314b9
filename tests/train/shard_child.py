"""Run by tests/train/test_shard_resume.py under torchrun (2 gloo processes, train.corpus_shard): an uninterrupted
query-side run, and one stopped after step 3 then resumed; prints each rank's shard and both runs' losses."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from train_helpers import tiny_config  # noqa: E402

from textcl import distributed  # noqa: E402
from textcl.train import loop  # noqa: E402
from textcl.train.finish import finish  # noqa: E402


def run(model_path: str, beir: str, out: Path, stop_at: int | None = None, resume: bool = False) -> list[float]:
    config = tiny_config(Path(model_path), out, f"data.train={beir}", "data.format=beir", "mining.enabled=false",
                         "train.tune=query", "train.corpus_shard=true")
    trainer = loop.set_up(config, resume=resume)
    shard = trainer.corpus.shard
    print(f"rank {distributed.rank()} rows {shard.start}-{shard.stop} of {shard.size}", flush=True)
    loop.fit(trainer, callbacks=[lambda event: event["step"] == stop_at])
    result = finish(trainer)
    return [h["loss"] for h in result.history if "loss" in h]


def main() -> None:
    model_path, beir, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    straight = run(model_path, beir, out / "a")
    run(model_path, beir, out / "b", stop_at=3)
    resumed = run(model_path, beir, out / "b", resume=True)
    print(f"rank {distributed.rank()} losses {straight} {resumed}", flush=True)


if __name__ == "__main__":
    main()
