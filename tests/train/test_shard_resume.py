"""train.corpus_shard in the training loop: 2 gloo processes under torchrun, each holding its rows of a 41-row
corpus (21 + 20: uneven), and a run stopped after step 3 then resumed ends bitwise equal to an uninterrupted one
(each rank resumes its own RNG states: its dropout)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer
from test_query_side import write_graded_beir
from test_train_distributed import _free_port

CHILD = Path(__file__).parent / "shard_child.py"


@pytest.mark.slow  # ~40-80 s: three training runs under torchrun
def test_sharded_resume_is_bitwise_equal_to_an_uninterrupted_run(tiny_model_path, tmp_path):
    beir = write_graded_beir(tmp_path / "beir", n_docs=41)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(CHILD), str(tiny_model_path), str(beir), str(tmp_path / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0 rows 0-21 of 41" in proc.stdout and "rank 1 rows 21-41 of 41" in proc.stdout
    # the main process's history (the one a checkpoint carries): the resumed run's equals the uninterrupted run's
    straight, resumed = next(x for x in proc.stdout.splitlines() if x.startswith("rank 0 losses")).split("] [")
    assert straight.removeprefix("rank 0 losses ") + "]" == "[" + resumed, proc.stdout
    a, b = (SentenceTransformer(str(tmp_path / "out" / x), device="cpu").state_dict() for x in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
