"""bench/bench_fast_peer.py: the budget callback stops training in time; one row end to end on the tiny BERT."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_fast_peer as bfp  # noqa: E402
from beir_fixture import write_beir  # noqa: E402


def test_budget_callback_stops_before_the_next_step_would_pass_the_deadline():
    cb = bfp.BudgetCallback(deadline=time.perf_counter() + 10.0)
    control = SimpleNamespace(should_training_stop=False)
    cb.last = time.perf_counter() - 1.0  # a 1 s step: 9 s left, room for another
    cb.on_step_end(None, None, control)
    assert not control.should_training_stop
    cb.last = time.perf_counter() - 6.0  # a 6 s step now would end past the deadline
    cb.deadline = time.perf_counter() + 5.0
    cb.on_step_end(None, None, control)
    assert control.should_training_stop and cb.stopped_by_budget


def test_cpu_clock_budget_counts_this_process_cpu_seconds_not_sleep():
    cb = bfp.BudgetCallback(deadline=bfp.CLOCKS["cpu"]() + 0.5, clock=bfp.CLOCKS["cpu"])
    control = SimpleNamespace(should_training_stop=False)
    cb.on_train_begin(None, None, control)
    time.sleep(1.0)  # a second of wall time that costs no CPU: still inside a 0.5 CPU-second budget
    cb.on_step_end(None, None, control)
    assert not control.should_training_stop
    end = time.process_time() + 0.6
    while time.process_time() < end:  # burn 0.6 CPU seconds: the next step would pass the deadline
        pass
    cb.on_step_end(None, None, control)
    assert control.should_training_stop and cb.stopped_by_budget


def test_one_row_mines_trains_and_scores_on_a_tiny_beir_folder(tmp_path, tiny_model_path):
    folder = write_beir(tmp_path / "beir", n_docs=60, n_queries=40)
    shutil.copy(folder / "qrels" / "train.tsv", folder / "qrels" / "test.tsv")
    data = bfp.load_data(folder, seed=1, quick=False)
    assert len(data.pairs) == 40 and len(data.corpus) == 60
    assert all(p in data.train_positives[a] for a, p in zip(data.pairs["anchor"], data.pairs["positive"]))
    args = argparse.Namespace(model=str(tiny_model_path), output_format="triplet", budget_s=60.0, loss="mnrl",
                              clock="cpu", max_steps=2, work=tmp_path / "work", quick=False)
    rec = bfp.run_row("st-documented", 1, data, args)
    assert rec["steps"] == 2 and not rec["stopped_by_budget"] and 0 < rec["budget_used_s"] < 60
    assert rec["test_queries"] == 40
    # the recorded score is the saved model's, by the evaluator the section names (recomputed independently)
    saved = bfp.SentenceTransformer(str(tmp_path / "work" / "st-documented-s1" / "model"), device="cpu")
    assert rec["ndcg@10"] == round(bfp.ndcg10(saved, data.test), 4)
    assert rec["mining"]["range_min"] == 10 and rec["mining"]["num_negatives"] == 5
    assert rec["mining"]["negatives"] == rec["mining"]["rows"]  # triplets: one negative per mined row
    model = bfp.SentenceTransformer(str(tiny_model_path), device="cpu").train()  # as the Trainer leaves it
    assert bfp.ndcg10(model, data.test) == bfp.ndcg10(model, data.test) and not model.training  # no dropout
    assert "| st-documented | 1 |" in "\n".join(bfp.summary([{**rec, "base_ndcg@10": 1.0}]))


def test_false_negatives_counts_mined_negatives_that_are_train_positives_of_their_query():
    """Worked by hand: q1's positives are {a, b}; of its negatives b is a train positive, c is not; q2's x is
    not one of q2's positives ({y}); 'a' mined for q2 is q1's positive, not q2's: 1 of 4."""
    mined = bfp.Dataset.from_dict({"anchor": ["q1", "q1", "q2", "q2"], "positive": ["a", "a", "y", "y"],
                                   "negative": ["b", "c", "x", "a"]})
    positives = {"q1": {"a", "b"}, "q2": {"y"}}
    assert bfp.false_negatives(mined, positives) == (1, 4)
    two_cols = bfp.Dataset.from_dict({"anchor": ["q1"], "positive": ["a"], "negative_1": ["b"], "negative_2": ["a"]})
    assert bfp.false_negatives(two_cols, positives) == (2, 2)
