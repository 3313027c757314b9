"""Ranking metrics equal pytrec_eval (trec_eval) within 1e-6; correlations equal scipy."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textcl.eval.metrics import (
    evaluate_run,
    is_primary,
    mean_metrics,
    pearson,
    query_metrics,
    rank_run,
    rankdata,
    spearman,
)

pytrec_eval = pytest.importorskip("pytrec_eval")

EXAMPLES = int(os.environ.get("TEXTCL_FUZZ_EXAMPLES", "150"))
IDS = [f"d{i}" for i in range(12)] + ["q0", "q1", "q2", "10", "9", "D1"]  # "q*" are also query ids: self-ids
QIDS = ["q0", "q1", "q2", "q3"]
SCORES = st.sampled_from([0.0, 0.1, 0.5, 0.5000001, 1.0, -0.3, 2.0])  # few values: many ties

qrels_st = st.dictionaries(st.sampled_from(QIDS), st.dictionaries(st.sampled_from(IDS), st.integers(-1, 3),
                                                                    max_size=8), max_size=4)
run_st = st.dictionaries(st.sampled_from(QIDS), st.dictionaries(st.sampled_from(IDS), SCORES, max_size=14),
                         max_size=4)
k_st = st.lists(st.sampled_from([1, 2, 3, 5, 10, 20]), min_size=1, max_size=4, unique=True)

PYTREC_NAME = {"ndcg": "ndcg_cut_{k}", "map": "map_cut_{k}", "recall": "recall_{k}", "precision": "P_{k}"}


def pytrec(qrels, run, k_values):
    ks = ",".join(str(k) for k in k_values)
    measures = {f"ndcg_cut.{ks}", f"map_cut.{ks}", f"recall.{ks}", f"P.{ks}", "recip_rank"}
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(qrels=qrels_st, run=run_st, k_values=k_st)
def test_metrics_equal_pytrec_eval(qrels, run, k_values):
    ours = evaluate_run(qrels, run, k_values)
    ref = pytrec(qrels, run, k_values)
    assert set(ours) == set(ref)  # same evaluated queries (empty runs in, missing runs / empty qrels out)
    for qid, metrics in ref.items():
        for k in k_values:
            for name, ref_name in PYTREC_NAME.items():
                assert ours[qid][f"{name}@{k}"] == pytest.approx(metrics[ref_name.format(k=k)], abs=1e-6), \
                    (qid, name, k)
        # recip_rank has no cut in trec_eval: equal to mrr@k once k covers the whole run
        big = max(len(run[qid]), 1)
        assert query_metrics(qrels[qid], run[qid], [big])[f"mrr@{big}"] == pytest.approx(
            metrics["recip_rank"], abs=1e-9)
    means = mean_metrics(ours)
    for k in k_values:
        if ref:
            expected = sum(m[f"ndcg_cut_{k}"] for m in ref.values()) / len(ref)
            assert means[f"ndcg@{k}"] == pytest.approx(expected, abs=1e-9)


@settings(max_examples=EXAMPLES, deadline=None)
@given(run=st.dictionaries(st.sampled_from(IDS), SCORES, min_size=1, max_size=14))
def test_rank_order_equals_trec_eval(run):
    """Marking one document relevant, trec_eval's recip_rank reveals its rank: ours must agree."""
    ranked = rank_run(run)
    for pos, doc in enumerate(ranked, start=1):
        ref = pytrec_eval.RelevanceEvaluator({"q": {doc: 1}}, {"recip_rank"}).evaluate({"q": run})
        assert ref["q"]["recip_rank"] == pytest.approx(1.0 / pos)


def test_hand_checked_example():
    qrels = {"q1": {"d1": 2, "d2": 1, "d3": 0, "d9": -1}}
    run = {"q1": {"d1": 0.5, "d2": 0.5, "d3": 0.9, "d9": 0.95, "d4": 0.1}}
    m = evaluate_run(qrels, run, [2, 3, 10])["q1"]
    assert rank_run(run["q1"]) == ["d9", "d3", "d2", "d1", "d4"]  # tie d1/d2: larger id first
    assert m["ndcg@3"] == pytest.approx((1 / np.log2(4)) / (2 + 1 / np.log2(3)))
    assert m["mrr@10"] == pytest.approx(1 / 3)
    assert m["map@10"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert m["precision@3"] == pytest.approx(1 / 3)
    assert m["recall@3"] == pytest.approx(0.5)
    assert m["mrr@2"] == 0.0


def test_query_without_run_is_absent_and_empty_run_scores_zero():
    qrels = {"a": {"x": 1}, "b": {"x": 1}, "c": {}}
    out = evaluate_run(qrels, {"a": {}, "c": {"x": 1.0}, "zz": {"x": 1.0}}, [10])
    assert set(out) == {"a"} and out["a"]["ndcg@10"] == 0.0


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.floats(-5, 5, allow_nan=False, width=32)), min_size=3,
                max_size=40))
def test_correlations_equal_scipy(pairs):
    stats = pytest.importorskip("scipy.stats")
    x = np.array([p[0] for p in pairs], dtype=float)
    y = np.array([p[1] for p in pairs], dtype=float)
    np.testing.assert_allclose(rankdata(y), stats.rankdata(y))
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        assert np.isnan(spearman(x, y)) and np.isnan(pearson(x, y))
        return
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-9)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-9)


def test_is_primary_names_one_metric_per_task():
    assert is_primary("nfcorpus/ndcg@10") and is_primary("dev/stsb/spearman_cosine") and is_primary("ndcg@10")
    assert not is_primary("nfcorpus/ndcg@100") and not is_primary("nfcorpus/mrr@10")
    assert not is_primary("stsbenchmark/spearman_cosine_query_document")
