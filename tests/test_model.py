"""model.py: path resolution, safe loading, fingerprints, precision, and Encoder parity/order/cache."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch

from textcl import hub
from textcl.errors import ConfigError
from textcl.models import Encoder, load_model, model_fingerprint, resolve_model_path, resolve_precision
from textcl.models import encoder as tm
from textcl.models import precision as precision_module

TEXTS = ["the cat", "a dog and a cat run in the river with the old man", "tea", "",
         "what is the risk of heart disease for a man who eats meat and fish", "the cat"]


@pytest.fixture(scope="module")
def tiny(tiny_model_path):
    return load_model(str(tiny_model_path), device="cpu")


def test_resolve_model_path(tmp_path, monkeypatch):
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    bundled = resolve_model_path("all-MiniLM-L6-v2")
    assert bundled == resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == resolve_model_path(
        "ALL-minilm-l6-V2")  # the bundled name in any letter case
    assert (bundled.endswith("model") and (__import__("pathlib").Path(bundled) / "modules.json").is_file())
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    assert resolve_model_path("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"  # online: a hub id passes through


def test_unknown_model_offline_fails_fast_with_the_closest_name(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_model("all-minilm-l6-v3")
    assert time.perf_counter() - start < 2
    assert str(err.value) == ("no local model (and no network to reach the hub) named 'all-minilm-l6-v3'; "
                              "did you mean 'all-MiniLM-L6-v2'?")
    (tmp_path / "out" / "model").mkdir(parents=True)
    with pytest.raises(ConfigError, match=rf"no model folder named '{tmp_path}/out/modle'; did you mean "
                                          rf"'{tmp_path}/out/model'\?"):
        load_model(str(tmp_path / "out" / "modle"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub.socket, "create_connection", lambda *a, **k: time.sleep(10))  # a hanging network
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="no local model .* named 'org/nothing-here'; give a model folder"):
        resolve_model_path("org/nothing-here")
    assert time.perf_counter() - start < 2


def test_remote_code_needs_opt_in(tmp_path, tiny_model_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_path, folder)
    data = json.loads((folder / "config.json").read_text())
    data["auto_map"] = {"AutoModel": "modeling_x.XModel"}
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="trust_remote_code: true"):
        load_model(str(folder))


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises((ConfigError, OSError, ValueError)):
        load_model(str(tmp_path / "nope" / "model-not-here"))


def test_fingerprint_tracks_weights_not_name(tiny, tiny_model_path, tmp_path):
    fp = model_fingerprint(tiny)
    copy = tmp_path / "renamed"
    shutil.copytree(tiny_model_path, copy)
    other = load_model(str(copy), device="cpu")
    assert model_fingerprint(other) == fp
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    assert model_fingerprint(other) != fp


@pytest.mark.parametrize("amx, auto", [(True, "bf16"), (False, "fp32")])
def test_resolve_precision_auto_is_bf16_only_with_bf16_units(monkeypatch, amx, auto):
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: amx)
    assert resolve_precision("auto", "cpu") == auto
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"  # asked for
    with pytest.raises(ConfigError, match="auto, fp32 or bf16"):
        resolve_precision("fp16", "cpu")


def test_encoder_fp32_matches_sentence_transformers(tiny, monkeypatch):
    enc = Encoder(tiny, precision="fp32", batch_size=2, show_progress=False)
    batches = []
    monkeypatch.setattr(enc, "_batches", lambda lengths, real=enc._batches: batches.append(real(lengths)) or batches[-1])
    out = enc(TEXTS, "document")
    ref = tiny.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-5)  # input order kept despite length sorting
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert len(batches[0]) >= 2  # several batches: the order is restored across them


def test_encoder_bf16_close_to_fp32_and_tracks_weight_updates(tiny_model_path):
    model = load_model(str(tiny_model_path), device="cpu")
    enc = Encoder(model, precision="bf16", show_progress=False)
    ref = Encoder(model, precision="fp32", show_progress=False)(TEXTS)
    out = enc(TEXTS)
    assert out.dtype == np.float32
    assert np.min(np.sum(out * ref, axis=1)) > 0.99
    with torch.no_grad():  # training changes the fp32 weights: the bf16 copy must follow
        for p in model.parameters():
            p.mul_(-1.0)
    after = enc(TEXTS)
    ref_after = Encoder(model, precision="fp32", show_progress=False)(TEXTS)
    assert np.min(np.sum(after * ref_after, axis=1)) > 0.99


def test_prompts_and_roles(tiny):
    enc = Encoder(tiny, precision="fp32", query_prompt="what ", document_prompt="", show_progress=False)
    plain = Encoder(tiny, precision="fp32", show_progress=False)
    np.testing.assert_allclose(enc(["cat"], "query"), plain(["what cat"], "query"), atol=1e-6)
    np.testing.assert_allclose(enc(["cat"], "document"), plain(["cat"], "document"), atol=1e-6)
    with pytest.raises(ConfigError, match="role"):
        enc(["cat"], "passage")
    assert enc([], "query").shape == (0, tiny.get_embedding_dimension())


def test_cache_hit_and_key(tiny, tmp_path, monkeypatch):
    enc = Encoder(tiny, precision="fp32", cache_dir=tmp_path, show_progress=False)
    first = enc(TEXTS)
    folders = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folders) == 1 and len(list(folders[0].glob("part-*.npz"))) == 1
    monkeypatch.setattr(enc, "_encode", lambda *a, **k: pytest.fail("cache miss"))
    np.testing.assert_array_equal(enc(TEXTS), first)
    # rows are keyed per text: a subset in another order (with a repeat) is a hit too
    np.testing.assert_array_equal(enc([TEXTS[2], TEXTS[0], TEXTS[2]]), first[[2, 0, 2]])
    enc_q = Encoder(tiny, precision="fp32", cache_dir=tmp_path, query_prompt="q: ", show_progress=False)
    enc_q(TEXTS, "query")  # other settings: a new entry, not a stale hit
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2
    assert not list(tmp_path.rglob("*.tmp*"))  # atomic write leaves no temp files


def test_cache_encodes_only_texts_it_has_not_seen(tiny, tmp_path):
    enc = Encoder(tiny, precision="fp32", cache_dir=tmp_path, show_progress=False)
    enc(TEXTS[:2])
    calls = []
    real = enc._encode
    enc._encode = lambda texts, prompt, stages: (calls.append(list(texts)), real(texts, prompt, stages))[1]
    both = enc(TEXTS)
    assert calls == [["tea", "", TEXTS[4]]]  # only texts not seen before, each once
    np.testing.assert_allclose(both, Encoder(tiny, precision="fp32", show_progress=False)(TEXTS), atol=1e-6)


def test_cache_key_survives_encoding(tiny_model_path, tmp_path, monkeypatch):
    """Encoding sets the tokenizer's truncation state; the key must not depend on it (a second encoder
    on a fresh copy of the model hits every entry the first one wrote, in any order)."""
    model = load_model(str(tiny_model_path), device="cpu")
    fp = model_fingerprint(model)
    enc = Encoder(model, precision="fp32", cache_dir=tmp_path, show_progress=False)
    enc(TEXTS)
    assert model_fingerprint(model) == fp
    second = enc(["a text encoded after the first call"], "query")
    again = Encoder(load_model(str(tiny_model_path), device="cpu"), precision="fp32", cache_dir=tmp_path,
                    show_progress=False)
    monkeypatch.setattr(again, "_encode", lambda *a, **k: pytest.fail("cache miss"))
    np.testing.assert_array_equal(again(["a text encoded after the first call"], "query"), second)
    again(TEXTS)


def test_cache_follows_weight_changes(tiny_model_path, tmp_path):
    model = load_model(str(tiny_model_path), device="cpu")
    enc = Encoder(model, precision="fp32", cache_dir=tmp_path, show_progress=False)
    before = enc(TEXTS)
    with torch.no_grad():
        next(model.parameters()).add_(0.5)
    after = enc(TEXTS)
    assert not np.allclose(before, after)  # no stale cache hit after training changed the weights
    np.testing.assert_allclose(after, Encoder(model, precision="fp32", show_progress=False)(TEXTS), atol=1e-6)


def test_weights_are_hashed_once_per_model_state(tiny_model_path, tmp_path, monkeypatch):
    model = load_model(str(tiny_model_path), device="cpu")
    enc = Encoder(model, precision="fp32", cache_dir=tmp_path, show_progress=False)
    calls = []
    real = tm.model_fingerprint
    monkeypatch.setattr(tm, "model_fingerprint", lambda m: calls.append(1) or real(m))
    enc(TEXTS)
    enc(TEXTS[:2], "query")
    assert calls == []  # unchanged weights: the hash from construction stands
    with torch.no_grad():
        next(model.parameters()).mul_(1.5)  # an in-place update, as an optimizer step does
    enc(TEXTS)
    assert len(calls) == 1 and enc.fingerprint == real(model)


def test_checkpoint_or_empty_folder_as_model_says_what_to_pass(tmp_path, tiny_model_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_model_path, run)
    step = run / "checkpoints" / "step-00000004"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes(b"")
    (step / "trainer_state.json").write_text("{}")
    with pytest.raises(ConfigError) as err:
        load_model(str(step))
    assert str(err.value) == (f"{step} is a training checkpoint (weights, optimizer and trainer state), not a model "
                              f"folder: pass the run's model folder {run}, or continue training with "
                              "`textcl train RECIPE --resume`")
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'run' / 'checkpoints'} is not a model folder \(no "
                                          r"modules.json or config.json\)"):
        load_model(str(run / "checkpoints"))


def test_encoder_uses_the_models_own_preprocess_for_any_first_module(tiny):
    """A model whose first module is not a Transformer (a model2vec-style StaticEmbedding: no attention mask,
    its own tokenizer call) encodes exactly as sentence-transformers encodes it, prompts included."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    static = StaticEmbedding(tiny.tokenizer, embedding_dim=8)
    model = SentenceTransformer(modules=[static], device="cpu", prompts={"query": "what ", "document": ""})
    enc = Encoder(model, precision="fp32", show_progress=False)
    texts = ["  Coffee and TEA  ", "cat", "the dog and the cat play in the house"]
    ref = model.encode_query(texts)
    np.testing.assert_allclose(enc(texts, "query"), ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-6)
