"""Start the worker processes of a multi-process (gloo) test. A fresh interpreter spends ~7 s of CPU importing
torch, sentence-transformers and textcl before it runs a line of the test; with a forkserver that has imported
them once (per pytest process), each worker is a fork of it instead. Not a fork of pytest itself: the server is
a clean process that never ran a computation (no OpenMP pool, tokenizer threads or process group to inherit)."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable

import pytest
import torch.multiprocessing as mp

# What every worker imports anyway; a name that fails to import is skipped by the server.
PRELOAD = ["torch", "torch.distributed", "sentence_transformers", "textcl.train.loop", "textcl.mine"]


def start_workers(fn: Callable, args: tuple, nprocs: int) -> mp.ProcessContext:
    """`fn(rank, *args)` in `nprocs` new processes (torch.multiprocessing's context: join(timeout) and errors)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():  # Windows
        return mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    multiprocessing.set_forkserver_preload(PRELOAD)  # read when the server starts: the first call of a process
    return mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="forkserver")


def run_workers(fn: Callable, args: tuple, nprocs: int, timeout_s: float) -> None:
    """`start_workers`, then wait for every worker (a worker's error is raised here); after `timeout_s` the
    workers are killed and the test fails as a hang."""
    ctx = start_workers(fn, args, nprocs)
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{nprocs}-process run did not finish in {timeout_s}s (hang)")

