"""bench/bench_peer.py: every positive is a row, the peer keeps its best dev checkpoint, and the table is computed
from the records (worked by hand)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_peer as bp  # noqa: E402
from beir_fixture import write_beir  # noqa: E402

from textcl.data.io import load_beir  # noqa: E402


def test_every_train_positive_is_its_own_row(tmp_path):
    folder = write_beir(tmp_path / "beir", n_docs=40, n_queries=10)
    train = load_beir(folder, "train")
    pairs = bp.train_pairs(folder)
    assert len(pairs) == sum(len(train.positives(q)) for q in train.qrels)
    assert {(a, p) for a, p in zip(pairs["anchor"], pairs["positive"])} == {
        (train.queries[q], train.corpus[d].full_text) for q in train.qrels for d in train.positives(q)}


def test_peer_keeps_the_checkpoint_with_the_best_dev_score(tmp_path, tiny_model_path):
    folder = write_beir(tmp_path / "beir", n_docs=90, n_queries=40)
    shutil.copy(folder / "qrels" / "train.tsv", folder / "qrels" / "dev.tsv")
    pairs = bp.train_pairs(folder)
    corpus = [d.full_text for d in load_beir(folder, "train").corpus.values()]
    # the tiny random BERT scores every pair alike, so the documented max_score drops all its mined negatives:
    # triplets by hand instead (the mining call itself is sentence-transformers')
    mined = pairs.add_column("negative", [corpus[(7 * i) % len(corpus)] for i in range(len(pairs))])
    model, row = bp.train_peer(mined, str(tiny_model_path), 1e-3, 1, 6, False, folder, tmp_path / "work", batch_size=4)
    assert row["steps"] == 6 and [s for s, _ in row["dev_by_step"]] == [2, 4, 6]
    best_step, best = max(row["dev_by_step"], key=lambda x: x[1])
    assert row["dev_best"] == best and row["best_checkpoint"] == f"checkpoint-{best_step}"
    again = bp.dev_evaluator(folder, False)(model)  # the returned model is the kept checkpoint's
    assert abs(again[f"{bp.DEV_NAME}_cosine_ndcg@10"] - best) < 1e-6
    assert not (tmp_path / "work").exists()  # checkpoints removed once the best one is loaded


def _records() -> list[dict]:
    probe = {"kind": "probe", "seed": 42, "budget_s": 300.0, "step_s": 2.5, "steps": 99, "mining_s": 50.0,
             "pairs": 10, "rows": 50, "negatives": 50, "negatives_that_are_train_positives": 0, "precision": "fp32"}
    rows = [{"kind": "base", "seed": 0, "test": 30.0}, probe]  # test in points (x100), dev as fractions
    for seed, ours in ((42, 35.0), (1, 36.0), (2, 34.0)):
        rows.append({"kind": "textcl", "seed": seed, "test": ours, "dev_best": 0.31, "wall_s": 300.0})
    for lr, dev, test in ((2e-5, 0.30, 31.0), (5e-5, 0.32, 33.0), (1e-4, 0.31, 34.0), (2e-4, 0.29, 30.0)):
        rows.append({"kind": "peer", "seed": 42, "lr": lr, "dev_by_step": [[33, dev]], "dev_best": dev,
                     "test": test, "train_s": 200.0, "dev_eval_s": 30.0})
    rows += [{"kind": "peer", "seed": 1, "lr": 5e-5, "dev_by_step": [[33, 0.3]], "dev_best": 0.3, "test": 32.0,
              "train_s": 1.0, "dev_eval_s": 1.0},
             {"kind": "peer", "seed": 2, "lr": 5e-5, "dev_by_step": [[33, 0.3]], "dev_best": 0.3, "test": 35.0,
              "train_s": 1.0, "dev_eval_s": 1.0}]
    return rows


def test_table_picks_the_peer_lr_on_dev_not_test_and_differences_per_seed():
    text = "\n".join(bp.table(_records()))
    # dev picks 5e-5 (0.32) although 1e-4 has the better test score
    assert "Side by side (peer at lr 5e-05;" in text
    # per seed textcl - peer: 42: 35-33 = +2.00, 1: 36-32 = +4.00, 2: 34-35 = -1.00; mean 1.67, std 2.52
    assert "| 42 | 35.00 | 31.00 | 300 | 33.00 | 32.00 | +2.00 |" in text
    assert "| 2 | 34.00 | 31.00 | 300 | 35.00 | 30.00 | -1.00 |" in text
    assert "textcl - peer 1.67 ± 2.52 (per-seed differences; smallest -1.00)" in text


def test_a_textcl_run_of_the_recipe_as_it_is_today_replaces_an_older_one_side_by_side(monkeypatch):
    monkeypatch.setattr(bp, "SCOPE", "labelled")
    rows = _records()  # textcl's runs from before the recipe set corpus_scope (no key): shown, with a note
    assert "| 42 | 35.00 | 31.00 | 300 | 33.00 | 32.00 | +2.00 |" in bp.table(rows)
    assert any("trained with `train.corpus_scope: all`" in line for line in bp.table(rows))
    old42 = next(r for r in rows if r["kind"] == "textcl" and r["seed"] == 42)
    rows.append({**old42, "test": 36.0, "corpus_scope": "labelled"})  # seed 42 again with today's recipe
    text = "\n".join(bp.table(rows))
    assert "| 42 | 36.00 | 31.00 | 300 | 33.00 | 32.00 | +3.00 |" in text
    assert "2 of the 3 runs here trained with `train.corpus_scope: all`" in text


def test_table_says_when_the_search_is_incomplete():
    rows = [r for r in _records() if not (r["kind"] == "peer" and r["lr"] == 2e-4)]
    assert "Search incomplete: 3 of 4 learning rates recorded." in "\n".join(bp.table(rows))


def test_peer_on_a_split_trains_on_its_train_qrels_and_scores_its_test_qrels(tmp_path, tiny_model_path):
    folder = write_beir(tmp_path / "beir", n_docs=90, n_queries=40)
    lines = (folder / "qrels" / "train.tsv").read_text().splitlines()
    (folder / "qrels" / "dev.tsv").write_text("\n".join(lines[:1] + lines[-30:]) + "\n")
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines[:1] + lines[-60:-30]) + "\n")
    (folder / "qrels" / "train.tsv").write_text("\n".join(lines[:-60]) + "\n")
    seen = []

    def hand_mined(pairs, model_path, corpus, seed):  # the tiny random BERT mines nothing (see above)
        seen.append((len(pairs), len(corpus), seed))
        return pairs.add_column("negative", [corpus[(7 * i) % len(corpus)] for i in range(len(pairs))]), 0.5

    row = bp.peer_on_split(folder, 3, str(tiny_model_path), 1e-3, 6, False, tmp_path / "work" / "run",
                           mine_fn=hand_mined, batch_size=4)
    train = load_beir(folder, "train")
    assert seen == [(sum(len(train.positives(q)) for q in train.qrels), 90, 3)]
    assert row["train_queries"] == len({train.queries[q] for q in train.qrels}) and row["steps"] == 6
    base = bp.new_model(str(tiny_model_path))
    for split in ("test", "dev"):  # fractions, by the one evaluator, on the split's own qrels
        assert row[f"base_{split}"] == bp.ndcg10(base, load_beir(folder, split)) / 100
    assert row["best_checkpoint"] in {"checkpoint-2", "checkpoint-4", "checkpoint-6"}  # dev-selected, 3 evaluations
    assert row["stages_total_s"] == round(0.5 + row["train_s"], 1)  # mining + training: the budgeted time
    assert (row["method"], row["seed"], row["lr"]) == ("peer", 3, 1e-3)
