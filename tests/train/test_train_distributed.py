"""Two gloo processes under torchrun: uneven data never hangs, ranks stay in sync, a rank failure
ends the job with a clear error."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

CHILD = Path(__file__).parent / "dist_child.py"
SECONDS_PER_RUN = 90  # a hang would hit the timeout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tiny_model_path: Path, root: Path, *runs: str):
    """One torchrun job of 2 processes doing `runs` ("mode=n") in turn; outputs in root/mode."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(CHILD), str(tiny_model_path), str(root), *runs]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=(SECONDS_PER_RUN + 30) * len(runs))
    return proc, time.perf_counter() - start


@pytest.fixture(scope="module")
def finished(tiny_model_path, tmp_path_factory):
    """The two runs that must finish, in one job (the launch and the imports cost more than the runs):
    uneven data, then the WiSE mix."""
    root = tmp_path_factory.mktemp("torchrun")
    proc, seconds = _torchrun(tiny_model_path, root, "uneven=11", "wise=16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert seconds < 2 * SECONDS_PER_RUN, f"took {seconds:.0f}s"
    return root, proc.stdout


def test_uneven_data_two_processes_finish_in_sync(finished):
    # 11 examples, global batch 4: the epoch ends with a 3-query batch (shards of 2 and 1 queries);
    # GradCache on (chunk 1) so the no_sync path runs too.
    root, stdout = finished
    assert "uneven: rank 0 steps 5" in stdout and "uneven: rank 1 steps 5" in stdout
    rank0 = (root / "uneven-rank0.txt").read_text().splitlines()
    rank1 = (root / "uneven-rank1.txt").read_text().splitlines()
    assert len(rank0) == 5 and rank0 == rank1  # identical weights on both ranks after every step
    assert (root / "uneven" / "model.safetensors").is_file()


def test_interpolate_base_two_processes(finished, tiny_model_path):
    # Evaluation runs on rank 0 and is broadcast: both ranks try the mix and finish together.
    root, stdout = finished
    assert "wise: rank 0 steps 5 after {'toy/ndcg@10': 0.7}" in stdout
    assert "wise: rank 1 steps 5" in stdout
    base = load_file(str(tiny_model_path / "model.safetensors"))
    tuned = {k.split(".", 2)[2]: v for k, v in
             load_file(str(root / "wise" / "checkpoints" / "step-00000005" / "model.safetensors")).items()}
    for key, value in load_file(str(root / "wise" / "model.safetensors")).items():
        torch.testing.assert_close(value, 0.5 * tuned[key] + 0.5 * base[key], rtol=0, atol=1e-6)


def test_rank_failure_ends_the_job_with_a_clear_error(tiny_model_path, tmp_path):
    proc, seconds = _torchrun(tiny_model_path, tmp_path, "fail=16")
    assert proc.returncode != 0
    assert "rank 1 failed on purpose at step 2" in proc.stderr
    assert seconds < SECONDS_PER_RUN, f"took {seconds:.0f}s (a hang would hit the timeout)"
