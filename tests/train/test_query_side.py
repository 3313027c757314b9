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

from textcl.config import RunConfig, TrainConfig, load_recipe
from textcl.data.batching import Batch, make_batches
from textcl.data.io import load_examples
from textcl.errors import ConfigError
from textcl.index import SearchIndex
from textcl.losses import KnownPositives
from textcl.models import Encoder, load_model, make_encoder, model_fingerprint, split_towers
from textcl.train import loop
from textcl.train.corpus import TrainingCorpus, load_corpus_texts, sample_candidates
from textcl.train.evaluation import ood_drop
from textcl.train.loop import train
from textcl.train.selection import choose_mix
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


def test_positives_known_only_by_text_stay_targets_when_another_positive_matches_by_id():
    corpus = TrainingCorpus(texts=["alpha beta", "gamma delta", "extra positive", "ALPHA  beta"],
                            ids=["d0", "d1", "d2", "d3"])
    # ids and texts are unpaired sets: d0's text, and a positive whose id ("zz") the corpus lacks
    known = KnownPositives(ids=frozenset({"d0", "zz"}), texts=frozenset({"alpha beta", "extra positive"}))
    batch = Batch(queries=["q"], candidates=["alpha beta"], group_size=1, query_ids=["q0"], candidate_ids=["d0"],
                  positive_sets=[known])
    rows, cols = corpus.positive_pairs(batch)
    assert rows.tolist() == [0, 0] and cols.tolist() == [0, 2]  # d3 (d0's text under another id) is no target


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
    with pytest.raises(ConfigError, match="similarity_anchor"):
        train(tiny_config(tiny_model_path, tmp_path / "g", f"data.train={beir}", "data.format=beir",
                          "train.similarity_anchor=1"), None)


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


@pytest.mark.parametrize("extra", [[], ["train.similarity_anchor=5"]])
def test_query_side_resume_is_bitwise_equal_to_an_uninterrupted_run(tiny_model_path, tmp_path, beir, extra):
    straight = train(_query_side_config(tiny_model_path, tmp_path / "a", beir, *extra), None)
    stopped = train(_query_side_config(tiny_model_path, tmp_path / "b", beir, *extra), None,
                    callbacks=[lambda event: event["step"] == 3])
    assert stopped.steps == 3
    resumed = train(_query_side_config(tiny_model_path, tmp_path / "b", beir, *extra), None, resume=True)
    assert resumed.steps == 6
    a = SentenceTransformer(str(tmp_path / "a"), device="cpu").state_dict()
    b = SentenceTransformer(str(tmp_path / "b"), device="cpu").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in straight.history if "loss" in h] == \
        [h["loss"] for h in resumed.history if "loss" in h]


def test_sampled_candidates_and_full_fine_tuning_with_refresh_train(tiny_model_path, tmp_path, beir):
    sampled = train(_query_side_config(tiny_model_path, tmp_path / "s", beir, "train.corpus_candidates=5",
                                       "train.corpus_samples=8", "train.similarity_anchor=1"), None)
    assert sampled.steps == 6 and all(np.isfinite(h["loss"]) for h in sampled.history if "loss" in h)
    full = train(tiny_config(tiny_model_path, tmp_path / "f", f"data.train={beir}", "data.format=beir",
                             "train.negatives=corpus", "train.corpus_refresh_every=2"), None)
    assert full.steps == 6
    assert split_towers(load_model(tmp_path / "f", device="cpu")) is None  # both towers trained: one model


@pytest.mark.parametrize("stop_at", [3, 4])  # between two refreshes, and at one (due again when resuming)
def test_resume_with_corpus_refresh_is_bitwise_equal_to_an_uninterrupted_run(tiny_model_path, tmp_path, beir, stop_at):
    def config(out: Path):
        return tiny_config(tiny_model_path, out, f"data.train={beir}", "data.format=beir", "mining.enabled=false",
                           "train.negatives=corpus", "train.corpus_refresh_every=2")

    straight = train(config(tmp_path / "a"), None)
    train(config(tmp_path / "b"), None, callbacks=[lambda event: event["step"] == stop_at])
    saved = tmp_path / "b" / "checkpoints" / f"step-{stop_at:08d}"
    assert (saved / "corpus_embeddings.safetensors").is_file()  # refreshed at step 2
    assert not (tmp_path / "b" / "checkpoints" / "step-00000002" / "corpus_embeddings.safetensors").exists()
    resumed = train(config(tmp_path / "b"), None, resume=True)
    a = SentenceTransformer(str(tmp_path / "a"), device="cpu").state_dict()
    b = SentenceTransformer(str(tmp_path / "b"), device="cpu").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in straight.history if "loss" in h] == \
        [h["loss"] for h in resumed.history if "loss" in h]


def test_set_up_checks_a_config_built_by_hand(examples):
    with pytest.raises(ConfigError, match="train.similarity_anchor holds the query tower's similarities"):
        loop.set_up(RunConfig(train=TrainConfig(similarity_anchor=1.0)), examples)


def test_similarity_anchor_keeps_text_to_text_similarity_through_the_query_tower_closer_to_base(
        tiny_model_path, tmp_path, beir):
    # held-out texts (not training queries): the anchor acts on the batch's queries and must carry over
    texts = [" ".join(np.random.default_rng(50 + i).choice(WORDS, size=4)) for i in range(12)]
    base = SentenceTransformer(str(tiny_model_path), device="cpu").encode(texts, normalize_embeddings=True)

    def change(anchor: str) -> float:
        out = tmp_path / anchor
        train(_query_side_config(tiny_model_path, out, beir, f"train.similarity_anchor={anchor}", "train.lr=1e-3",
                                 "train.epochs=3"), None)
        tuned = SentenceTransformer(str(out), device="cpu").encode_query(texts, normalize_embeddings=True)
        assert ("similarity_anchor: 1" in (out / "README.md").read_text()) == (anchor == "1")  # the model card
        off = ~np.eye(len(texts), dtype=bool)
        return float(np.mean((tuned @ tuned.T - base @ base.T)[off] ** 2))

    free, anchored = change("0"), change("1")
    assert free > 0 and anchored < 0.5 * free, (free, anchored)


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


def _ood_folder(tmp_path: Path) -> Path:
    """A second graded BEIR folder as the out-of-domain set, with dev and test splits."""
    folder = write_graded_beir(tmp_path / "ood-beir", n_docs=30, n_queries=16)
    (folder / "qrels" / "test.tsv").write_text((folder / "qrels" / "dev.tsv").read_text())
    return folder


@pytest.mark.parametrize("budget", [0.0, 1000.0])
def test_forgetting_budget_keeps_the_best_dev_mix_within_the_budget(tiny_model_path, tmp_path, beir, budget):
    ood = _ood_folder(tmp_path)
    config = _query_side_config(tiny_model_path, tmp_path / "out", beir, f"eval.retrieval=[{beir}]",
                                f"eval.ood_retrieval=[{ood}]", "eval.k_values=[10]", "train.eval_every=3",
                                "train.lr=1e-3", "train.interpolate_base=[0.3, 0.6]", f"train.max_ood_drop={budget}")
    result = train(config, None)
    decision = next(h for h in result.history if "forgetting_budget" in h)
    candidates = decision["candidates"]
    # the model training started from is a candidate (a = 0, no drop): a budget nothing else meets keeps it
    assert [c["alpha"] for c in candidates] == [0.0, 1.0, 0.3, 0.6] and decision["forgetting_budget"] == budget
    first = result.history[0]
    assert candidates[0] == {"alpha": 0.0, "dev": first["eval"]["dev"][first["metric"]], "ood_drop": 0.0}
    expect = max((c for c in candidates if c["ood_drop"] <= budget), key=lambda c: (c["dev"], c["alpha"]))
    assert decision["chosen"] == expect["alpha"]
    if expect["alpha"] == 0.0:  # the reported dev scores are the starting model's
        assert result.after == result.before
    if budget == 1000.0:  # every mix is within it: plain best-on-dev
        assert expect["dev"] == max(c["dev"] for c in candidates)
    trials = {h["interpolation"]: h for h in result.history if "interpolation" in h}
    for c in candidates[2:]:  # each mix's drop was measured on the out-of-domain DEV split and recorded
        assert trials[c["alpha"]]["ood_drop_dev"] == c["ood_drop"]
    card = (tmp_path / "out" / "README.md").read_text()
    if decision["chosen"] < 1.0:
        assert f"forgetting budget of {budget} points" in card


def test_choose_mix_prefers_dev_within_the_budget_and_otherwise_forgets_least(caplog):
    cands = [{"alpha": 1.0, "dev": 0.35, "ood_drop": 1.5}, {"alpha": 0.7, "dev": 0.345, "ood_drop": 0.4},
             {"alpha": 0.5, "dev": 0.33, "ood_drop": 0.1}]
    assert choose_mix(cands, 0.5)["alpha"] == 0.7
    assert choose_mix(cands, 2.0)["alpha"] == 1.0
    assert choose_mix(cands, 0.05)["alpha"] == 0.5 and "no mix stays within" in caplog.text
    start = {"alpha": 0.0, "dev": 0.30, "ood_drop": 0.0}  # mix_with_base always offers the starting model
    assert choose_mix([start, *cands], 0.05) == start and choose_mix([start, *cands], 0.5)["alpha"] == 0.7
    tie = [{"alpha": 0.5, "dev": 0.3, "ood_drop": 0.0}, {"alpha": 0.9, "dev": 0.3, "ood_drop": 0.0}]
    assert choose_mix(tie, 0.5)["alpha"] == 0.9


def test_ood_drop_is_the_worst_primary_metric_drop_in_points():
    base = {"a/ndcg@10": 0.50, "a/recall@100": 0.9, "b/spearman_cosine": 0.80}
    assert ood_drop({"a/ndcg@10": 0.49, "a/recall@100": 0.1, "b/spearman_cosine": 0.797}, base) == pytest.approx(1.0)
    assert ood_drop({"a/ndcg@10": 0.51, "b/spearman_cosine": 0.81}, base) == pytest.approx(-1.0)


@pytest.mark.parametrize("extra, message", [
    (["train.max_ood_drop=0.5"], "interpolate_base"),
    (["train.max_ood_drop=0.5", "train.interpolate_base=[0.5]"], "out-of-domain sets"),
])
def test_forgetting_budget_needs_mixes_and_out_of_domain_sets(tiny_model_path, tmp_path, beir, extra, message):
    with pytest.raises(ConfigError, match=message):
        train(_query_side_config(tiny_model_path, tmp_path / "x", beir, *extra), None)


def test_forgetting_budget_leaves_out_sets_without_a_dev_split(tiny_model_path, tmp_path, beir, caplog):
    with_dev = _ood_folder(tmp_path)
    no_dev = write_graded_beir(tmp_path / "no-dev", n_docs=30, n_queries=16)
    (no_dev / "qrels" / "test.tsv").write_text((no_dev / "qrels" / "dev.tsv").read_text())
    (no_dev / "qrels" / "dev.tsv").unlink()
    base = (f"eval.retrieval=[{beir}]", "eval.k_values=[10]", "train.interpolate_base=[0.5]",
            "train.max_ood_drop=0.5")
    with pytest.raises(ConfigError, match="no out-of-domain set has a 'dev' split"):
        train(_query_side_config(tiny_model_path, tmp_path / "a", beir, *base, f"eval.ood_retrieval=[{no_dev}]"),
              None)
    result = train(_query_side_config(tiny_model_path, tmp_path / "b", beir, *base,
                                      f"eval.ood_retrieval=[{with_dev}, {no_dev}]"), None)
    assert f"out-of-domain set {no_dev} has no usable 'dev' split" in caplog.text
    assert any("forgetting_budget" in h for h in result.history)


def test_labelled_corpus_scope_keeps_only_the_documents_a_training_row_names(beir, tiny_model_path, tmp_path, caplog):
    caplog.set_level("INFO")
    examples, _ = load_examples(beir, format="beir", split="train")
    named = {i for ex in examples for i in ex.positive_ids}
    assert 0 < len(named) < 40, "the fixture must leave documents unlabelled for this test to say anything"
    cfg = load_recipe(None, [f"data.train={beir}", "data.format=beir", "train.tune=query",
                             "train.corpus_scope=labelled"])
    texts, ids, where = load_corpus_texts(cfg, examples)
    all_texts, all_ids, _ = load_corpus_texts(load_recipe(None, [f"data.train={beir}", "train.tune=query"]), examples)
    assert ids == [i for i in all_ids if i in named]  # corpus order kept
    assert texts == [t for t, i in zip(all_texts, all_ids) if i in named] and where.endswith("(labelled documents only)")
    assert f"{len(named)} of the 40 corpus documents" in caplog.text
    result = train(_query_side_config(tiny_model_path, tmp_path / "out", beir, "train.corpus_scope=labelled",
                                      "train.max_steps=2"), None)
    assert result.steps == 2
    with pytest.raises(ConfigError, match="train.corpus_scope chooses documents of the corpus of corpus negatives"):
        load_recipe(None, ["train.corpus_scope=labelled"])
