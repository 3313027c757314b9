"""The training loop on the tiny BERT: output folder, exact resume, best checkpoint, early stopping."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from sentence_transformers import SentenceTransformer
from train_helpers import make_examples, tiny_config, weights

from textcl.config import TrainConfig, load_recipe
from textcl.errors import ConfigError
from textcl.train import checkpoint as ckpt
from textcl.train.components import build_optimizer, build_scheduler, layer_depth
from textcl.train.loop import train
from textcl.types import ScoredPair


def test_output_loads_in_sentence_transformers_with_card_and_config(tiny_model_path, tmp_path, examples):
    out = tmp_path / "out"
    result = train(tiny_config(tiny_model_path, out), examples, provenance={"data": {"train": "synthetic"}})
    assert result.steps == 6 and len([h for h in result.history if "loss" in h]) == 6
    model = SentenceTransformer(str(out), device="cpu")
    emb = model.encode(["cancer diet", "red car"])
    assert emb.shape == (2, 32)
    before = weights(tiny_model_path)
    assert any(not torch.equal(before[k], v) for k, v in weights(out).items())  # it trained
    card = (out / "README.md").read_text()
    assert "synthetic" in card and "batch_size: 4" in card and "infonce" in card
    saved = yaml.safe_load((out / "textcl_config.yaml").read_text())
    assert saved["train"]["max_steps"] == 6 and saved["train"]["output_dir"] == "."  # relative to the file
    assert load_recipe(out / "textcl_config.yaml").model.name_or_path == str(tiny_model_path)
    # lr 1e-3, 6 steps, warmup ceil(0.1 x 6) = 1 step, linear decay: after step s the lr is 1e-3 x (6 - s) / 5
    logged = [h for h in result.history if "loss" in h]
    assert [h["lr"] for h in logged] == pytest.approx([1e-3 * (6 - s) / 5 for s in range(1, 7)])
    assert all(h["examples_per_s"] > 0 for h in logged)


def test_resume_is_bitwise_equal_to_an_uninterrupted_run(tiny_model_path, tmp_path, examples):
    # 6 steps straight vs 3 steps, stop, resume, 3 more; dropout is on, so RNG state must be restored.
    straight = train(tiny_config(tiny_model_path, tmp_path / "a"), examples)
    stopped = train(tiny_config(tiny_model_path, tmp_path / "b"), examples,
                    callbacks=[lambda event: event["step"] == 3])
    assert stopped.steps == 3
    resumed = train(tiny_config(tiny_model_path, tmp_path / "b"), examples, resume=True)
    assert resumed.steps == 6 and straight.steps == 6
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    losses_a = [h["loss"] for h in straight.history if "loss" in h]
    losses_b = [h["loss"] for h in resumed.history if "loss" in h]
    assert losses_a == losses_b


def test_best_checkpoint_is_the_output_and_early_stopping(tiny_model_path, tmp_path, examples):
    scores = iter([0.10, 0.20, 0.50, 0.30, 0.25, 0.90])  # step 0, 1, 2, 3, 4 (stop), never reached

    def dev(encode):
        emb = encode(["cancer diet"], "query")
        assert emb.shape == (1, 32)
        return {"toy/ndcg@10": next(scores)}

    out = tmp_path / "out"
    config = tiny_config(tiny_model_path, out, "train.eval_every=1", "train.early_stopping_patience=2",
                         "train.save_every=1")
    result = train(config, examples, dev=dev)
    assert result.stopped_early and result.steps == 4
    assert result.before == {"dev": {"toy/ndcg@10": 0.10}, "ood": {}}
    assert result.after["dev"] == {"toy/ndcg@10": 0.50}
    best = ckpt.TrainerState(**json.loads((out / "checkpoints" / "step-00000004" / "trainer_state.json").read_text()))
    assert best.best_step == 2 and best.evals_without_improvement == 2
    # The output folder holds the step-2 weights, not the step-4 ones.
    assert weights(out).keys() == weights(out / "checkpoints" / "best").keys()
    for key, value in weights(out / "checkpoints" / "best").items():
        assert torch.equal(weights(out)[key], value)
    last = {k.split(".", 2)[2]: v for k, v in weights(out / "checkpoints" / "step-00000004").items()}
    assert any(not torch.equal(last[k], v) for k, v in weights(out).items())  # step 4 is not the output
    card = (out / "README.md").read_text()
    assert "| dev | toy/ndcg@10 | 10.00 | 50.00 | +40.00 |" in card  # points, as in every textcl table


def test_cosent_and_simcse_train(tiny_model_path, tmp_path):
    pairs = [ScoredPair(ex.query, ex.positives[0], float(i % 5)) for i, ex in enumerate(make_examples(12))]
    result = train(tiny_config(tiny_model_path, tmp_path / "c", "loss.name=cosent", "train.max_steps=2"), pairs)
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    result = train(tiny_config(tiny_model_path, tmp_path / "a", "loss.name=cosent", "loss.angle_weight=1.0",
                               "train.max_steps=2"), pairs)
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    texts = [ex.positives[0] for ex in make_examples(12)]
    result = train(tiny_config(tiny_model_path, tmp_path / "s", "loss.name=simcse", "train.max_steps=2"), texts)
    assert result.steps == 2


def test_layer_lr_decay_groups(tiny_model_path, tmp_path):
    model = SentenceTransformer(str(tiny_model_path), device="cpu")
    cfg = tiny_config(tiny_model_path, tmp_path, "train.layer_lr_decay=0.5", "train.lr=1.0").train
    lr_of = {id(p): g["lr"] for g in build_optimizer(model, cfg).param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    blocks = sorted({layer_depth(n, 99) for n in names if ".layer." in n})
    top = len(blocks) + 1
    for name, p in names.items():
        want = 0.5 ** (top - layer_depth(name, len(blocks)))
        assert lr_of[id(p)] == want, name
    assert lr_of[id(names[next(n for n in names if "word_embeddings" in n)])] == 0.5 ** top
    assert lr_of[id(names[next(n for n in names if f"layer.{len(blocks) - 1}." in n)])] == 0.5
    # decay 1 (default): one lr for all, the two weight-decay groups as before
    plain = build_optimizer(model, tiny_config(tiny_model_path, tmp_path).train)
    assert [g["weight_decay"] for g in plain.param_groups] == [0.01, 0.0]
    assert {g["lr"] for g in plain.param_groups} == {0.001}
    # training with it: the logged lr is the top group's (the configured lr under the schedule)
    result = train(tiny_config(tiny_model_path, tmp_path / "t", "train.layer_lr_decay=0.5", "train.lr=1e-3",
                               "train.max_steps=2", "train.warmup_ratio=0", "train.scheduler=constant"),
                   make_examples(8))
    assert result.steps == 2 and [h["lr"] for h in result.history] == [1e-3, 1e-3]


def test_layer_lr_decay_needs_numbered_layers(tiny_model_path, tmp_path):
    cfg = tiny_config(tiny_model_path, tmp_path, "train.layer_lr_decay=0.8").train
    with pytest.raises(ConfigError, match="layer_lr_decay"):
        build_optimizer(torch.nn.Sequential(torch.nn.Linear(4, 4)), cfg)


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
@pytest.mark.parametrize("warmup, total", [(0, 8), (2, 6), (3, 10), (10, 10)])
def test_schedule_equals_transformers(kind, warmup, total):
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )
    ratio = warmup / total
    warmup = math.ceil(ratio * total)  # what build_scheduler computes from the ratio
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = {"linear": lambda: get_linear_schedule_with_warmup(opt, warmup, total),
           "cosine": lambda: get_cosine_schedule_with_warmup(opt, warmup, total),
           "constant": lambda: get_constant_schedule_with_warmup(opt, warmup)}[kind]()
    expected = []
    for _ in range(total):
        expected.append(ref.get_last_lr()[0])
        opt.step()
        ref.step()
    ours_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ours = build_scheduler(ours_opt, TrainConfig(scheduler=kind, warmup_ratio=ratio), total)
    got = []
    for _ in range(total):
        got.append(ours.get_last_lr()[0])
        ours_opt.step()
        ours.step()
    assert got == pytest.approx(expected)


@pytest.mark.parametrize("interpolation_wins", [True, False])
def test_interpolate_base_keeps_the_dev_best_mix(tiny_model_path, tmp_path, examples, interpolation_wins):
    # Dev at steps 0, 3, 6, then for alpha 0.25, 0.5, 0.75: the best checkpoint is step 3 (0.5).
    late = [0.4, 0.6, 0.2] if interpolation_wins else [0.4, 0.45, 0.2]
    scores = iter([0.1, 0.5, 0.3, *late])
    out = tmp_path / "out"
    config = tiny_config(tiny_model_path, out, "train.eval_every=3", "train.save_every=3",
                         "train.interpolate_base=[0.75, 0.25, 0.5]")
    result = train(config, examples, dev=lambda encode: {"toy/ndcg@10": next(scores)})
    tried = [h for h in result.history if "interpolation" in h]
    assert [h["interpolation"] for h in tried] == [0.25, 0.5, 0.75]
    step3 = {k.split(".", 2)[2]: v for k, v in weights(out / "checkpoints" / "step-00000003").items()}
    base = weights(tiny_model_path)
    got = weights(out)
    assert got.keys() == step3.keys() == base.keys()
    card = (out / "README.md").read_text()
    if interpolation_wins:
        assert result.after["dev"] == {"toy/ndcg@10": 0.6}
        for key, value in got.items():  # 0.5 x fine-tuned (step 3) + 0.5 x base
            torch.testing.assert_close(value, 0.5 * step3[key] + 0.5 * base[key], rtol=0, atol=1e-6)
        assert "0.5 x fine-tuned + 0.50 x base" in card
    else:
        assert result.after["dev"] == {"toy/ndcg@10": 0.5}
        for key, value in got.items():
            assert torch.equal(value, step3[key]), key
        assert "interpolated" not in card
    from textcl.eval.plots import eval_series
    assert [s for s, _ in eval_series(result.history)["dev: toy/ndcg@10"]] == [0, 3, 6]  # not in the curve


def test_interpolate_base_rejects_weights_outside_0_1(tiny_model_path, tmp_path, examples):
    with pytest.raises(ConfigError, match="interpolate_base"):
        train(tiny_config(tiny_model_path, tmp_path / "o", "train.interpolate_base=[0.5, 1.0]"), examples)


def test_each_epoch_has_its_own_batches_and_resume_at_an_epoch_boundary_is_exact(tiny_model_path, tmp_path):
    # 12 examples in batches of 4: steps 1-3 are epoch 0, 4-6 epoch 1 (a regression: later epochs
    # used to replay epoch 0's batches, so a run resumed at the boundary diverged from a straight one)
    examples = make_examples(12)
    seen: list[list[str]] = []
    straight = train(tiny_config(tiny_model_path, tmp_path / "a"), examples,
                     callbacks=[lambda event: seen.append(event["step"])])
    assert straight.steps == 6 and seen == [1, 2, 3, 4, 5, 6]
    stopped = train(tiny_config(tiny_model_path, tmp_path / "b"), examples, callbacks=[lambda e: e["step"] == 3])
    assert stopped.steps == 3
    resumed = train(tiny_config(tiny_model_path, tmp_path / "b"), examples, resume=True)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in straight.history if "loss" in h] == [h["loss"] for h in resumed.history if "loss" in h]


def test_epoch_batches_differ_between_epochs(tiny_model_path):
    from textcl.train.data import epoch_batch_maker
    config = tiny_config(tiny_model_path, tiny_model_path.parent / "unused")
    make = epoch_batch_maker(config, make_examples(12))
    assert [b.queries for b in make(0)] != [b.queries for b in make(1)]


def test_training_pools_like_encoding_when_the_prompt_is_excluded(tiny_model_path):
    # a model whose pooling leaves the prompt out (include_prompt=False, e.g. INSTRUCTOR-style models):
    # training's embed must pool the same tokens as the Encoder used by evaluation and mining
    from textcl.config import ModelConfig
    from textcl.models import Encoder, load_model
    from textcl.train.components import make_embed

    model = load_model(tiny_model_path, device="cpu")
    model[1].include_prompt = False
    cfg = ModelConfig(query_prompt="what is ", document_prompt="")
    texts = ["cancer diet", "the old man and the river"]
    with torch.no_grad():
        trained_view = torch.nn.functional.normalize(make_embed(model, model, cfg)(texts, "query"), dim=1)
    encoded = Encoder(model, precision="fp32", query_prompt="what is ", show_progress=False)(texts, "query")
    assert torch.allclose(trained_view, torch.from_numpy(encoded), atol=1e-5)
    model[1].include_prompt = True  # sanity: with the prompt pooled the embeddings differ
    with torch.no_grad():
        pooled_prompt = torch.nn.functional.normalize(make_embed(model, model, cfg)(texts, "query"), dim=1)
    assert not torch.allclose(pooled_prompt, trained_view, atol=1e-3)
