"""Semantic-search index: build/load/search round trip (exact and HNSW), fingerprint refusal, add, CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from textcl.cli import main
from textcl.errors import ConfigError, DataError
from textcl.index import SearchIndex, load_corpus
from textcl.types import Document

KEYWORDS = ["cat", "dog", "car", "tree", "river", "music", "book", "coffee"]


def _corpus(n: int = 60) -> dict[str, Document]:
    rng = np.random.default_rng(0)
    out = {}
    for i in range(n):
        words = rng.choice(KEYWORDS, size=3, replace=True)
        out[f"d{i}"] = Document(title=f"title {i}", text=" ".join(words) + f" filler{i}")
    return out


@pytest.mark.parametrize("factory", ["exact", "Flat", "HNSW32"])
def test_build_load_search_round_trip(tmp_path, keyword_encoder, factory):
    enc = keyword_encoder(KEYWORDS)
    corpus = _corpus()
    built = SearchIndex.build(enc, corpus, tmp_path / "idx", factory=factory, fingerprint="fp-kw", model="kw")
    assert (tmp_path / "idx" / "embeddings.npy").is_file()
    assert (tmp_path / "idx" / "index.faiss").is_file() == (factory != "exact")
    cfg = json.loads((tmp_path / "idx" / "config.json").read_text())
    assert cfg["count"] == 60 and cfg["fingerprint"] == "fp-kw"
    if factory != "exact":
        assert 0.9 <= cfg["recall"]["recall"] <= 1.0 and cfg["recall"]["queries"] == 60

    loaded = SearchIndex.load(tmp_path / "idx", enc, fingerprint="fp-kw")
    hits = loaded.search("dog dog dog", k=5)[0]
    assert len(hits) == 5
    assert [h.score for h in hits] == sorted([h.score for h in hits], reverse=True)
    # The top hit must have the highest dog share; check against a brute-force computation.
    emb = enc([d.full_text for d in corpus.values()])
    best = float((emb @ enc(["dog dog dog"])[0]).max())
    assert hits[0].score == pytest.approx(best, abs=1e-5)
    assert "dog" in corpus[hits[0].id].text and hits[0].title == corpus[hits[0].id].title
    # Same results from the built object and the reloaded one.
    assert [h.id for h in built.search("river book", k=3)[0]] == [h.id for h in loaded.search("river book", 3)[0]]


def test_refuses_other_model(tmp_path, keyword_encoder):
    enc = keyword_encoder(KEYWORDS)
    SearchIndex.build(enc, _corpus(10), tmp_path / "idx", fingerprint="fp-a", model="model-a")
    with pytest.raises(ConfigError, match="built with model 'model-a'.*fingerprint fp-a"):
        SearchIndex.load(tmp_path / "idx", enc, fingerprint="fp-b")
    with pytest.raises(ConfigError, match="cannot verify the model"):
        SearchIndex.load(tmp_path / "idx", enc)


def test_add_appends_and_rejects_duplicates(tmp_path, keyword_encoder):
    enc = keyword_encoder(KEYWORDS)
    SearchIndex.build(enc, _corpus(10), tmp_path / "idx", factory="HNSW32", fingerprint="fp")
    idx = SearchIndex.load(tmp_path / "idx", enc, fingerprint="fp")
    assert idx.add({"new": Document("New", "coffee coffee coffee")}) == 1
    again = SearchIndex.load(tmp_path / "idx", enc, fingerprint="fp")
    assert len(again) == 11 and again.search("coffee coffee coffee", k=1)[0][0].id in {"new"} | {
        i for i, d in _corpus(10).items() if d.text.count("coffee") == 3}
    with pytest.raises(DataError, match="already in the index, e.g. 'new'"):
        again.add({"new": Document("x", "cat")})


def test_load_corpus_formats(tmp_path):
    (tmp_path / "beir").mkdir()
    (tmp_path / "beir" / "corpus.jsonl").write_text('{"_id": "a", "title": "T", "text": "x"}\n')
    assert load_corpus(tmp_path / "beir") == {"a": Document("T", "x")}
    (tmp_path / "c.jsonl").write_text('{"id": 7, "text": "y"}\n')
    assert load_corpus(tmp_path / "c.jsonl") == {"7": Document("", "y")}
    (tmp_path / "c.txt").write_text("first\n\nthird\n")
    assert load_corpus(tmp_path / "c.txt") == {"1": Document("", "first"), "3": Document("", "third")}
    (tmp_path / "bad.jsonl").write_text('{"_id": "a", "text": ""}\n')
    with pytest.raises(DataError, match="bad.jsonl:1.*text"):
        load_corpus(tmp_path / "bad.jsonl")
    with pytest.raises(DataError, match="no corpus.jsonl"):
        load_corpus(tmp_path)


def test_cli_build_and_search(tmp_path, tiny_model_path, capsys):

    # Distinct lengths: the fixture model tells texts apart mostly by length.
    (tmp_path / "docs.txt").write_text("cat\nthe dog ran\na red car is fast\nthe green tree by the river\n")
    out = tmp_path / "idx"
    assert main(["index", "build", "--model", str(tiny_model_path), "--corpus", str(tmp_path / "docs.txt"),
                 "--factory", "HNSW32", "--out", str(out), "--precision", "fp32"]) == 0
    assert main(["index", "search", str(out), "the dog ran", "-k", "2", "--precision", "fp32"]) == 0
    first = capsys.readouterr().out.splitlines()[-2].split("\t")
    assert first[0] == "1" and first[2] == "2" and float(first[1]) == pytest.approx(1.0, abs=1e-4)
    (tmp_path / "q.txt").write_text("a red car is fast\ncat\n")
    assert main(["index", "search", str(out), "--queries", str(tmp_path / "q.txt"), "-k", "1",
                 "--output", str(tmp_path / "res.jsonl"), "--precision", "fp32"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "res.jsonl").read_text().splitlines()]
    assert [r["hits"][0]["id"] for r in rows] == ["3", "1"]


def test_index_records_a_model_path_that_resolves_from_anywhere(tmp_path, tiny_model_path, monkeypatch, capsys):

    shutil.copytree(tiny_model_path, tmp_path / "proj" / "out" / "model")
    (tmp_path / "proj" / "docs.txt").write_text("cat\nthe dog ran\n")
    monkeypatch.chdir(tmp_path / "proj")
    assert main(["index", "build", "--model", "out/model", "--corpus", "docs.txt", "--out", "idx",
                 "--precision", "fp32"]) == 0
    assert json.loads((tmp_path / "proj" / "idx" / "config.json").read_text())["model"] == str(
        tmp_path / "proj" / "out" / "model")
    monkeypatch.chdir(tmp_path)  # another directory: the recorded model still loads
    assert main(["index", "search", "proj/idx", "cat", "-k", "1", "--precision", "fp32"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split("\t")[2] == "1"


@pytest.mark.parametrize("damage, file, reason", [
    ("delete", "index.faiss", "file is missing"),
    ("truncate", "index.faiss", ""),
    ("truncate", "embeddings.npy", ""),
    ("delete", "embeddings.npy", "missing embeddings.npy"),
])
def test_damaged_index_names_the_file_and_the_fix(tmp_path, keyword_encoder, damage, file, reason):
    SearchIndex.build(keyword_encoder(KEYWORDS), _corpus(), tmp_path / "idx", factory="HNSW32", fingerprint="fp",
                      model="/models/kw")
    target = tmp_path / "idx" / file
    if damage == "delete":
        target.unlink()
    else:
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    with pytest.raises(DataError) as err:
        SearchIndex.load(tmp_path / "idx")
    message = str(err.value)
    assert message.startswith(str(target) if file != "embeddings.npy" or damage != "delete" else str(tmp_path / "idx"))
    assert reason in message
    if "missing embeddings" not in reason:
        assert message.endswith(f"rebuild it: textcl index build --model /models/kw --corpus CORPUS --factory HNSW32 "
                                f"--out {tmp_path / 'idx'}")


def test_index_files_that_disagree_are_damage(tmp_path, keyword_encoder):
    SearchIndex.build(keyword_encoder(KEYWORDS), _corpus(), tmp_path / "idx", factory="exact", fingerprint="fp")
    np.save(tmp_path / "idx" / "embeddings.npy", np.zeros((3, 9), dtype=np.float32))
    with pytest.raises(DataError, match=r"damaged index: its files disagree on the number of documents "
                                        r"\(\{'embeddings.npy': 3, 'ids.jsonl': 60\}\); rebuild it"):
        SearchIndex.load(tmp_path / "idx")


def test_load_corpus_keeps_the_later_of_a_repeated_id_and_warns(tmp_path, caplog):
    """The one corpus reader follows BEIR's loader (and pytrec_eval / MTEB through it): a repeated id
    overwrites the earlier document, and one warning names the file, the count and the line."""
    (tmp_path / "c.jsonl").write_text('{"_id": "a", "text": "old"}\n{"_id": "b", "text": "b"}\n'
                                      '{"_id": "a", "title": "T", "text": "new"}\n')
    assert load_corpus(tmp_path / "c.jsonl") == {"a": Document("T", "new"), "b": Document("", "b")}
    assert f"{tmp_path / 'c.jsonl'}: 1 repeated ids (the last one kept) (e.g. line 3 'a')" in caplog.text
    assert "--strict" not in caplog.text  # eval's switch does not apply to an index corpus
    (tmp_path / "noid.jsonl").write_text('{"text": "no id"}\n')
    with pytest.raises(DataError, match=r"noid.jsonl:1 field '_id': missing field"):
        load_corpus(tmp_path / "noid.jsonl")
