"""Distributed mining: 2 gloo processes on CPU give byte-identical output to one process (tiny model)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from beir_fixture import write_beir
from gloo_workers import start_workers

from textcl.config import MiningConfig
from textcl.data.io import load_beir
from textcl.mine import mine, write_mined

WORLD = 2
CONFIGS = {"exact": {}, "ivf": {"factory": "IVF4,Flat|nprobe=2"}}


def _cfg(**kw) -> MiningConfig:
    return MiningConfig(num_negatives=3, depth=20, query_chunk_size=8, corpus_chunk_size=16, sampling="random",
                        relative_margin=None, absolute_margin=0.0,
                        recall_check_queries=10, **kw)


def _mine_all(beir: str, model_path: str, out_dir: str) -> None:
    from textcl.models import Encoder, load_model
    enc = Encoder(load_model(model_path, device="cpu"), precision="fp32", batch_size=8, show_progress=False)
    rset = load_beir(beir, "train")
    for name, kw in CONFIGS.items():
        examples, stats = mine(rset, enc, _cfg(**kw), seed=11, progress=False)
        if int(os.environ.get("RANK", "0")) == 0:
            write_mined(examples, str(Path(out_dir) / f"{name}.jsonl"), stats.provenance)


def _worker(rank: int, init_file: str, beir: str, model_path: str, out_dir: str) -> None:
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    os.environ["RANK"] = str(rank)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        _mine_all(beir, model_path, out_dir)
    finally:
        dist.destroy_process_group()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_gloo_ranks_match_one_process(tmp_path, tiny_model_path):
    import torch
    beir = write_beir(tmp_path / "beir")
    single, multi = tmp_path / "single", tmp_path / "multi"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same thread count as the workers: bitwise-equal matmuls
    try:
        _mine_all(str(beir), str(tiny_model_path), str(single))
    finally:
        torch.set_num_threads(threads)
    ctx = start_workers(_worker, (str(tmp_path / "init"), str(beir), str(tiny_model_path), str(multi)), WORLD)
    while not ctx.join(timeout=120):
        pass
    for name in CONFIGS:
        a, b = single / f"{name}.jsonl", multi / f"{name}.jsonl"
        assert _digest(a) == _digest(b), name
        assert _digest(Path(f"{a}.provenance.json")) == _digest(Path(f"{b}.provenance.json"))
        rows = [json.loads(line) for line in a.read_text().splitlines()]
        assert len(rows) == 24 and all(set(r.get("negative_ids", [])).isdisjoint(r["positive_ids"]) for r in rows)
        assert sum(len(r["negatives"]) for r in rows) > 24
        assert "d5" not in next(r for r in rows if r["query_id"] == "q0").get("negative_ids", [])


@pytest.mark.parametrize("world", [1, 3])
def test_block_ownership_covers_every_block_once(world):
    from textcl.mine.search import _blocks
    blocks = _blocks(100, 16)
    owned = [b for r in range(world) for b in blocks[r::world]]
    assert sorted(owned) == blocks and blocks[-1] == (96, 100)
