"""Run report: forgetting and overfitting flags, the before/after table, report files and non-empty plots."""

from __future__ import annotations

import numpy as np
import pytest

from textcl.pipeline.report import (
    forgetting_flags,
    format_table,
    interpolation_trials,
    overfitting_flags,
    write_report,
)

BEFORE = {"dom/ndcg@10": 0.30, "dom/recall@10": 0.5, "gen/ndcg@10": 0.90, "sts/spearman_cosine": 0.80}
AFTER = {"dom/ndcg@10": 0.70, "dom/recall@10": 0.9, "gen/ndcg@10": 0.87, "sts/spearman_cosine": 0.795}
OOD = ["gen/ndcg@10", "sts/spearman_cosine"]


def _history(dev: list[float], losses: list[float]) -> list[dict]:
    out = [{"step": 0, "eval": {"dev": {"dom/ndcg@10": dev[0]}, "ood": {"gen/ndcg@10": 0.9}}}]
    for i, loss in enumerate(losses, 1):
        out.append({"step": i, "loss": loss, "lr": 1e-4 * (1 - i / (len(losses) + 1))})
        if i % 2 == 0 and i // 2 < len(dev):
            out.append({"step": i, "eval": {"dev": {"dom/ndcg@10": dev[i // 2]}, "ood": {"gen/ndcg@10": 0.89}}})
    return out


def test_forgetting_flag_threshold_in_points():
    flags = forgetting_flags(BEFORE, AFTER, OOD, threshold_points=2.0)
    assert [f["metric"] for f in flags] == ["gen/ndcg@10"]  # 3.0 points > 2; spearman dropped only 0.5
    assert flags[0]["drop_points"] == 3.0 and flags[0]["before"] == 0.90 and flags[0]["after"] == 0.87
    assert forgetting_flags(BEFORE, AFTER, OOD, threshold_points=3.5) == []
    # Swapped: dom/ndcg@10 falls 40 points, but it is in-domain (and the OOD metrics rise): no flag.
    assert forgetting_flags(AFTER, BEFORE, OOD, threshold_points=0.1) == []


def test_overfitting_flag_needs_falling_metric_and_falling_loss():
    losses = [2.0, 1.6, 1.2, 0.9, 0.6, 0.4, 0.3, 0.2]
    flags = overfitting_flags(_history([0.3, 0.6, 0.55, 0.5], losses))
    assert len(flags) == 1
    f = flags[0]
    assert (f["metric"], f["best_step"], f["best"], f["last_step"], f["last"]) == ("dom/ndcg@10", 2, 0.6, 6, 0.5)
    assert f["drop_points"] == 10.0 and f["loss_at_best"] == 1.6 and f["loss_last"] == 0.2
    assert overfitting_flags(_history([0.3, 0.5, 0.6, 0.7], losses)) == []  # metric still improving
    assert overfitting_flags(_history([0.3, 0.6, 0.55, 0.5], [2, 1, 1.5, 2, 2.5, 3, 3.5, 4])) == []  # loss rising


def test_table_lists_in_domain_first():
    table = format_table(BEFORE, AFTER, OOD)
    lines = table.splitlines()
    assert lines[1].startswith("in-domain") and "dom/ndcg@10" in lines[1] and "+40.00pt" in lines[1]
    assert lines[2].startswith("out-of-domain") and "-3.00pt" in lines[2]
    assert "recall@10" not in table  # primary metrics only


def test_write_report_files_and_plots(tmp_path):
    history = _history([0.3, 0.6, 0.55, 0.5], [2.0, 1.6, 1.2, 0.9, 0.6, 0.4, 0.3, 0.2])
    rng = np.random.default_rng(0)
    sims = {"before": {"positive": rng.normal(0.4, 0.1, 50).tolist(), "random negative": rng.normal(0.1, 0.1, 50).tolist()},
            "after": {"positive": rng.normal(0.6, 0.1, 50).tolist(), "random negative": rng.normal(0.0, 0.1, 50).tolist()}}
    summary = {"recipe": "r.yaml", "seed": 1, "base_model": "base", "model_dir": "m", "before": BEFORE, "after": AFTER,
               "ood_metrics": OOD, "mining": {"outcomes": {"margin": 10, "selected": 5, "unused": 0}},
               "flags": {"forgetting": forgetting_flags(BEFORE, AFTER, OOD, 2.0), "overfitting": overfitting_flags(history)},
               "stages": {"train": {"status": "done", "seconds": 1.5}}}
    md_path = write_report(summary, history, sims, tmp_path)
    md = md_path.read_text()
    html = (tmp_path / "report.html").read_text()
    assert "**FORGETTING**: gen/ndcg@10 fell 3.00 points" in md and "<b>FORGETTING</b>" in html
    assert "**OVERFITTING**: dev dom/ndcg@10 fell from 0.6000 (step 2) to 0.5000 (step 6)" in md
    assert "| in-domain | dom/ndcg@10 | 30.00 | 70.00 | +40.00 |" in md  # points everywhere
    assert "<td>in-domain</td><td>dom/ndcg@10</td>" in html
    for name in ("training", "heldout", "before_after", "similarity", "mining"):
        png = tmp_path / "plots" / f"{name}.png"
        assert f"plots/{name}.png" in md and f'src="plots/{name}.png"' in html
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        import matplotlib.image as mpimg
        pixels = mpimg.imread(png)
        assert pixels.shape[0] > 200 and pixels.std() > 0.05  # an actual chart, not a blank canvas


def test_plots_are_omitted_without_data(tmp_path):
    md = write_report({"before": {}, "after": {}, "stages": {}}, [], {}, tmp_path).read_text()
    assert "![" not in md and not list(tmp_path.rglob("*.png"))
    assert "- forgetting: **not checked** (no out-of-domain set: add eval.ood_retrieval or eval.ood_sts)" in md
    assert "- overfitting: **not checked** (0 dev evaluations during training; it needs 3 or more" in md
    md = write_report({"before": {}, "after": {}, "stages": {}, "ood_metrics": ["gen/ndcg@10"],
                       "dev_evaluations": 4}, [], {}, tmp_path).read_text()
    assert "- forgetting: none flagged (out-of-domain sets: gen)" in md
    assert "- overfitting: none flagged (4 dev evaluations)" in md


@pytest.mark.parametrize("mix_dev, line_end", [(0.65, "the model is the a=0.75 mix"),
                                               (0.55, "the checkpoint stays the model")])
def test_interpolation_trials_in_report(tmp_path, mix_dev, line_end):
    history = _history([0.3, 0.6, 0.55], [2.0, 1.6, 1.2, 0.9])  # best checkpoint: step 2, dev 0.6
    history += [{"step": 2, "interpolation": a, "metric": "dom/ndcg@10",
                 "eval": {"dev": {"dom/ndcg@10": d}, "ood": {"gen/ndcg@10": 0.9}}}
                for a, d in ((0.5, 0.58), (0.75, mix_dev))]
    trials = interpolation_trials(history)
    assert trials == [{"alpha": 0.5, "step": 2, "metric": "dom/ndcg@10", "dev": 0.58, "checkpoint_dev": 0.6},
                      {"alpha": 0.75, "step": 2, "metric": "dom/ndcg@10", "dev": mix_dev, "checkpoint_dev": 0.6}]
    summary = {"before": {}, "after": {}, "stages": {}, "interpolation": trials}
    md = write_report(summary, history, {}, tmp_path).read_text()
    assert ("WiSE-FT (`train.interpolate_base`), dev dom/ndcg@10 of a x step 2 + (1 - a) x base: a=0.5 58.00, "
            f"a=0.75 {100 * mix_dev:.2f} vs 60.00 for the checkpoint: {line_end}") in md
