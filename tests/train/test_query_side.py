"""Query-side training (train.tune: query) with corpus-wide negatives on the tiny BERT: positive and
same-text masking, the Router output, index reuse without re-encoding, documents encoded once,
bitwise resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from train_helpers import tiny_config

from textcl.config import load_recipe
from textcl.data.batching import make_batches
from textcl.data.io import load_examples
from textcl.errors import ConfigError
from textcl.index import SearchIndex
from textcl.model import Encoder, load_model, make_encoder, model_fingerprint, split_towers
from textcl.train import loop
from textcl.train.corpus import TrainingCorpus, load_corpus_texts, sample_candidates
from textcl.train.loop import train
from textcl.types import Document

WORDS = ("cancer diet vitamin heart risk health study food sugar fat cell blood brain sleep exercise coffee "
         "tea milk meat fish fruit green red cat dog car tree house river music book").split()


def write_graded_beir(folder: Path, n_docs: int = 40, n_queries: int = 16) -> Path:
    """A BEIR folder with graded qrels (1 and 2), several positives per query, a document that repeats
    a positive's text under another id (d1 = D0 in upper case) and one that repeats query q0's text."""
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(WORDS, size=6)) for _ in range(n_docs)]
    queries = [" ".join(rng.choice(WORDS, size=3)) for _ in range(n_queries)]
    docs[1] = docs[0].upper()
    docs[2] = queries[0]
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w") as fh:
        for i, d in enumerate(docs):
            fh.write(json.dumps({"_id": f"d{i}", "title": "", "text": d}) + "\n")
    with open(folder / "queries.jsonl", "w") as fh:
        for i, q in enumerate(queries):
            fh.write(json.dumps({"_id": f"q{i}", "text": q}) + "\n")
    for split, part in (("train", range(0, 12)), ("dev", range(12, 16))):
        with open(folder / "qrels" / f"{split}.tsv", "w") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for q in part:
                positives = [0, 5] if q == 0 else sorted({int(x) for x in rng.choice(range(3, n_docs), size=2)})
                for j, d in enumerate(positives):
                    fh.write(f"q{q}\td{d}\t{1 + j % 2}\n")  # graded: 1 and 2
    return folder


@pytest.fixture
def beir(tmp_path) -> Path:
    return write_graded_beir(tmp_path / "beir")


def _query_side_config(model_path: Path, out: Path, beir: Path, *extra: str):
    return tiny_config(model_path, out, f"data.train={beir}", "data.format=beir", "mining.enabled=false",
                       "train.tune=query", "train.negatives=corpus", "train.save_every=2", *extra)


def test_targets_mask_every_known_positive_by_id_and_text_and_the_query_text(beir):
    examples, _ = load_examples(beir, format="beir", split="train")
    corpus = TrainingCorpus(texts=[json.loads(line)["text"] for line in (beir / "corpus.jsonl").read_text().splitlines()],
                            ids=[f"d{i}" for i in range(40)])
    batch = make_batches(examples, 12, num_negatives=0, rng=np.random.default_rng(0))[0]
    positives, (rows, cols) = corpus.targets(batch)
    i = batch.query_ids.index("q0")
    sampled = batch.candidate_ids[i]
    assert sampled in ("d0", "d5")  # graded 1 and 2: both are positives
    assert corpus.ids[int(positives[i])] == sampled
    excluded = {corpus.ids[int(c)] for r, c in zip(rows.tolist(), cols.tolist()) if r == i}
    # both positives (whatever their grade), d1 (d0's text in upper case) and d2 (the query's text)
    assert excluded == {"d0", "d5", "d1", "d2"}
    for j, qid in enumerate(batch.query_ids):  # every query excludes at least its own sampled positive
        own = {int(c) for r, c in zip(rows.tolist(), cols.tolist()) if r == j}
        assert int(positives[j]) in own, qid


def test_every_positive_pair_is_a_known_positive_by_id_and_none_is_a_negative(beir):
    examples, _ = load_examples(beir, format="beir", split="train")
    corpus = TrainingCorpus(texts=[json.loads(line)["text"] for line in open(beir / "corpus.jsonl")],
                            ids=[f"d{i}" for i in range(40)])
    batch = make_batches(examples, 12, num_negatives=0, rng=np.random.default_rng(0))[0]
    rows, cols = corpus.positive_pairs(batch)
    _, (ex_rows, ex_cols) = corpus.targets(batch)
    excluded = set(zip(ex_rows.tolist(), ex_cols.tolist()))
    qrels = {}
    for line in list(open(beir / "qrels" / "train.tsv"))[1:]:
        qid, did, _ = line.split("\t")
        qrels.setdefault(qid, set()).add(did)
    for i, qid in enumerate(batch.query_ids):
        mine = {corpus.ids[c] for r, c in zip(rows.tolist(), cols.tolist()) if r == i}
        assert mine == qrels[qid], qid  # every grade; d1 (d0's text under another id) is not a positive
    assert all(pair in excluded for pair in zip(rows.tolist(), cols.tolist()))


def test_every_positive_mode_trains_is_the_query_side_default_and_needs_the_query_tower(tiny_model_path, tmp_path,
                                                                                        beir):
    def losses(result):
        return [h["loss"] for h in result.history if "loss" in h]

    every = train(_query_side_config(tiny_model_path, tmp_path / "a", beir, "train.corpus_positives=all"), None)
    auto = train(_query_side_config(tiny_model_path, tmp_path / "d", beir), None)
    sampled = train(_query_side_config(tiny_model_path, tmp_path / "s", beir, "train.corpus_positives=sample"), None)
    assert every.steps == 6 and all(np.isfinite(losses(every)))
    assert losses(auto) == losses(every)  # auto = all with tune: query
    assert losses(every) != losses(sampled)
    with pytest.raises(ConfigError, match="corpus_positives: all"):
        train(tiny_config(tiny_model_path, tmp_path / "f", f"data.train={beir}", "data.format=beir",
                          "train.negatives=corpus", "train.corpus_positives=all"), None)


def test_positive_outside_the_corpus_is_a_clear_error():
    corpus = TrainingCorpus(texts=["a b c"], ids=None)
    with pytest.raises(Exception, match="not in the training corpus"):
        corpus.row_of("x y z", None)


def test_output_is_a_router_whose_document_tower_is_the_base_model(tiny_model_path, tmp_path, beir):
    out = tmp_path / "out"
    result = train(_query_side_config(tiny_model_path, out, beir), None)
    assert result.steps == 6
    model = SentenceTransformer(str(out), device="cpu")
    base = SentenceTransformer(str(tiny_model_path), device="cpu")
    texts = ["cancer diet", "red car tree"]
    assert np.allclose(model.encode_document(texts), base.encode(texts), atol=1e-6)
    assert np.allclose(model.encode(texts), base.encode(texts), atol=1e-6)  # plain encode = document route
    assert not np.allclose(model.encode_query(texts), base.encode(texts), atol=1e-4)  # the query tower trained
    towers = split_towers(load_model(out, device="cpu"))
    assert towers is not None
    # the recipe's max_seq_length (32) is part of the document tower, as of any base-model encoder
    assert model_fingerprint(towers[1]) == model_fingerprint(load_model(tiny_model_path, device="cpu",
                                                                        max_seq_length=32))
    card = (out / "README.md").read_text()
    assert "Only the **query** tower was fine-tuned" in card


def test_index_built_with_the_base_model_is_reused_without_reencoding(tiny_model_path, tmp_path, beir):
    docs = [json.loads(line)["text"] for line in (beir / "corpus.jsonl").read_text().splitlines()]
    base = Encoder(load_model(tiny_model_path, device="cpu", max_seq_length=32), precision="fp32",
                   show_progress=False)
    SearchIndex.build(base, {f"d{i}": Document(title="", text=t) for i, t in enumerate(docs)}, tmp_path / "index",
                      factory="Flat")
    train(_query_side_config(tiny_model_path, tmp_path / "out", beir), None)
    tuned = make_encoder(load_model(tmp_path / "out", device="cpu"), precision="fp32", show_progress=False)
    calls = []
    inner = tuned.document.__call__
    tuned.document.__call__ = lambda texts, role="document": (calls.append(len(texts)), inner(texts, role))[1]
    loaded = SearchIndex.load(tmp_path / "index", tuned)  # the fingerprint check passes: same document tower
    hits = loaded.search(["cancer diet"], k=3)
    assert len(hits[0]) == 3 and calls == []
    assert tuned.fingerprint == base.fingerprint != tuned.query.fingerprint


def test_documents_are_encoded_once_for_training_and_every_evaluation(tiny_model_path, tmp_path, beir,
                                                                       monkeypatch):
    seen: list[tuple[str, int]] = []
    real = Encoder.__call__

    def spy(self, texts, role="document"):
        seen.append((role, len(texts)))
        return real(self, texts, role)

    monkeypatch.setattr(Encoder, "__call__", spy)
    config = _query_side_config(tiny_model_path, tmp_path / "out", beir, f"eval.retrieval=[{beir}]",
                                "train.eval_every=2", "eval.k_values=[10]")
    train(config, None)
    documents = [n for role, n in seen if role == "document"]
    assert documents == [40]  # the corpus, once: training and 4 dev evaluations share it
    assert len([1 for role, _ in seen if role == "query"]) == 4  # dev queries at steps 0, 2, 4, 6


def test_query_side_resume_is_bitwise_equal_to_an_uninterrupted_run(tiny_model_path, tmp_path, beir):
    straight = train(_query_side_config(tiny_model_path, tmp_path / "a", beir), None)
    stopped = train(_query_side_config(tiny_model_path, tmp_path / "b", beir), None,
                    callbacks=[lambda event: event["step"] == 3])
    assert stopped.steps == 3
    resumed = train(_query_side_config(tiny_model_path, tmp_path / "b", beir), None, resume=True)
    assert resumed.steps == 6
    a = SentenceTransformer(str(tmp_path / "a"), device="cpu").state_dict()
    b = SentenceTransformer(str(tmp_path / "b"), device="cpu").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in straight.history if "loss" in h] == \
        [h["loss"] for h in resumed.history if "loss" in h]


def test_sampled_candidates_and_full_fine_tuning_with_refresh_train(tiny_model_path, tmp_path, beir):
    sampled = train(_query_side_config(tiny_model_path, tmp_path / "s", beir, "train.corpus_candidates=5",
                                       "train.corpus_samples=8"), None)
    assert sampled.steps == 6 and all(np.isfinite(h["loss"]) for h in sampled.history if "loss" in h)
    full = train(tiny_config(tiny_model_path, tmp_path / "f", f"data.train={beir}", "data.format=beir",
                             "train.negatives=corpus", "train.corpus_refresh_every=2"), None)
    assert full.steps == 6
    assert split_towers(load_model(tmp_path / "f", device="cpu")) is None  # both towers trained: one model


@pytest.mark.parametrize("extra, message", [
    (["loss.symmetric=true"], "loss.symmetric"),
    (["train.corpus_refresh_every=2"], "corpus_refresh_every"),
    (["loss.name=cosent"], "loss.name=infonce"),
])
def test_query_side_rejects_settings_it_cannot_honour(tiny_model_path, tmp_path, beir, extra, message):
    with pytest.raises(ConfigError, match=message):
        loop.train(_query_side_config(tiny_model_path, tmp_path / "x", beir, *extra), [])


def test_sampled_candidates_are_the_top_k_non_excluded_documents_over_corpus_blocks():
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(23, 8, generator=g), dim=1)
    corpus = TrainingCorpus(texts=[f"t{i}" for i in range(23)], ids=None, embeddings=emb)
    q = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=1)
    exclude = (torch.tensor([0, 0, 2]), torch.tensor([5, 11, 0]))
    out = sample_candidates(corpus, q, exclude, k=4, m=50, rng=np.random.default_rng(0), block=5)
    scores = q @ emb.T
    scores[0, 5] = scores[0, 11] = scores[2, 0] = -float("inf")
    assert torch.equal(out["top"], scores.topk(4, dim=1).indices)
    assert out["hard_valid"].all()
    for i in range(3):  # a draw is valid unless excluded for that query or already in its top-4
        for j, d in enumerate(out["sampled"].tolist()):
            bad = d in out["top"][i].tolist() or (i, d) in {(0, 5), (0, 11), (2, 0)}
            assert bool(out["sampled_valid"][i, j]) is not bad


def test_training_corpus_reads_a_repeated_id_as_the_corpus_reader_does(tmp_path, caplog):
    """train.corpus / the BEIR corpus of data.train go through the one corpus reader: a repeated id keeps
    the later document (with a warning), as evaluation and the index do."""
    folder = tmp_path / "beir"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "old text"}\n{"_id": "d2", "text": "two"}\n'
                                         '{"_id": "d1", "text": "new text"}\n')
    cfg = load_recipe(None, [f"train.corpus={folder}", "train.tune=query"])
    texts, ids, where = load_corpus_texts(cfg, [])
    assert (texts, ids, where) == (["new text", "two"], ["d1", "d2"], str(folder / "corpus.jsonl"))
    assert "1 repeated ids (the last one kept) (e.g. line 3 'd1')" in caplog.text
