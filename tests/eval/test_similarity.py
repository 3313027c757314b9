"""Similarity samples behind the report's histograms: positives vs hardest and random negatives, and the
gold-score extremes of scored pairs, on hand-checkable keyword embeddings."""

from __future__ import annotations

import pytest

from textcl.eval.similarity import examples_as_retrieval, scored_pair_samples, similarity_samples
from textcl.types import Example, ScoredPair


def test_similarity_samples_for_histograms(keyword_encoder):
    enc = keyword_encoder(["cat", "dog", "car", "tree"])
    rows = [Example(f"{w} question", (f"{w} answer",)) for w in ("cat", "dog", "car", "tree")]
    sims = similarity_samples(enc, examples_as_retrieval(rows), seed=0)
    assert len(sims["positive"]) == 4 and len(sims["hardest negative"]) == 4 and len(sims["random negative"]) == 12
    assert min(sims["positive"]) > 0.99 and max(sims["hardest negative"]) < 0.01  # one keyword each
    pairs = [ScoredPair("cat", "cat", 5.0), ScoredPair("cat", "dog", 0.0), ScoredPair("dog", "dog", 4.0),
             ScoredPair("car", "tree", 1.0)]
    s = scored_pair_samples(enc, pairs)
    assert s["similar pairs (top 25% gold)"] == pytest.approx([1.0]) and s["dissimilar pairs (bottom 25% gold)"][0] < 0.01
