"""Two gloo processes under torchrun: uneven data never hangs, ranks stay in sync, a rank failure
ends the job with a clear error."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

CHILD = Path(__file__).parent / "dist_child.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tiny_model_path: Path, out: Path, mode: str, n: int, timeout: int = 120):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(CHILD), str(tiny_model_path), str(out), mode, str(n)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - start


def test_uneven_data_two_processes_finish_in_sync(tiny_model_path, tmp_path):
    # 11 examples, global batch 4: the epoch ends with a 3-query batch (shards of 2 and 1 queries);
    # GradCache on (chunk 1) so the no_sync path runs too.
    proc, seconds = _torchrun(tiny_model_path, tmp_path / "out", "uneven", 11)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0 steps 5" in proc.stdout and "rank 1 steps 5" in proc.stdout
    rank0 = (tmp_path / "out-rank0.txt").read_text().splitlines()
    rank1 = (tmp_path / "out-rank1.txt").read_text().splitlines()
    assert len(rank0) == 5 and rank0 == rank1  # identical weights on both ranks after every step
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert seconds < 90, f"took {seconds:.0f}s"


def test_interpolate_base_two_processes(tiny_model_path, tmp_path):
    # Evaluation runs on rank 0 and is broadcast: both ranks try the mix and finish together.
    proc, seconds = _torchrun(tiny_model_path, tmp_path / "out", "wise", 16)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0 steps 5 after {'toy/ndcg@10': 0.7}" in proc.stdout
    assert "rank 1 steps 5" in proc.stdout
    base = load_file(str(tiny_model_path / "model.safetensors"))
    tuned = {k.split(".", 2)[2]: v for k, v in
             load_file(str(tmp_path / "out" / "checkpoints" / "step-00000005" / "model.safetensors")).items()}
    for key, value in load_file(str(tmp_path / "out" / "model.safetensors")).items():
        torch.testing.assert_close(value, 0.5 * tuned[key] + 0.5 * base[key], rtol=0, atol=1e-6)
    assert seconds < 90, f"took {seconds:.0f}s"


def test_rank_failure_ends_the_job_with_a_clear_error(tiny_model_path, tmp_path):
    proc, seconds = _torchrun(tiny_model_path, tmp_path / "out", "fail", 16)
    assert proc.returncode != 0
    assert "rank 1 failed on purpose at step 2" in proc.stderr
    assert seconds < 90, f"took {seconds:.0f}s (a hang would hit the timeout)"
