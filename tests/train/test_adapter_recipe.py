"""train.tune: adapter on the tiny BERT: the saved Router model's encode_query (plain sentence-transformers) reproduces
textcl's adapter and its dev scores; textcl routes it like a query-side model; the vectors-only path on vectors
exported from the model trains the same adapter and scores the same."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from textcl.adapter_files import apply_adapter, load_adapter
from textcl.cli import main
from textcl.config import (
    AdapterConfig,
    DataConfig,
    EvalConfig,
    MiningConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from textcl.data.beir import load_beir
from textcl.data.vectors import write_vectors
from textcl.errors import ConfigError
from textcl.eval.retrieval import evaluate_retrieval
from textcl.models import RoutedEncoder, encoder_for, load_model
from textcl.train.adapter import train_adapter

WORDS = "cat dog car tree house river music book play run eat drink man woman child good bad new old big".split()


def _beir(folder: Path, seed: int = 0) -> Path:
    """40 documents with distinct texts; queries q0-q19 train (1-3 positives each); dev repeats q0-q7's judgements, so
    that a random tiny model's adapter can beat the identity there."""
    rng = np.random.default_rng(seed)
    docs = list(dict.fromkeys(" ".join(rng.choice(WORDS, size=6)) for _ in range(60)))[:40]
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as fh:
        fh.writelines(json.dumps({"_id": f"d{i}", "title": "", "text": d}) + "\n" for i, d in enumerate(docs))
    with open(folder / "queries.jsonl", "w") as fh:
        fh.writelines(json.dumps({"_id": f"q{q}", "text": " ".join(rng.choice(WORDS, size=2))}) + "\n"
                      for q in range(28))
    lines = [f"q{q}\td{d}\t1\n" for q in range(20) for d in sorted(rng.choice(40, size=int(rng.integers(1, 4)),
                                                                                replace=False))]
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(lines))
    dev = [line for line in lines if int(line.split("\t")[0][1:]) < 8]
    (folder / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(dev))
    return folder


def _config(tiny: Path, data: Path, out: Path, **train) -> RunConfig:
    tc = {"output_dir": str(out), "tune": "adapter", "batch_size": 4, "lr": 0.02, "epochs": 3, "scheduler": "constant",
          "warmup_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": None, "early_stopping_patience": 12, **train}
    return RunConfig(seed=7, model=ModelConfig(name_or_path=str(tiny), precision="fp32"),
                     data=DataConfig(train=str(data), format="beir", split="train"), mining=MiningConfig(enabled=False),
                     train=TrainConfig(**tc), eval=EvalConfig(retrieval=[str(data)], dev_split="dev", k_values=[1, 3, 10]))


@pytest.fixture(scope="module")
def trained(tiny_model_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapter")
    data = _beir(root / "toy")
    config = _config(tiny_model_path, data, root / "model")
    return config, train_adapter(config), data, root


def test_router_encode_query_reproduces_the_adapter_and_its_dev_scores(trained, tiny_model_path):
    config, result, data, _ = trained
    out = Path(result.output_dir)
    weight, bias, normalize = load_adapter(out / "adapter")
    assert normalize and weight.shape == (32, 32) and not np.allclose(weight, np.eye(32))
    info = json.loads((out / "adapter" / "adapter.json").read_text())
    assert result.after == {"dev": info["dev_best"]} and result.before == {"dev": info["dev_base"]}
    base, tuned = SentenceTransformer(str(tiny_model_path), device="cpu"), SentenceTransformer(str(out), device="cpu")
    rset = load_beir(data, "dev")
    queries, docs = list(rset.queries.values()), [d.full_text for d in rset.corpus.values()]
    q_base = base.encode_query(queries, convert_to_numpy=True)
    q_tuned = tuned.encode_query(queries, convert_to_numpy=True)
    np.testing.assert_allclose(q_tuned, apply_adapter(q_base, weight, bias, True), atol=1e-5)
    np.testing.assert_allclose(tuned.encode_document(docs, convert_to_numpy=True),
                               base.encode_document(docs, convert_to_numpy=True), atol=1e-6)
    # textcl routes the folder as a query-side model: documents keep the base fingerprint (indexes stay valid)
    encode = encoder_for(load_model(out, device="cpu"), config.model, scoring=True, cache=False, show_progress=False)
    assert isinstance(encode, RoutedEncoder)
    assert encode.fingerprint == encoder_for(load_model(tiny_model_path, device="cpu"), config.model, scoring=True,
                                             cache=False, show_progress=False).fingerprint
    metrics = evaluate_retrieval(encode, rset, [1, 3, 10])
    assert metrics == pytest.approx(info["dev_best"], abs=1e-6)


def test_vectors_only_path_equals_the_model_path(trained, tiny_model_path, tmp_path):
    config, result, data, _ = trained
    encode = encoder_for(load_model(tiny_model_path, device="cpu"), config.model, scoring=True, cache=False,
                         show_progress=False)
    rset = load_beir(data, "train")
    all_queries = {json.loads(x)["_id"]: json.loads(x)["text"] for x in (data / "queries.jsonl").read_text().splitlines()}
    write_vectors(tmp_path / "q.parquet", list(all_queries), encode(list(all_queries.values()), "query"))
    write_vectors(tmp_path / "d.npy", list(rset.corpus), encode([d.full_text for d in rset.corpus.values()], "document"))
    args = ["adapter", "fit", "--queries", str(tmp_path / "q.parquet"), "--documents", str(tmp_path / "d.npy"),
            "--qrels", str(data / "qrels" / "train.tsv"), "--dev-qrels", str(data / "qrels" / "dev.tsv"),
            "--out", str(tmp_path / "fit"), "--lr", "0.02", "--batch-size", "4", "--epochs", "3", "--seed", "7",
            "--k", "1", "--k", "3", "--k", "10"]
    assert main(args) == 0
    model_w, _, _ = load_adapter(Path(result.output_dir) / "adapter")
    vec_w, vec_b, _ = load_adapter(tmp_path / "fit")
    np.testing.assert_allclose(vec_w, model_w, atol=1e-4)
    assert np.load(tmp_path / "fit" / "W.npy").tolist() == vec_w.tolist() and not np.load(tmp_path / "fit" / "b.npy").any()
    info = json.loads((tmp_path / "fit" / "adapter.json").read_text())
    model_info = json.loads((Path(result.output_dir) / "adapter" / "adapter.json").read_text())
    assert info["dataset"] == "toy" and info["best_step"] == model_info["best_step"]
    assert info["dev_best"] == pytest.approx(model_info["dev_best"], abs=1e-6)
    # textcl adapter eval scores the vector files with the same evaluator
    assert main(["adapter", "eval", "--queries", str(tmp_path / "q.parquet"), "--documents", str(tmp_path / "d.npy"),
                 "--qrels", str(data / "qrels" / "dev.tsv"), "--adapter", str(tmp_path / "fit"), "--k", "1", "--k",
                 "3", "--k", "10", "--output", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text()) == pytest.approx(model_info["dev_best"], abs=1e-6)


def test_low_rank_recipe_and_settings_it_cannot_use(tiny_model_path, tmp_path):
    data = _beir(tmp_path / "toy", seed=1)
    config = _config(tiny_model_path, data, tmp_path / "lr", epochs=1, adapter=AdapterConfig(rank=2, bias=True))
    result = train_adapter(config)
    info = json.loads((Path(result.output_dir) / "adapter" / "adapter.json").read_text())
    assert info["parameters"] == 2 * 32 * 2 + 32 and info["settings"]["rank"] == 2
    with pytest.raises(ConfigError, match="train.output_dir already holds a previous run"):
        train_adapter(config)
    with pytest.raises(ConfigError, match=r"train.interpolate_base does not apply to train.tune: adapter"):
        RunConfig(train=TrainConfig(tune="adapter", interpolate_base=[0.5])).check()
    with pytest.raises(ConfigError, match=r"train.adapter.\* configures train.tune: adapter"):
        RunConfig(train=TrainConfig(adapter=AdapterConfig(rank=4))).check()
    with pytest.raises(ConfigError, match=r"train.tune: adapter trains in one process"):
        RunConfig(train=TrainConfig(tune="adapter"), launcher="accelerate launch").check()
