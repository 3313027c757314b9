"""soup.py: weight averaging of models and checkpoints, its checks, and the `textcl soup` command."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file
from sentence_transformers import SentenceTransformer

from textcl.cli import main
from textcl.errors import ConfigError
from textcl.models import load_model
from textcl.soup import average_models


def _perturbed(src, dst, seed):
    """A copy of the model at `src` whose float weights are moved by seeded noise."""
    model = load_model(str(src), device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    model.save(str(dst))
    return dst


@pytest.fixture(scope="module")
def two_models(tiny_model_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("soup")
    return _perturbed(tiny_model_path, root / "a", 1), _perturbed(tiny_model_path, root / "b", 2)


def _state(path):
    return load_model(str(path), device="cpu").state_dict()


def test_uniform_and_weighted_average(two_models, tmp_path):
    a, b = (_state(p) for p in two_models)
    out = average_models(two_models, tmp_path / "soup")
    soup = _state(out)
    floats = [k for k in soup if soup[k].is_floating_point()]
    assert floats and all(torch.allclose(soup[k], (a[k] + b[k]) / 2, atol=1e-6) for k in floats)
    assert all(torch.equal(soup[k], a[k]) for k in soup if not soup[k].is_floating_point())
    assert any(not torch.equal(soup[k], a[k]) for k in floats)
    weighted = _state(average_models(two_models, tmp_path / "w", weights=[3, 1]))
    assert all(torch.allclose(weighted[k], 0.75 * a[k] + 0.25 * b[k], atol=1e-6) for k in floats)
    meta = json.loads((out / "soup.json").read_text())
    assert meta["weights"] == [0.5, 0.5] and len(meta["input_fingerprints"]) == 2
    assert list(out.glob("*.safetensors")) and not list(out.glob("*.bin"))
    emb = SentenceTransformer(str(out), device="cpu").encode(["a soup loads with sentence-transformers"])
    assert emb.shape[0] == 1


def test_single_model_soup_is_the_model(two_models, tmp_path):
    a = _state(two_models[0])
    soup = _state(average_models(two_models[:1], tmp_path / "one"))
    assert all(torch.equal(soup[k], a[k]) for k in a)


def test_checkpoint_folder_as_input(two_models, tmp_path):
    """A textcl checkpoint (weights only) averages like the model it holds."""
    b = load_model(str(two_models[1]), device="cpu")
    ckpt = tmp_path / "step-00000010"
    ckpt.mkdir()
    save_file({k: v.contiguous() for k, v in b.state_dict().items()}, str(ckpt / "model.safetensors"))
    via_ckpt = _state(average_models([two_models[0], ckpt], tmp_path / "c"))
    via_model = _state(average_models(two_models, tmp_path / "m"))
    assert all(torch.allclose(via_ckpt[k], via_model[k]) for k in via_model)
    with pytest.raises(ConfigError, match="first input must be a model folder"):
        average_models([ckpt, two_models[0]], tmp_path / "x")


def _checkpoint(folder, change):
    """A checkpoint folder holding the second model's weights, changed by `change(state, first 2-D weight name)`."""
    def make(models, tmp):
        state = {k: v.contiguous() for k, v in load_model(str(models[1]), device="cpu").state_dict().items()}
        name = next(k for k, v in state.items() if v.dim() == 2)
        (tmp / folder).mkdir()
        save_file(change(state, name), str(tmp / folder / "model.safetensors"))
        return [models[0], tmp / folder], None, name
    return make


def _other_pooling(models, tmp):
    other = tmp / "other"
    shutil.copytree(models[1], other)
    cfg = other / "1_Pooling" / "config.json"
    pooling = json.loads(cfg.read_text())
    pooling["pooling_mode"] = "cls"
    cfg.write_text(json.dumps(pooling))
    return [models[0], other], None, None


@pytest.mark.parametrize("make, message", [
    (_checkpoint("bad-ckpt", lambda s, name: {**s, name: torch.zeros(3, 3)}), "weight '{name}' has shape"),
    (_checkpoint("missing-ckpt", lambda s, name: {k: v for k, v in s.items() if k != name}), "weight names differ"),
    (lambda models, tmp: ([models[0], tmp], None, None), "neither a model folder"),
    (_other_pooling, "module stack differs"),
    (lambda models, tmp: (list(models[:1]), [1, 1], None), "2 weights for 1 models"),
    (lambda models, tmp: (list(models), [0, 0], None), "positive sum"),
], ids=["weight-shape", "weight-names", "not-a-model", "module-stack", "weights-count", "weights-sum"])
def test_refuses_incompatible_inputs(two_models, tmp_path, make, message):
    inputs, weights, name = make(two_models, tmp_path)
    with pytest.raises(ConfigError, match=message.format(name=name)):
        average_models(inputs, tmp_path / "out", weights)


def test_cli(two_models, tmp_path, capsys):
    assert main(["soup", str(tmp_path / "cli"), str(two_models[0]), str(two_models[1])]) == 0
    assert "averaged 2 models" in capsys.readouterr().out
    assert (tmp_path / "cli" / "soup.json").is_file()
    assert main(["soup", str(tmp_path / "cli2"), str(tmp_path / "nothing-here")]) == 2
