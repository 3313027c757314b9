"""Data-diversity report on a set with planted exact duplicates, near-duplicates and shared positives."""

from __future__ import annotations

import pytest

from textcl.data.diversity import diversity_report, duplicate_key, expected_collisions_per_batch
from textcl.types import Example

KEYWORDS = ["cat", "dog", "car", "tree", "river", "music", "book", "coffee", "tea", "milk"]


def _planted() -> list[Example]:
    rows = [Example(f"q{i} {KEYWORDS[i]}", (f"doc about {KEYWORDS[i]} number {i}",)) for i in range(10)]
    rows += [Example("Q0  CAT!", ("Doc about cat, number 0",))]  # exact duplicate of row 0 after normalising
    rows += [Example("q0 cat", ("doc about cat number 0",))]  # exact duplicate as is
    rows += [Example("another question", (rows[3].positives[0],))]  # shares the positive of row 3
    rows += [Example("q1 dog again", ("doc about dog number 1 (updated)",))]  # near-duplicate of row 1
    return rows


def test_counts_duplicates_and_shared_positives(keyword_encoder):
    r = diversity_report(_planted(), batch_size=4, encode=keyword_encoder(KEYWORDS), near_duplicate_threshold=0.95,
                         sources=["a"] * 13 + ["b"])
    assert r["examples"] == 14
    assert r["exact_duplicate_pairs"] == 2
    assert r["exact_duplicate_queries"] == 2
    assert r["unique_queries"] == 12 and r["unique_positives"] == 11
    # Row 0 + its two duplicates share one positive (3), rows 3 and 12 share another (2).
    assert r["queries_sharing_positives"] == 5 and r["max_queries_per_positive"] == 3
    assert r["sources"] == {"a": 13, "b": 1}
    nd = r["near_duplicates"]
    # Distinct raw positives: 10 + "Doc about cat, number 0" + the updated dog doc. The keyword encoder
    # embeds the updated dog doc exactly like row 1's positive: one near-duplicate pair.
    assert nd["threshold"] == 0.95 and nd["positive"]["checked"] == 12
    assert nd["positive"]["pairs"] == 1 and nd["positive"]["texts_involved"] == 2
    assert nd["positive"]["examples"][0][:2] == ["doc about dog number 1", "doc about dog number 1 (updated)"]
    # Queries: "q1 dog" ~ "q1 dog again", and "Q0  CAT!" ~ "another question" (no keyword: same vector).
    assert nd["query"]["pairs"] == 2
    assert r["length_words"]["query"] == {"min": 2, "p50": 2, "p90": 2, "p99": 2.9, "max": 3, "mean": 2.07}


def test_warnings_name_the_problem(keyword_encoder):
    rows = [Example(f"query {i % 3}", (f"positive {i % 2}",)) for i in range(40)]
    r = diversity_report(rows, batch_size=16, encode=keyword_encoder(KEYWORDS))
    text = "\n".join(r["warnings"])
    assert "small set: 40 examples give only 2 full batches of 16" in text
    assert "repetitive: 34 exact duplicate (query, positive) pairs" in text
    assert "share a positive: in-batch negatives will contain false negatives" in text
    assert "about 58.5 pairs per batch of 16 share a positive" in text  # 2 * C(20, 2) * (16 * 15) / (40 * 39)
    # No keyword in any text: the mock encoder gives every text the same vector -> all near-duplicates.
    assert "repetitive: 100.0% of distinct query texts have a near-duplicate (cosine >= 0.95)" in text
    assert r["near_duplicates"]["query"]["pairs"] == 3 and r["near_duplicates"]["positive"]["pairs"] == 1


def test_clean_large_set_has_no_warnings():
    rows = [Example(f"question number {i}", (f"answer text {i}",)) for i in range(2000)]
    r = diversity_report(rows, batch_size=32)
    assert r["warnings"] == []
    assert "near_duplicates" not in r  # no encoder given


def test_expected_collisions_formula():
    # 4 items, one pair sharing a positive, batch 2: P(both in the batch) = 1 / C(4, 2).
    assert expected_collisions_per_batch([2, 1, 1], 4, 2) == pytest.approx(1 / 6)
    assert expected_collisions_per_batch([1] * 10, 10, 5) == 0.0


@pytest.mark.parametrize("text, key", [
    ("  Héllo,   WORLD! ", "hello world"),  # case, accents, punctuation and spaces folded
    ("Как дела?", "как дела"), ("  ПРИВЕТ,  мир! ", "привет мир"), ("Йод и иод", "йод и иод"),  # Cyrillic
    ("你好，世界！", "你好 世界"), ("東京タワー２０２４", "東京タワー2024"),  # CJK, full-width digits (NFKC)
    ("مرحبا بالعالم؟", "مرحبا بالعالم"), ("١٢٣ كتاب", "١٢٣ كتاب"),  # Arabic letters and digits
    ("Crème Brûlée — Straße", "creme brulee strasse"), ("Ἀθῆναι", "αθηναι"),  # accents dropped
    ("हिन्दी भाषा", "हिन्दी भाषा"),  # Devanagari vowel signs are part of the word, not accents
])
def test_duplicate_key_keeps_every_script(text, key):
    assert duplicate_key(text) == key


def test_non_latin_rows_are_not_duplicates():
    rows = [Example(q, (p,)) for q, p in [("Как дела?", "Хорошо"), ("Где вокзал?", "Налево"),
                                         ("你好吗？", "我很好"), ("كيف حالك؟", "بخير"), ("Où est la gare ?", "À gauche")]]
    r = diversity_report(rows, batch_size=2)
    assert (r["exact_duplicate_queries"], r["exact_duplicate_pairs"], r["unique_positives"]) == (0, 0, 5), r


def test_truncation_is_counted_and_warned():
    """Length truncation drops tokens: the report counts every planted over-long query and positive."""
    rows = [Example("short q", ("short doc",)), Example("long " * 30, ("short doc two",)),
            Example("q three", ("word " * 50,)), Example("q four", ("word " * 51,))]
    r = diversity_report(rows, batch_size=2, count_tokens=lambda texts: [len(t.split()) for t in texts],
                         max_seq_length=20)
    assert r["truncated_queries"] == 1 and r["truncated_positives"] == 2
    assert any("2 positives are longer than max_seq_length" in w for w in r["warnings"])
    assert any("1 queries are longer than max_seq_length" in w for w in r["warnings"])
