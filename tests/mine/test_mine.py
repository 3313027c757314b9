"""Hard-negative mining: false-negative safety, positive-aware margins with uneven multi-positive rows,
filter counts that add up, no lost rows, cross-encoder filter, determinism by output hash."""

from __future__ import annotations

import dataclasses
import hashlib
import logging

import numpy as np
import pytest

from textcl.config import MiningConfig
from textcl.errors import ConfigError
from textcl.mine import mine, write_mined
from textcl.mine.filters import OUTCOMES, margin_threshold, reference_scores
from textcl.mine.plan import plan_from_examples, plan_from_retrieval
from textcl.mine.sample import sample, select_negatives
from textcl.types import Document, Example, RetrievalSet

KEYWORDS = ["cat", "dog", "car", "tree", "river", "music", "book", "coffee"]


def _rset() -> RetrievalSet:
    corpus = {
        "p1": Document("", "cat dog river"),
        "p2": Document("", "cat dog tree"),
        "p3": Document("", "music book"),
        # injected copies of positives: exact, case, whitespace, NFKC (full-width) variants
        "dup_exact": Document("", "cat dog river"),
        "dup_case": Document("", "CAT Dog RIVER"),
        "dup_space": Document("", "  cat   dog\triver "),
        "dup_nfkc": Document("", "ｃａｔ dog river"),
        "query_copy": Document("", "Cat dog?"),
        "q2_pos_in_q1": Document("", "music book coffee"),
    }
    rng = np.random.default_rng(0)
    for i in range(40):
        corpus[f"n{i}"] = Document("", " ".join(rng.choice(KEYWORDS, size=3)) + f" x{i}")
    queries = {"q1": "Cat dog?", "q2": "music book"}
    qrels = {"q1": {"p1": 1, "p2": 2}, "q2": {"p3": 1, "q2_pos_in_q1": 1}}
    return RetrievalSet("toy", corpus, queries, qrels, split="train")


def _cfg(**kw) -> MiningConfig:
    base = {"num_negatives": 3, "depth": 20, "relative_margin": None}
    return MiningConfig(**{**base, **kw})


def test_no_positive_or_variant_or_query_copy_is_ever_a_negative(keyword_encoder):
    rset = _rset()
    enc = keyword_encoder(KEYWORDS)
    examples, stats = mine(rset, enc, _cfg(depth=len(rset.corpus)), seed=0, progress=False)
    banned = {"p1", "p2", "p3", "dup_exact", "dup_case", "dup_space", "dup_nfkc", "query_copy", "q2_pos_in_q1"}
    for ex in examples:
        assert not banned & set(ex.negative_ids), ex
        assert len(ex.negatives) == 3 and len(ex.negative_ids) == 3 and len(ex.scores) == 3
    o = stats.outcomes
    assert o["positive_id"] == 4  # both rows, whole corpus in the window
    # q1: 4 text variants of p1 + none for p2; the query copy; q2: none (its positives are ids)
    assert o["positive_text"] == 4 and o["query_text"] == 1
    assert stats.rows == 2 and stats.rows_without_negatives == 0


def test_filter_counts_add_up_to_the_candidate_total(keyword_encoder):
    rset = _rset()
    scorer = lambda pairs: np.array([0.9 if "coffee" in d else 0.1 for _, d in pairs])  # noqa: E731
    cfg = _cfg(depth=30, skip_top=2, relative_margin=0.05, max_score=0.95, cross_encoder_max_score=0.5)
    _, stats = mine(rset, keyword_encoder(KEYWORDS), cfg, seed=0, scorer=scorer, progress=False)
    assert stats.candidates == 2 * 30
    assert sum(stats.outcomes.values()) == stats.candidates
    assert set(stats.outcomes) == set(OUTCOMES)
    assert stats.outcomes["cross_encoder"] > 0 and stats.outcomes["margin"] > 0
    assert stats.provenance["stats"]["outcomes"] == stats.outcomes


def test_margin_reference_on_uneven_multi_positive_rows():
    # Three rows over one shared 8-doc corpus, with 1, 3 and 2 positives.
    docs = [f"doc {i}" for i in range(8)]
    ex = [Example("q0", (docs[0],)), Example("q1", (docs[1], docs[2], docs[3])), Example("q2", (docs[4], docs[5]))]
    plan = plan_from_examples(ex, extra_corpus=docs)
    pair_row, pair_q, pair_c = plan.pairs()
    assert pair_row.tolist() == [0, 1, 1, 1, 2, 2] and pair_c.tolist() == [0, 1, 2, 3, 4, 5]
    S = np.array([  # hand-built query x doc scores
        [0.90, 0.85, 0.80, 0.70, 0.60, 0.50, 0.40, 0.30],
        [0.88, 0.90, 0.40, 0.60, 0.86, 0.84, 0.30, 0.50],
        [0.95, 0.30, 0.70, 0.20, 0.50, 0.80, 0.78, 0.60],
    ], dtype=np.float32)
    idx = np.argsort(-S, axis=1, kind="stable")
    scores = np.take_along_axis(S, idx, 1)
    pair_scores = S[pair_q, pair_c]
    assert reference_scores(pair_row, pair_scores, 3, "max").tolist() == pytest.approx([0.9, 0.9, 0.8])
    assert reference_scores(pair_row, pair_scores, 3, "min").tolist() == pytest.approx([0.9, 0.4, 0.5])

    def run(reference: str) -> list[list[int]]:
        cfg = _cfg(depth=8, num_negatives=8, relative_margin=0.05, margin_reference=reference)
        chosen, counts = select_negatives(plan, scores, idx, pair_scores, cfg, np.random.default_rng(0))
        assert sum(counts[k] for k in OUTCOMES) == counts["candidates"] == 24
        return [[int(idx[plan.row_query[r], j]) for j in c] for r, c in enumerate(chosen)]

    # max: row0 < 0.855, row1 < 0.855 (best positive 0.90), row2 < 0.76 (best positive 0.80)
    assert run("max") == [[1, 2, 3, 4, 5, 6, 7], [5, 7, 6], [2, 7, 1, 3]]
    # min: row1 < 0.38 (weakest positive 0.40), row2 < 0.475 (weakest positive 0.50)
    assert run("min") == [[1, 2, 3, 4, 5, 6, 7], [6], [1, 3]]


def test_margin_threshold_formulas():
    assert margin_threshold(0.8, None, 0.05) == pytest.approx(0.76)
    assert margin_threshold(-0.2, None, 0.5) == pytest.approx(-0.3)
    assert margin_threshold(0.8, 0.1, 0.05) == pytest.approx(0.7)
    assert margin_threshold(0.8, None, None) == np.inf


def test_no_row_is_lost_when_every_candidate_is_filtered(keyword_encoder):
    rset = _rset()
    examples, stats = mine(rset, keyword_encoder(KEYWORDS), _cfg(max_score=-1.0), seed=0, progress=False)
    assert [e.query_id for e in examples] == ["q1", "q2"]
    assert all(e.positives and not e.negatives for e in examples)
    assert stats.rows_without_negatives == 2 and stats.outcomes["max_score"] > 0


def test_rows_per_pair_and_shared_positives_across_pair_rows(keyword_encoder):
    rset = _rset()
    examples, _ = mine(rset, keyword_encoder(KEYWORDS), _cfg(rows="pair", depth=49), seed=0, progress=False)
    assert [(e.query_id, e.positive_ids) for e in examples] == [
        ("q1", ("p1",)), ("q1", ("p2",)), ("q2", ("p3",)), ("q2", ("q2_pos_in_q1",))]
    for e in examples:
        assert not {"p1", "p2", "p3", "q2_pos_in_q1"} & set(e.negative_ids)
    # pair files: rows with the same query share known positives; existing negatives are kept first
    pairs = [Example("cat dog", ("cat dog river",)), Example("cat dog", ("cat dog tree",), ("car",))]
    out, stats = mine(pairs, keyword_encoder(KEYWORDS), _cfg(num_negatives=1), seed=0,
                      extra_corpus=["cat dog", "cat dog car", "CAT DOG TREE", "book"], progress=False)
    assert out[0].negatives == ("cat dog car",) and out[1].negatives == ("car", "cat dog car")
    assert stats.outcomes["positive_id"] == 4 and stats.outcomes["positive_text"] == 2
    assert stats.outcomes["query_text"] == 2


def test_random_sampling_uses_the_generator_and_keeps_rank_order():
    rng = np.random.default_rng(7)
    picks = sample(10, 3, "random", rng)
    assert picks == sorted(picks) and len(set(picks)) == 3
    assert sample(10, 3, "top", rng) == [0, 1, 2] and sample(2, 3, "top", rng) == [0, 1]


def _hash(examples, stats, path) -> str:
    write_mined(examples, str(path), stats.provenance)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_inputs_and_seed_give_byte_identical_output(keyword_encoder, tmp_path):
    rset = _rset()
    enc = keyword_encoder(KEYWORDS)
    cfg = _cfg(sampling="random", depth=40)
    h = [_hash(*mine(rset, enc, cfg, seed=s, progress=False), tmp_path / f"{i}.jsonl")
         for i, s in enumerate([3, 3, 4])]
    assert h[0] == h[1] and h[0] != h[2]
    prov = mine(rset, enc, cfg, seed=3, progress=False)[1].provenance
    assert set(prov) >= {"encoder", "factory", "seed", "data", "config", "stats"}
    assert prov["config"]["sampling"] == "random" and len(prov["data"]) == 64


def test_faiss_index_reports_recall(keyword_encoder, caplog):
    caplog.set_level(logging.INFO)
    rset = _rset()
    _, stats = mine(rset, keyword_encoder(KEYWORDS), _cfg(factory="HNSW8"), seed=0, progress=False)
    assert stats.recall == 1.0  # 9 documents, efSearch 128: the graph search is exhaustive
    assert "recall@20 vs exact search" in caplog.text


def test_cross_encoder_noop_settings_warn_loudly(keyword_encoder, caplog):
    rset = _rset()
    enc = keyword_encoder(KEYWORDS)
    _, stats = mine(rset, enc, _cfg(cross_encoder_max_score=2.0), seed=0,
                    scorer=lambda p: np.full(len(p), 0.5), progress=False)
    assert "CROSS-ENCODER FILTER IS A NO-OP" in caplog.text and stats.outcomes["cross_encoder"] == 0
    caplog.clear()
    mine(rset, enc, _cfg(cross_encoder_max_score=0.5), seed=0, progress=False)
    assert "no cross_encoder is given" in caplog.text
    # without max_score: reject candidates the cross-encoder ranks at least as high as a positive
    def scorer(pairs):
        return np.array([1.0 if "x1" in d.split() else 0.5 if d.startswith(("cat dog", "music book")) else 0.0
                         for _, d in pairs])

    ex, stats = mine(rset, enc, _cfg(depth=49, num_negatives=45), seed=0, scorer=scorer, progress=False)
    assert all("x1" not in n.split() for e in ex for n in e.negatives) and stats.outcomes["cross_encoder"] > 0


def test_bad_settings_are_config_errors(keyword_encoder):
    with pytest.raises(ConfigError, match="depth .* must be >= num_negatives"):
        mine(_rset(), keyword_encoder(KEYWORDS), _cfg(depth=2, num_negatives=3), seed=0)
    with pytest.raises(ConfigError, match="relative_margin must be in"):
        mine(_rset(), keyword_encoder(KEYWORDS), _cfg(relative_margin=1.5), seed=0)


def test_plan_skips_queries_without_positive_grade():
    rset = _rset()
    rset = dataclasses.replace(rset, queries={**rset.queries, "q3": "tree"}, qrels={**rset.qrels, "q3": {"p1": 0}})
    plan = plan_from_retrieval(rset)
    assert len(plan.rows) == 2 and plan.queries_without_positives == 1
