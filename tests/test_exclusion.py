"""The one exclusion rule: rows excluded for a query by known positive id, known positive text and the
query's own text, each with its reason, checked against hand-written expectations."""

from __future__ import annotations

from textcl.exclusion import REASONS, ExclusionIndex, KnownPositives


def test_exclusions_name_each_row_with_the_first_reason_that_applies():
    docs = ["Alpha beta", "alpha  BETA", "gamma", "the Query", "delta"]
    index = ExclusionIndex.of_documents(docs, ["d0", "d1", "d2", "d3", None])
    known = KnownPositives(ids=frozenset({"d2", "missing"}), texts=frozenset({"alpha beta", "gamma"}))
    assert index.exclusions(known, "THE  query") == {2: "positive_id", 0: "positive_text", 1: "positive_text",
                                                     3: "query_text"}
    assert index.excluded(known, "THE  query") == {0, 1, 2, 3}
    assert set(index.exclusions(known, "q").values()) <= set(REASONS)


def test_rows_given_as_positives_count_as_positive_id_and_nothing_known_excludes_only_the_query_text():
    index = ExclusionIndex.of_documents(["a", "b", "Q"])
    assert index.exclusions(KnownPositives(texts=frozenset({"a"})), "q", rows=[0]) == {0: "positive_id", 2: "query_text"}
    assert index.excluded(KnownPositives(), "q") == {2}
    assert index.excluded(KnownPositives(), "no such text") == set()


def test_a_row_keyed_by_many_ids_and_texts():
    index = ExclusionIndex()
    index.add(0, ids=["a", "b"], texts=["x"])
    index.add(1, ids=["b"])
    assert index.rows_of_id("b") == [0, 1]
    assert index.rows_of_id(None) == []
    assert index.rows_of_text("x") == [0]
    assert index.rows_of_text("y") == []
