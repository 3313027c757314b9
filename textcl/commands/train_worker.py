"""`python -m textcl.commands.train_worker CONFIG.yaml RESULT.json [--resume]`: one training process of the
pipeline's train stage under a launcher (textcl.pipeline.launch); rank 0 writes the result as JSON.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

from textcl.config import load_recipe
from textcl.train.loop import train


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    resume = "--resume" in argv[2:]
    result = train(load_recipe(argv[0]), resume=resume, overwrite=not resume)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(argv[1]).write_text(json.dumps(asdict(result), default=float) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
