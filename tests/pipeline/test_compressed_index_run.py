"""`textcl run` with train.tune: adapter and index.compression: binary on the tiny BERT: the adapter trains against
the sign vectors the index returns, the index stage stores the codes, and the reported nDCG (before and after) is
that index's search."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from beir_fixture import write_beir

from textcl.cli import main
from textcl.compress import compress
from textcl.config import ModelConfig
from textcl.data.beir import load_beir
from textcl.errors import ConfigError
from textcl.eval.metrics import evaluate_run, mean_metrics
from textcl.index import CODES, SearchIndex
from textcl.models import encoder_for, load_model
from textcl.train import adapter as train_adapter_module


def _recipe(root, model) -> tuple:
    data = write_beir(root / "toy", n_docs=60, n_queries=16)
    for split in ("dev", "test"):  # a plumbing test: the judgements of training stand in for both
        shutil.copy(data / "qrels" / "train.tsv", data / "qrels" / f"{split}.tsv")
    recipe = {"seed": 3, "output_dir": "./out", "skip": ["check"],
              "model": {"name_or_path": str(model), "precision": "fp32", "batch_size": 16},
              "data": {"train": "toy", "format": "beir", "split": "train"}, "mining": {"enabled": False},
              "loss": {"name": "infonce", "temperature": 0.05},
              "train": {"tune": "adapter", "batch_size": 4, "lr": 0.02, "epochs": 2, "scheduler": "constant",
                        "warmup_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": None},
              "eval": {"retrieval": ["toy"], "split": "test", "dev_split": "dev", "k_values": [1, 10]},
              "index": {"corpus": "toy", "compression": "binary"}}
    (root / "recipe.yaml").write_text("# binary index, adapter trained for it\n" + yaml.safe_dump(recipe))
    return root / "recipe.yaml", data


def _index_ndcg(index: SearchIndex, encode, data) -> float:
    """nDCG@10 of the test queries searched in `index` (its own search, not the evaluator's)."""
    rset = load_beir(data, "test")
    qids = [q for q in rset.qrels if q in rset.queries]
    scores, rows = index.search_embeddings(encode([rset.queries[q] for q in qids], "query"), 10)
    run = {q: {index.rows[r]["id"]: float(s) for s, r in zip(srow, rrow) if r >= 0}
           for q, srow, rrow in zip(qids, scores, rows)}
    return mean_metrics(evaluate_run(rset.qrels, run, [1, 10]))["ndcg@10"]


def test_adapter_trains_for_and_is_scored_on_the_binary_index(tmp_path, tiny_model_path, monkeypatch):
    seen = {}
    real_fit = train_adapter_module.fit_adapter

    def spy(queries, corpus, *args, **kwargs):
        seen["corpus"] = corpus.detach().clone().numpy()
        return real_fit(queries, corpus, *args, **kwargs)

    monkeypatch.setattr(train_adapter_module, "fit_adapter", spy)
    recipe, data = _recipe(tmp_path, tiny_model_path)
    assert main(["run", str(recipe)]) == 0
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    mc = ModelConfig(name_or_path=str(tiny_model_path), precision="fp32")
    base = encoder_for(load_model(tiny_model_path, device="cpu"), mc, scoring=True, cache=False, show_progress=False)
    tuned = encoder_for(load_model(out / "model", device="cpu"), mc, scoring=True, cache=False, show_progress=False)
    docs = base([d.full_text for d in load_beir(data, "test").corpus.values()], "document")
    # the adapter trained against the documents exactly as the binary index returns them
    np.testing.assert_allclose(seen["corpus"], compress(docs, "binary").dequantised, atol=1e-6)
    # the index stage stored sign bits (no float vectors) and keeps the document tower's fingerprint
    config = json.loads((out / "index" / "config.json").read_text())
    assert config["compression"] == "binary" and (out / "index" / CODES).is_file()
    assert not (out / "index" / "embeddings.npy").exists() and config["bytes"]["index"] == 60 * 32 // 8
    assert summary["index"]["compression"] == "binary" and config["fingerprint"] == base.fingerprint
    index = SearchIndex.load(out / "index", tuned)
    # the reported scores are the compressed index's: the tuned model through it, and the base model on the same
    assert summary["after"]["toy/ndcg@10"] == pytest.approx(_index_ndcg(index, tuned, data), abs=1e-6)
    assert summary["before"]["toy/ndcg@10"] == pytest.approx(_index_ndcg(index, base, data), abs=1e-6)
    other = encoder_for(load_model(tiny_model_path, device="cpu"), mc, cache=False, show_progress=False)
    with pytest.raises(ConfigError, match="built with model"):
        SearchIndex.load(out / "index", other, fingerprint="not-the-document-tower")
