"""textcl.data.vectors: vector files round-trip, and bad files fail naming the file, the row (or line) and the field."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from textcl.data.vectors import read_judgements, read_vectors, vector_retrieval_set, write_vectors
from textcl.errors import DataError


@pytest.mark.parametrize("suffix", [".parquet", ".npy"])
def test_round_trip(tmp_path, suffix):
    m = np.arange(12, dtype=np.float32).reshape(4, 3)
    v = read_vectors(write_vectors(tmp_path / f"d{suffix}", ["a", "b", " c ", "d"], m))
    assert v.ids == ["a", "b", "c", "d"] and np.array_equal(v.matrix, m) and v.row["c"] == 2 and v.dim == 3


def _parquet(path, ids, vectors):
    pq.write_table(pa.table({"id": ids, "vector": vectors}), path)
    return path


@pytest.mark.parametrize("ids, vectors, message", [
    (["a", "b", "c"], [[1.0, 2.0], [1.0], [3.0, 4.0]], r"d.parquet row 2 field 'vector': 1 values, expected 2 \(as row 1\)"),
    (["a", "a"], [[1.0, 2.0], [3.0, 4.0]], r"d.parquet row 2 field 'id': duplicate id 'a' \(first at row 1\)"),
    (["a", ""], [[1.0, 2.0], [3.0, 4.0]], r"d.parquet row 2 field 'id': empty id"),
    (["a", "b"], [[1.0, 2.0], None], r"d.parquet row 2 field 'vector': missing vector"),
    (["a", "b"], [[1.0, 2.0], [float("nan"), 1.0]], r"d.parquet row 2 field 'vector': NaN or infinite value"),
])
def test_bad_parquet_names_file_row_and_field(tmp_path, ids, vectors, message):
    with pytest.raises(DataError, match=message):
        read_vectors(_parquet(tmp_path / "d.parquet", ids, vectors))


def test_bad_files_name_what_to_fix(tmp_path):
    pq.write_table(pa.table({"doc": ["a"], "embedding": [[1.0]]}), tmp_path / "x.parquet")
    with pytest.raises(DataError, match=r"x.parquet: no column 'id', 'vector' \(columns: doc, embedding\)"):
        read_vectors(tmp_path / "x.parquet")
    np.save(tmp_path / "q.npy", np.ones((3, 2), np.float32))
    with pytest.raises(DataError, match=r"q.ids.txt: no ids file: the ids of q.npy go in q.ids.txt beside it"):
        read_vectors(tmp_path / "q.npy")
    (tmp_path / "q.ids.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match=r"q.ids.txt: 2 ids for the 3 rows of q.npy"):
        read_vectors(tmp_path / "q.npy")
    (tmp_path / "q.ids.txt").write_text("a\n\nc\n")
    with pytest.raises(DataError, match=r"q.ids.txt:2 field 'id': empty id"):
        read_vectors(tmp_path / "q.npy")
    np.save(tmp_path / "flat.npy", np.ones(3, np.float32))
    with pytest.raises(DataError, match=r"flat.npy: expected a non-empty 2-D array of numbers \[n, dim\], got shape \(3,\)"):
        read_vectors(tmp_path / "flat.npy")
    with pytest.raises(DataError, match=r"v.csv: unknown vector file type"):
        (tmp_path / "v.csv").write_text("a,1\n")
        read_vectors(tmp_path / "v.csv")


def test_judgements_pairs_and_qrels(tmp_path):
    q = read_vectors(write_vectors(tmp_path / "q.npy", ["q1", "q2"], np.eye(2)))
    d = read_vectors(write_vectors(tmp_path / "d.npy", ["d1", "d2"], np.eye(2)))
    (tmp_path / "pairs.tsv").write_text("q1\td1\nq2\td2\nq2\td9\nq9\td1\n")
    assert read_judgements(tmp_path / "pairs.tsv", q, d, on_unknown="skip") == {"q1": {"d1": 1}, "q2": {"d2": 1}}
    assert read_judgements(tmp_path / "pairs.tsv", q, d)["q2"] == {"d2": 1, "d9": 1}  # evaluation: a miss
    with pytest.raises(DataError, match=r"pairs.tsv:3 field 'corpus-id': 'd9' has no vector in .*d.npy"):
        read_judgements(tmp_path / "pairs.tsv", q, d, on_unknown="raise")
    (tmp_path / "bad.tsv").write_text("q1\td1\nq1\td1\tx\ty\tz\n")
    with pytest.raises(DataError, match=r"bad.tsv:2: wrong column count: expected 2 tab-separated fields"):
        read_judgements(tmp_path / "bad.tsv", q, d)
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\r\nq1\td2\t2\r\nq2\td1\tx\r\n")
    with pytest.raises(DataError, match=r"qrels.tsv:3 field 'score': score is not a number"):
        read_judgements(tmp_path / "qrels.tsv", q, d)
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t2\nq2\td1\t0\n")
    qrels = read_judgements(tmp_path / "qrels.tsv", q, d)
    assert qrels == {"q1": {"d2": 2}, "q2": {"d1": 0}}
    rset, lookup = vector_retrieval_set(q, d, qrels, "toy", "test")
    assert rset.corpus["d2"].full_text == "d2" and np.array_equal(lookup(["d2", "d1"], "document"), np.eye(2)[::-1])
