"""LoRA query towers (train.lora) and chaining a linear adapter into query-tower training (train.init_adapter) on
the tiny BERT: plain sentence-transformers loads the output and reproduces textcl's query embeddings, documents stay
the base model's, only the LoRA updates train, and the adapter-only folder rebuilds the tower with peft."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from test_adapter_recipe import _beir, _config
from train_helpers import tiny_config

from textcl.adapter_files import apply_adapter, load_adapter
from textcl.config import LoraConfig, RunConfig, TrainConfig
from textcl.data.beir import load_beir
from textcl.errors import ConfigError
from textcl.eval.retrieval import evaluate_retrieval
from textcl.models import Encoder, encoder_for, load_model
from textcl.models.lora import LORA_DIR, add_lora, has_lora, merge_lora, merged_copy
from textcl.train.adapter import train_adapter
from textcl.train.loop import train

pytest.importorskip("peft")


def _texts(data: Path) -> tuple[list[str], list[str]]:
    rset = load_beir(data, "dev")
    return list(rset.queries.values()), [d.full_text for d in rset.corpus.values()]


def _lora_config(tiny: Path, data: Path, out: Path, *extra: str) -> RunConfig:
    return tiny_config(tiny, out, f"data.train={data}", "data.format=beir", "mining.enabled=false", "train.tune=query",
                       f"eval.retrieval=[{data}]", "eval.dev_split=dev", "eval.k_values=[1,3,10]",
                       "train.lr=0.05", "train.eval_every=2", "model.precision=fp32", "train.lora.r=4",
                       "train.lora.alpha=8", *extra)


@pytest.fixture(scope="module")
def lora_run(tiny_model_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    data = _beir(root / "toy")
    config = _lora_config(tiny_model_path, data, root / "model")
    return config, train(config), data


def test_lora_round_trip_through_plain_sentence_transformers(lora_run, tiny_model_path):
    config, result, data = lora_run
    out = Path(result.output_dir)
    assert result.after["dev"] != result.before["dev"]  # the updates changed the query tower
    queries, docs = _texts(data)
    tuned, base = SentenceTransformer(str(out), device="cpu"), SentenceTransformer(str(tiny_model_path), device="cpu")
    # textcl's own encoding of the kept model (checkpoints/best, LoRA merged) = plain encode_query of the folder
    encode = encoder_for(load_model(out, device="cpu"), config.model, scoring=True, cache=False, show_progress=False)
    np.testing.assert_allclose(tuned.encode_query(queries, convert_to_numpy=True), encode(queries, "query"), atol=1e-5)
    np.testing.assert_allclose(tuned.encode_document(docs, convert_to_numpy=True),
                               base.encode_document(docs, convert_to_numpy=True), atol=1e-6)
    assert not np.allclose(tuned.encode_query(queries, convert_to_numpy=True),
                           base.encode_query(queries, convert_to_numpy=True), atol=1e-4)
    assert evaluate_retrieval(encode, load_beir(data, "dev"), [1, 3, 10]) == pytest.approx(result.after["dev"],
                                                                                           abs=1e-6)
    # the updates alone (a peft adapter folder) rebuild the same query tower on the base transformer
    from peft import PeftModel
    lora_dir = out / LORA_DIR
    adapter_config = json.loads((lora_dir / "adapter_config.json").read_text())
    assert adapter_config["r"] == 4 and adapter_config["base_model_name_or_path"] == str(tiny_model_path)
    rebuilt = SentenceTransformer(str(tiny_model_path), device="cpu")
    rebuilt[0].auto_model = PeftModel.from_pretrained(rebuilt[0].auto_model, str(lora_dir))
    np.testing.assert_allclose(rebuilt.encode_query(queries, convert_to_numpy=True),
                               tuned.encode_query(queries, convert_to_numpy=True), atol=1e-5)
    weights = sum(f.stat().st_size for f in (out / "query_0_Transformer").glob("*.safetensors"))
    assert (lora_dir / "adapter_model.safetensors").stat().st_size < weights / 5


def test_only_the_lora_updates_train(tiny_model_path):
    model = load_model(tiny_model_path, device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = add_lora(model, LoraConfig(r=2, alpha=4.0))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert trainable == 2 * 2 * (2 * 32 + 2 * 32)  # 2 layers x (query, value) x (A: r x 32, B: 32 x r)
    x = ["heart risk", "what is vitamin d"]
    plain = SentenceTransformer(str(tiny_model_path), device="cpu").encode_query(x, convert_to_numpy=True)
    np.testing.assert_allclose(model.encode_query(x, convert_to_numpy=True), plain, atol=1e-6)  # B = 0 at start
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    merged = merged_copy(model)
    assert has_lora(model) and not has_lora(merged) and set(merged.state_dict()) == set(before)
    np.testing.assert_allclose(merged.encode_query(x, convert_to_numpy=True), model.encode_query(x, convert_to_numpy=True),
                               atol=1e-5)


def test_a_bf16_encoder_follows_the_model_when_its_lora_layers_are_merged(tiny_model_path):
    """Encoding at bf16 keeps a bf16 copy of the model; merging the LoRA updates after training renames the
    weights (WiSE-FT and the significance check merge before they score), so the copy must be rebuilt."""
    model = load_model(tiny_model_path, device="cpu")
    add_lora(model, LoraConfig(r=2, alpha=4.0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    encode = Encoder(model, precision="bf16", show_progress=False)
    before = encode(["heart risk", "what is vitamin d"], "query")
    merge_lora(model)
    after = encode(["heart risk", "what is vitamin d"], "query")  # raised KeyError before the fix
    assert not has_lora(model)
    np.testing.assert_allclose(after, before, atol=2e-2)  # the same function, at bf16


def test_chaining_starts_the_query_tower_at_the_adapter(tiny_model_path, tmp_path):
    data = _beir(tmp_path / "toy")
    adapter_out = Path(train_adapter(_config(tiny_model_path, data, tmp_path / "adapter")).output_dir)
    weight, bias, _ = load_adapter(adapter_out)  # the tune: adapter output folder (its adapter/)
    chain = ("train.lora.r=0", f"train.init_adapter={adapter_out}", "train.max_steps=2")
    result = train(_lora_config(tiny_model_path, data, tmp_path / "chained", *chain))
    adapter_dev = json.loads((adapter_out / "adapter" / "adapter.json").read_text())["dev_best"]
    assert result.before["dev"] == pytest.approx(adapter_dev, abs=1e-6)  # step 0 = base + adapter
    # without a dev set the last weights are kept: the transformer under the frozen adapter moved
    result = train(_lora_config(tiny_model_path, data, tmp_path / "last", *chain, "eval.retrieval=[]"))
    tuned = SentenceTransformer(str(result.output_dir), device="cpu")
    dense = tuned[0].sub_modules["query"][-2]
    np.testing.assert_array_equal(dense.linear.weight.detach().numpy(), weight)  # frozen: the adapter's W
    queries, _ = _texts(data)
    base = SentenceTransformer(str(tiny_model_path), device="cpu")
    start = apply_adapter(base.encode_query(queries, convert_to_numpy=True), weight, bias, True)
    assert not np.allclose(tuned.encode_query(queries, convert_to_numpy=True), start, atol=1e-4)


def test_lora_and_init_adapter_need_tune_query():
    with pytest.raises(ConfigError, match=r"train.lora.r shapes the query tower, so it needs train.tune: query"):
        RunConfig(train=TrainConfig(lora=LoraConfig(r=4))).check()
    with pytest.raises(ConfigError, match=r"train.init_adapter shapes the query tower"):
        RunConfig(train=TrainConfig(tune="adapter", init_adapter="x")).check()
    with pytest.raises(ConfigError, match=r"train.lora: r must be >= 0"):
        RunConfig(train=TrainConfig(tune="query", lora=LoraConfig(r=4, target_modules=[]))).check()
