"""A compressed / truncated SearchIndex (index.compression, dimensions, rescore): each form's search equals a
brute-force search over its dequantised vectors (ties by row), it survives save/load and add, it keeps the
fingerprint check, and it refuses forms that cannot work."""

from __future__ import annotations

import json
import zlib

import faiss
import numpy as np
import pytest

from textcl.cli import main
from textcl.compress import IndexForm, IndexView, compress, rescore
from textcl.config import IndexConfig, ModelConfig, RunConfig, TrainConfig
from textcl.errors import ConfigError
from textcl.index import CODES, SearchIndex
from textcl.knn import exact_search
from textcl.train.corpus import build_training_corpus
from textcl.types import Document

DIM = 32


class _Rule:
    def __init__(self, similarity: str):
        self.similarity = similarity

    @property
    def normalize(self) -> bool:
        return self.similarity == "cosine"

    def describe(self) -> dict:
        return {"query_prompt": "", "document_prompt": "", "similarity": self.similarity}


class HashEncoder:
    """Deterministic random unit vectors per text (crc32-seeded), with a fingerprint and a text rule."""

    def __init__(self, similarity: str = "cosine", fingerprint: str = "fp-hash"):
        self.rule, self.fingerprint = _Rule(similarity), fingerprint

    def __call__(self, texts: list[str], role: str = "document") -> np.ndarray:
        rows = [np.random.default_rng(zlib.crc32(t.encode())).standard_normal(DIM) for t in texts]
        x = np.asarray(rows, dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


CORPUS = {f"d{i}": Document(f"t{i}", f"document number {i}") for i in range(300)}
QUERIES = [f"query {i}" for i in range(20)]


def _reference(form: IndexForm, k: int, enc: HashEncoder) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over the dequantised vectors, built independently of SearchIndex."""
    docs = form.truncate(enc([d.full_text for d in CORPUS.values()]), True)
    queries = form.truncate(enc(QUERIES, "query"), True)
    return exact_search(queries, compress(docs, form.compression).dequantised, k)


@pytest.mark.parametrize("form", [IndexForm("int8"), IndexForm("binary"), IndexForm("pq:8"),
                                  IndexForm("binary", dimensions=16), IndexForm("none", dimensions=16)],
                         ids=["int8", "binary", "pq8", "binary-16d", "float-16d"])
def test_search_equals_brute_force_on_the_dequantised_vectors_and_survives_reload(tmp_path, form):
    enc = HashEncoder()
    built = SearchIndex.build(enc, CORPUS, tmp_path / "idx", factory="exact", form=form)
    ref_scores, ref_rows = _reference(form, 10, enc)
    for index in (built, SearchIndex.load(tmp_path / "idx", enc)):
        scores, rows = index.search_embeddings(enc(QUERIES, "query"), 10)
        np.testing.assert_array_equal(rows, ref_rows)  # the same computation: ties fall by row, as textcl.knn
        np.testing.assert_allclose(scores, ref_scores, atol=1e-6)
        assert [h.id for h in index.search(QUERIES[0], k=3)[0]] == [f"d{r}" for r in ref_rows[0, :3]]
    cfg = json.loads((tmp_path / "idx" / "config.json").read_text())
    assert cfg["compression"] == form.compression and cfg["dim"] == (form.dimensions or DIM)
    assert (tmp_path / "idx" / CODES).is_file() == form.compressed
    assert (tmp_path / "idx" / "embeddings.npy").is_file() == (not form.compressed)  # floats only without codes
    assert cfg["bytes"]["float32"] == 300 * DIM * 4 and cfg["bytes"]["float_kept_for_rescore"] == 0


def test_files_sizes_padding_and_faiss_types(tmp_path):
    enc = HashEncoder()
    expected = {"int8": (faiss.IndexScalarQuantizer, 300 * DIM + 2 * DIM * 4), "binary": (None, 300 * DIM // 8),
                "pq:4": (faiss.IndexPQ, 300 * 4 + 4 * 256 * (DIM // 4) * 4)}
    for spec, (kind, nbytes) in expected.items():
        SearchIndex.build(enc, CORPUS, tmp_path / spec, form=IndexForm(spec))
        assert json.loads((tmp_path / spec / "config.json").read_text())["bytes"]["index"] == nbytes
        path = str(tmp_path / spec / CODES)
        if kind is None:  # the sign bits, in a FAISS binary index (np.packbits order)
            stored = faiss.read_index_binary(path)
            assert isinstance(stored, faiss.IndexBinaryFlat) and stored.ntotal == 300 and stored.d == DIM
        else:
            assert isinstance(faiss.read_index(path), kind) and faiss.read_index(path).ntotal == 300
    padded = SearchIndex.build(enc, CORPUS, tmp_path / "pad", form=IndexForm("binary")).search_embeddings(
        enc(QUERIES[:2], "query"), 305)
    assert (padded[1][:, 300:] == -1).all() and np.isneginf(padded[0][:, 300:]).all()


def test_binary_rescore_keeps_float_vectors_and_reranks_the_codes_top_k(tmp_path):
    enc = HashEncoder()
    form = IndexForm("binary", rescore=40)
    index = SearchIndex.build(enc, CORPUS, tmp_path / "idx", form=form)
    assert (tmp_path / "idx" / "embeddings.npy").is_file()
    assert json.loads((tmp_path / "idx" / "config.json").read_text())["bytes"]["float_kept_for_rescore"] == 300 * DIM * 4
    q = enc(QUERIES, "query")
    _, candidates = _reference(IndexForm("binary"), 40, enc)
    ref_scores, ref_rows = rescore(q, candidates, enc([d.full_text for d in CORPUS.values()]))
    for idx in (index, SearchIndex.load(tmp_path / "idx", enc)):
        scores, rows = idx.search_embeddings(q, 10)
        np.testing.assert_array_equal(rows, ref_rows[:, :10])
        np.testing.assert_allclose(scores, ref_scores[:, :10], atol=1e-6)


def test_add_appends_codes_and_the_fingerprint_check_still_applies(tmp_path):
    enc = HashEncoder()
    first = dict(list(CORPUS.items())[:200])
    SearchIndex.build(enc, first, tmp_path / "idx", form=IndexForm("pq:8"))
    index = SearchIndex.load(tmp_path / "idx", enc)
    index.add(dict(list(CORPUS.items())[200:]))
    again = SearchIndex.load(tmp_path / "idx", enc)
    assert len(again) == 300 and len(again.compressed) == 300
    # the quantizer trained on the first 200 encodes the rest: search = brute force over its decoded codes
    docs = enc([d.full_text for d in CORPUS.values()])
    decoded = again.compressed.decode(again.compressed.quantizer.sa_encode(docs))
    scores, rows = again.search_embeddings(enc(QUERIES, "query"), 10)
    np.testing.assert_array_equal(rows, exact_search(enc(QUERIES, "query"), decoded, 10)[1])
    with pytest.raises(ConfigError, match="built with model"):
        SearchIndex.load(tmp_path / "idx", HashEncoder(fingerprint="fp-other"))


def test_forms_that_cannot_work_are_refused_with_the_key_to_change(tmp_path):
    with pytest.raises(ConfigError, match="needs cosine or dot similarity, and the model's is 'euclidean'"):
        SearchIndex.build(HashEncoder("euclidean"), CORPUS, tmp_path / "a", form=IndexForm("binary"))
    with pytest.raises(ConfigError, match="the model's is 'manhattan'"):  # evaluation through the index, as early
        IndexView(HashEncoder("manhattan"), IndexForm("int8"))(["a text"])
    with pytest.raises(ConfigError, match="searched exhaustively over its codes; set factory: Flat"):
        SearchIndex.build(HashEncoder(), CORPUS, tmp_path / "b", factory="HNSW32", form=IndexForm("int8"))
    with pytest.raises(ConfigError, match="index.dimensions 64: the model's vectors have only 32"):
        SearchIndex.build(HashEncoder(), CORPUS, tmp_path / "c", form=IndexForm(dimensions=64))
    with pytest.raises(ConfigError, match="index.rescore re-ranks a compressed index's top-K"):
        IndexForm("none", rescore=10)
    problems = RunConfig(model=ModelConfig(similarity="manhattan"),
                         index=IndexConfig(compression="binary", factory="HNSW32", rescore=0)).problems()
    assert any("model.similarity manhattan cannot be compressed" in p for p in problems)
    assert any("set index.factory: Flat" in p for p in problems) and any("index.rescore" in p for p in problems)
    sharded = RunConfig(train=TrainConfig(tune="adapter", corpus_shard=True), index=IndexConfig(compression="int8"))
    assert any("fits its quantizer on the whole corpus" in p for p in sharded.problems())
    assert RunConfig(index=IndexConfig(compression="pq4")).problems() == [
        "index.compression 'pq4': use one of none, int8, binary or pq:M (M bytes a vector)"]


def test_index_view_returns_documents_as_the_index_does():
    enc = HashEncoder()
    texts = [d.full_text for d in CORPUS.values()]
    view = IndexView(enc, IndexForm("binary", dimensions=16))
    np.testing.assert_array_equal(view(texts), compress(IndexForm(dimensions=16).truncate(enc(texts), True),
                                                        "binary").dequantised)
    assert view(QUERIES, "query").shape == (20, 16) and view.fingerprint == "fp-hash"
    training = IndexView(enc, IndexForm("binary", dimensions=16), training=True)
    padded = training(texts)
    assert padded.shape == (300, DIM) and not padded[:, 16:].any()
    np.testing.assert_array_equal(training(QUERIES, "query"), enc(QUERIES, "query"))  # the query side trains on all


def test_the_query_side_trains_against_the_index_form_and_a_full_fine_tune_does_not(tmp_path):
    texts = [f"document number {i}" for i in range(40)]
    (tmp_path / "docs.txt").write_text("\n".join(texts) + "\n")
    index = IndexConfig(compression="binary", dimensions=16)
    for tune in ("query", "adapter", "both"):
        config = RunConfig(train=TrainConfig(tune=tune, negatives="corpus", corpus=str(tmp_path / "docs.txt")),
                           index=index)
        corpus = build_training_corpus(config, [], HashEncoder())
        form = IndexForm("binary", 16) if tune != "both" else IndexForm()
        expected = IndexView(HashEncoder(), form, training=True)(texts) if tune != "both" else HashEncoder()(texts)
        np.testing.assert_array_equal(corpus.embeddings.numpy(), expected)


def test_cli_build_compressed_and_search(tmp_path, tiny_model_path, capsys):
    (tmp_path / "docs.txt").write_text("cat\nthe dog ran\na red car is fast\nthe green tree by the river\n")
    out = tmp_path / "idx"
    assert main(["index", "build", "--model", str(tiny_model_path), "--corpus", str(tmp_path / "docs.txt"),
                 "--out", str(out), "--precision", "fp32", "--compression", "binary", "--rescore", "4"]) == 0
    printed = capsys.readouterr().out
    assert "binary, 32 dimensions: 16 bytes (32.0x smaller than float32) + 512 of float vectors" in printed
    assert main(["index", "search", str(out), "a red car is fast", "-k", "1", "--precision", "fp32"]) == 0
    first = capsys.readouterr().out.splitlines()[-1].split("\t")
    assert first[2] == "3" and float(first[1]) == pytest.approx(1.0, abs=1e-4)  # rescored with the float vectors
