"""eval.min_gain_se: a run keeps the model it started from unless the tuned model's dev gain is at least that
many standard errors of the per-query paired difference (so few labelled queries never end below base)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.stats
from safetensors.torch import load_file
from test_adapter_recipe import _beir, _config
from test_query_side import write_graded_beir
from train_helpers import tiny_config

from textcl.adapter_files import load_adapter
from textcl.config import load_recipe
from textcl.errors import ConfigError
from textcl.eval.metrics import max_t_threshold, paired_gain
from textcl.train.adapter import train_adapter
from textcl.train.evaluation import significance
from textcl.train.loop import train


def test_paired_gain_is_the_paired_t_statistic():
    rng = np.random.default_rng(0)
    base = {f"q{i}": float(x) for i, x in enumerate(rng.random(30))}
    new = {q: v + float(rng.normal(0.05, 0.1)) for q, v in base.items()}
    new["only-new"] = 1.0  # scored by one side only: not paired, left out
    g = paired_gain(base, new)
    diffs = [new[q] - base[q] for q in base]
    assert g["n"] == 30 and g["mean"] == pytest.approx(np.mean(diffs))
    assert g["t"] == pytest.approx(scipy.stats.ttest_rel([new[q] for q in base], list(base.values())).statistic)
    assert paired_gain(base, base)["t"] == 0.0
    assert paired_gain(base, {q: v + 0.1 for q, v in base.items()})["t"] > 1e6  # every query moved alike


def test_min_gain_se_must_not_be_negative():
    with pytest.raises(ConfigError, match="min_gain_se"):
        load_recipe(None, ["eval.min_gain_se=-1"])


def _run(tiny_model_path, out, beir, se):
    return train(tiny_config(tiny_model_path, out, f"data.train={beir}", "data.format=beir", "mining.enabled=false",
                             "train.tune=query", "train.negatives=corpus", f"eval.retrieval=[{beir}]",
                             "train.eval_every=2", "train.lr=0.003", f"eval.min_gain_se={se}"), None)


def test_a_gain_within_noise_keeps_the_starting_model(tiny_model_path, tmp_path):
    beir = write_graded_beir(tmp_path / "beir")
    free = _run(tiny_model_path, tmp_path / "free", beir, 0)
    steps = [h["step"] for h in free.history if "eval" in h]
    best = next(h for h in free.history if "eval" in h and h["step"] == max(
        steps, key=lambda s: next(e["eval"]["dev"][e["metric"]] for e in free.history if e.get("step") == s
                                  and "eval" in e)))
    assert best["step"] > 0, "the tiny run must improve dev for this test to say anything"
    assert not any("significance" in h for h in free.history)  # 0 = off: any gain is kept
    strict = _run(tiny_model_path, tmp_path / "strict", beir, 1e6)  # no 4-query gain is that significant
    record = next(h["significance"] for h in strict.history if "significance" in h)
    assert record["kept"] == "start" and record["n"] == 4 and record["t"] < 1e6
    assert strict.after == strict.before  # the reported dev scores are the starting model's
    start = load_file(str(tiny_model_path / "model.safetensors"))

    def same_as_start(run: str) -> bool:
        tower = load_file(str(tmp_path / run / "query_0_Transformer" / "model.safetensors"))
        assert set(tower) == set(start)
        return all(np.allclose(tower[k].numpy(), start[k].numpy()) for k in start)

    assert same_as_start("strict") and not same_as_start("free")


def test_the_adapter_keeps_the_identity_unless_its_gain_is_significant(tiny_model_path, tmp_path):
    data = _beir(tmp_path / "toy")
    free = train_adapter(_config(tiny_model_path, data, tmp_path / "free"))
    assert free.after != free.before, "the toy adapter must improve dev for this test to say anything"
    config = _config(tiny_model_path, data, tmp_path / "strict")
    strict = train_adapter(dataclasses.replace(config, eval=dataclasses.replace(config.eval, min_gain_se=1e6)))
    record = next(h["significance"] for h in strict.history if "significance" in h)
    assert record["kept"] == "start" and record["n"] == 8 and record["mean"] > 0
    assert strict.after == strict.before
    weight, bias, _ = load_adapter(tmp_path / "strict" / "adapter")
    assert np.array_equal(weight, np.eye(weight.shape[0], dtype=np.float32)) and not bias.any()


def test_the_threshold_rises_with_the_number_of_unlike_candidates_chosen_among():
    rng = np.random.default_rng(0)
    queries = [f"q{i}" for i in range(400)]
    base = {q: 0.0 for q in queries}
    one = {q: float(rng.normal()) for q in queries}
    assert max_t_threshold(base, [], 1.64) == 1.64  # nothing chosen among: the plain one-sided test
    assert max_t_threshold(base, [one], 1.64) == pytest.approx(1.64, abs=0.15)  # permutation t ~ normal
    assert max_t_threshold(base, [one] * 20, 1.64) == max_t_threshold(base, [one], 1.64)  # 20 copies: one model
    unlike = [{q: float(rng.normal()) for q in queries} for _ in range(20)]
    bonferroni = scipy.stats.norm.ppf(1 - 0.05 / 20)  # independent candidates: the max-T cut ~ Bonferroni's
    assert max_t_threshold(base, unlike, 1.645) == pytest.approx(bonferroni, abs=0.15)
    alike = [{q: v + 0.1 * float(rng.normal()) for q, v in one.items()} for _ in range(20)]
    assert 1.64 <= max_t_threshold(base, alike, 1.64) < max_t_threshold(base, unlike, 1.64)
    assert max_t_threshold(base, unlike, 1.64) == max_t_threshold(base, unlike, 1.64)  # seeded: reproducible


def test_a_gain_that_is_significant_alone_but_not_as_the_best_of_many_keeps_the_start():
    rng = np.random.default_rng(1)
    queries = [f"q{i}" for i in range(300)]
    start = {q: 0.5 for q in queries}
    tuned = {q: 0.5 + float(rng.normal(0.0, 0.1)) for q in queries}
    shift = 2.2 * float(np.std([tuned[q] - 0.5 for q in queries], ddof=1)) / np.sqrt(300) - \
        float(np.mean([tuned[q] - 0.5 for q in queries]))
    tuned = {q: v + shift for q, v in tuned.items()}  # t = 2.2 exactly: over 1.64, under 20 unlike models' cut
    others = [{q: 0.5 + float(rng.normal(0.0, 0.1)) for q in queries} for _ in range(19)]
    assert significance(start, tuned, "m", 1.64)["kept"] == "tuned"
    record = significance(start, tuned, "m", 1.64, [tuned, *others])
    assert record["t"] == pytest.approx(2.2) and record["candidates"] == 20
    assert record["threshold"] > 2.2 and record["kept"] == "start"


def test_training_tests_the_kept_model_against_every_checkpoint_it_was_chosen_among(tiny_model_path, tmp_path):
    beir = write_graded_beir(tmp_path / "beir")
    run = _run(tiny_model_path, tmp_path / "run", beir, 1.64)
    evals = [h for h in run.history if "eval" in h]
    assert all(len(h["dev_per_query"]) == 4 for h in evals)  # the 4 dev queries' values, every evaluation
    record = next(h["significance"] for h in run.history if "significance" in h)
    assert record["candidates"] == len(evals) - 1 and record["threshold"] >= 1.64  # all but the start
    off = _run(tiny_model_path, tmp_path / "off", beir, 0)
    assert not any("dev_per_query" in h for h in off.history)  # stored only for the rule


def test_the_adapters_test_counts_every_adapter_evaluated_on_dev(tiny_model_path, tmp_path):
    config = _config(tiny_model_path, _beir(tmp_path / "toy"), tmp_path / "run")
    run = train_adapter(dataclasses.replace(config, eval=dataclasses.replace(config.eval, min_gain_se=1.0)))
    record = next(h["significance"] for h in run.history if "significance" in h)
    evaluated = [h for h in run.history if "eval" in h and h["step"] > 0]
    assert record["candidates"] == len(evaluated) > 1 and record["threshold"] >= 1.0
