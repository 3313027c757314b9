"""Run by tests/train/test_train_distributed.py under torchrun (2 gloo processes); not a test itself.
Arguments: MODEL OUT_ROOT MODE=N [MODE=N ...]: one training run per MODE (into OUT_ROOT/MODE), one after
another in the same process group, so that one launch and one set of imports serve several runs."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from train_helpers import make_examples, tiny_config  # noqa: E402

from textcl import distributed  # noqa: E402
from textcl.errors import TrainingError  # noqa: E402
from textcl.train import loop  # noqa: E402
from textcl.train.finish import finish  # noqa: E402
from textcl.train.selection import mix_with_base  # noqa: E402


def run(model_path: str, out: Path, mode: str, n: int) -> None:
    def callback(event: dict) -> None:
        rank = distributed.rank()
        if mode == "fail" and rank == 1 and event["step"] == 2:
            raise TrainingError("rank 1 failed on purpose at step 2")
        digest = hashlib.sha256()
        for tensor in trainer.model.state_dict().values():
            digest.update(tensor.detach().numpy().tobytes())
        with open(out.parent / f"{out.name}-rank{rank}.txt", "a") as fh:
            fh.write(f"{event['step']} {digest.hexdigest()}\n")

    # GradCache with chunks of 1 query: several backward passes per step, all but the last under no_sync.
    extra = ["train.gradcache_chunk_size=1"] if mode == "uneven" else []
    dev = None
    if mode == "wise":  # dev at steps 0 and 5, then the 0.5 mix with the base wins (main process scores)
        scores = iter([0.1, 0.5, 0.7])
        dev = lambda encode: {"toy/ndcg@10": next(scores)}  # noqa: E731
        extra = ["train.eval_every=5", "train.interpolate_base=[0.5]"]
    config = tiny_config(model_path, out, "train.max_steps=5", "train.save_every=10", *extra)
    trainer = loop.set_up(config, make_examples(n), dev=dev)
    loop.fit(trainer, callbacks=[callback])
    mix_with_base(trainer)
    result = finish(trainer)
    print(f"{mode}: rank {distributed.rank()} steps {result.steps} after {result.after.get('dev')}", flush=True)


def main() -> None:
    model_path, root = sys.argv[1], Path(sys.argv[2])
    for spec in sys.argv[3:]:
        mode, n = spec.split("=")
        run(model_path, root / mode, mode, int(n))


if __name__ == "__main__":
    main()
