"""Helpers for trainer tests: synthetic examples over the tiny model's vocabulary and a config builder."""

from __future__ import annotations

import random
from pathlib import Path

from safetensors.torch import load_file

from textcl.config import load_recipe
from textcl.types import Example

WORDS = ("cancer diet vitamin heart risk health study food sugar fat cell blood brain sleep exercise coffee "
         "tea milk meat fish fruit green red cat dog car tree house river music book").split()


def make_examples(n: int, seed: int = 0, negatives: int = 1) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        topic = rng.sample(WORDS, 3)
        out.append(Example(query=" ".join(topic), positives=(" ".join(topic + rng.sample(WORDS, 4)),),
                           negatives=tuple(" ".join(rng.sample(WORDS, 6)) for _ in range(negatives)),
                           query_id=f"q{i}", positive_ids=(f"d{i}",)))
    return out


def tiny_config(model_path: Path, out: Path, *extra: str):
    """fp32 (bitwise-reproducible on CPU), tiny batches, checkpoints every 2 steps."""
    return load_recipe(None, [f"model.name_or_path={model_path}", f"train.output_dir={out}",
                              "model.max_seq_length=32", "train.batch_size=4", "train.max_steps=6",
                              "train.precision=fp32", "train.lr=0.001", "train.save_every=2",
                              "train.log_every=1", "train.keep_checkpoints=3", *extra])


def weights(folder: Path) -> dict:
    return load_file(str(Path(folder) / "model.safetensors"))
