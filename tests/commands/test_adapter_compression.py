"""`textcl adapter fit/eval --compression`: the adapter trains against the document vectors exactly as the
compressed index returns them, the index's bytes are reported, and a binary index's top-k can be re-ranked
with the float vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from textcl.cli import main
from textcl.compress import compress
from textcl.data.vectors import write_vectors


@pytest.fixture
def vector_files(tmp_path):
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((64, 16)).astype(np.float32)
    queries = docs[:40] + 0.8 * rng.standard_normal((40, 16)).astype(np.float32)  # query i is about document i
    write_vectors(tmp_path / "d.npy", [f"d{i}" for i in range(64)], docs)
    write_vectors(tmp_path / "q.npy", [f"q{i}" for i in range(40)], queries)
    for split, part in (("train", range(0, 24)), ("dev", range(24, 32)), ("test", range(32, 40))):
        (tmp_path / f"{split}.tsv").write_text("".join(f"q{i}\td{i}\t1\n" for i in part))
    return tmp_path, docs


def _fit(folder, documents, out, *extra):
    return main(["adapter", "fit", "--queries", str(folder / "q.npy"), "--documents", str(documents), "--qrels",
                 str(folder / "train.tsv"), "--dev-qrels", str(folder / "dev.tsv"), "--out", str(out), "--lr", "0.01",
                 "--epochs", "4", "--batch-size", "8", "--name", "toy", *extra])


def test_fit_trains_against_the_dequantised_vectors_and_reports_bytes(vector_files):
    folder, docs = vector_files
    assert _fit(folder, folder / "d.npy", folder / "binary", "--compression", "binary") == 0
    unit = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    write_vectors(folder / "deq.npy", [f"d{i}" for i in range(64)], compress(unit, "binary").dequantised)
    assert _fit(folder, folder / "deq.npy", folder / "plain") == 0
    info = json.loads((folder / "binary" / "adapter.json").read_text())
    assert info["compression"] == "binary" and info["index_bytes"] == 64 * 16 // 8
    np.testing.assert_allclose(np.load(folder / "binary" / "W.npy"), np.load(folder / "plain" / "W.npy"), atol=1e-6)


def test_eval_reports_bytes_and_rescored_metrics(vector_files, capsys):
    folder, _ = vector_files
    out = folder / "m.json"
    assert main(["adapter", "eval", "--queries", str(folder / "q.npy"), "--documents", str(folder / "d.npy"),
                 "--qrels", str(folder / "test.tsv"), "--name", "toy", "--compression", "binary", "--rescore", "20",
                 "--k", "10", "--output", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["index_bytes"] == 128 and "index: binary, 128 bytes (32.0x smaller" in capsys.readouterr().out
    plain = folder / "p.json"
    main(["adapter", "eval", "--queries", str(folder / "q.npy"), "--documents", str(folder / "d.npy"), "--qrels",
          str(folder / "test.tsv"), "--name", "toy", "--k", "10", "--output", str(plain)])
    # re-ranking a top-20 of 64 with the float vectors recovers the float ranking's top 10 here
    assert metrics["toy/ndcg@10 (rescored top-20)"] == pytest.approx(json.loads(plain.read_text())["toy/ndcg@10"])


def test_fit_refuses_to_replace_an_adapter_without_overwrite(vector_files, caplog):
    folder, _ = vector_files
    assert _fit(folder, folder / "d.npy", folder / "fit") == 0
    before = (folder / "fit" / "W.npy").read_bytes()
    assert _fit(folder, folder / "d.npy", folder / "fit", "--seed", "3") != 0
    assert "already holds an adapter; replace it with --overwrite" in caplog.text
    assert (folder / "fit" / "W.npy").read_bytes() == before  # untouched
    assert _fit(folder, folder / "d.npy", folder / "fit", "--seed", "3", "--overwrite") == 0


def test_labelled_corpus_scope_trains_as_if_only_the_labelled_documents_existed(vector_files):
    from textcl.adapter import AdapterSettings
    from textcl.vectorfit import VectorSet, fit_vectors, read_qrels

    folder, docs = vector_files
    named = [f"d{i}" for i in range(24)]  # the documents train.tsv names (query i -> document i)
    write_vectors(folder / "named.npy", named, docs[:24])
    settings = AdapterSettings(lr=0.01, batch_size=8, epochs=3, normalize=True)

    def fit(documents: str, labelled: bool):
        vs = VectorSet.read(str(folder / "q.npy"), str(folder / documents), "toy", True)
        return fit_vectors(vs, read_qrels(str(folder / "train.tsv"), vs, training=True), None, settings,
                           labelled_only=labelled)

    scoped, only_named, whole = fit("d.npy", True), fit("named.npy", False), fit("d.npy", False)
    np.testing.assert_array_equal(scoped.weight, only_named.weight)
    assert not np.allclose(scoped.weight, whole.weight)  # the 40 unlabelled documents did shape plain training
    assert _fit(folder, folder / "d.npy", folder / "cli", "--corpus-scope", "labelled") == 0
    assert json.loads((folder / "cli" / "adapter.json").read_text())["corpus_scope"] == "labelled"
