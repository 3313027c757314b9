"""STS evaluation on hand-checkable data (keyword encoder): correlations of every similarity, two
towers, the similarity functions themselves, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from textcl.errors import DataError
from textcl.eval.metrics import spearman
from textcl.eval.sts import evaluate_sts, similarity_scores
from textcl.models import RoutedEncoder
from textcl.types import ScoredPair

KEYWORDS = ["cat", "dog", "car", "tree", "river"]


def test_sts_correlations_equal_scipy_on_hand_computed_similarities(keyword_encoder):
    stats = pytest.importorskip("scipy.stats")
    enc = keyword_encoder(KEYWORDS)
    pairs = [ScoredPair("cat", "cat", 5.0), ScoredPair("cat dog", "cat", 3.0), ScoredPair("car", "tree", 0.0),
             ScoredPair("river tree dog", "tree", 2.5)]
    m = evaluate_sts(enc, pairs, "toy")
    a, b = enc([p.sentence1 for p in pairs]), enc([p.sentence2 for p in pairs])
    gold = [p.score for p in pairs]
    by_hand = {"cosine": [x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b)],
               "dot": [x @ y for x, y in zip(a, b)], "euclidean": [-np.linalg.norm(x - y) for x, y in zip(a, b)],
               "manhattan": [-np.abs(x - y).sum() for x, y in zip(a, b)]}
    assert {k for k in m} == {f"toy/{c}_{s}" for c in ("spearman", "pearson") for s in by_hand}
    for sim, scores in by_hand.items():
        assert m[f"toy/spearman_{sim}"] == pytest.approx(stats.spearmanr(gold, scores).statistic, abs=1e-6), sim
        assert m[f"toy/pearson_{sim}"] == pytest.approx(stats.pearsonr(gold, scores).statistic, abs=1e-6), sim
    assert m["toy/spearman_cosine"] == pytest.approx(1.0)


def test_sts_with_two_towers_uses_the_query_tower_and_reports_the_query_document_pairing(keyword_encoder):
    query_side = keyword_encoder(KEYWORDS)
    query_side.fingerprint = "q"

    class Reversed:  # a document tower that ranks pairs in the opposite order
        fingerprint = "d"

        def __call__(self, texts, role="document"):
            return query_side(["cat" if "cat" not in t else "car" for t in texts], role)

    pairs = [ScoredPair("cat", "cat", 5.0), ScoredPair("cat dog", "cat", 3.0), ScoredPair("car", "tree", 0.0),
             ScoredPair("river tree dog", "tree", 2.5)]
    plain = evaluate_sts(query_side, pairs, "toy")
    routed = evaluate_sts(RoutedEncoder(query_side, Reversed()), pairs, "toy")
    assert routed["toy/spearman_cosine"] == plain["toy/spearman_cosine"]  # both sentences: query tower
    assert "toy/spearman_cosine_query_document" not in plain
    # sentence1 by the query tower, sentence2 by the document tower: cos(q(s1), d(s2)) by hand
    a = query_side([p.sentence1 for p in pairs])
    b = Reversed()([p.sentence2 for p in pairs])
    expect = spearman(np.array([p.score for p in pairs]), (a * b).sum(axis=1))
    assert routed["toy/spearman_cosine_query_document"] == pytest.approx(expect)


def test_similarity_scores_signs():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[1.0, 0.0], [1.0, 0.0]])
    s = similarity_scores(a, b)
    np.testing.assert_allclose(s["cosine"], [1.0, 0.0])
    np.testing.assert_allclose(s["dot"], [1.0, 0.0])
    np.testing.assert_allclose(s["euclidean"], [0.0, -np.sqrt(5)])
    np.testing.assert_allclose(s["manhattan"], [0.0, -3.0])


def test_empty_sts_set_is_an_error(keyword_encoder):
    with pytest.raises(DataError, match="no pairs"):
        evaluate_sts(keyword_encoder(KEYWORDS), [], "x")
