"""PNG plots for the run report (matplotlib, Agg backend): training curves, held-out metric over steps,
similarity histograms before/after, mining filter counts, before/after bars. Each returns the path
written, or None when there is nothing to plot (no empty charts).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from textcl.eval.metrics import is_primary

log = logging.getLogger(__name__)
COLORS = {"positive": "#2a9d8f", "hardest negative": "#e76f51", "random negative": "#8d99ae",
          "similar pairs (top 25% gold)": "#2a9d8f", "dissimilar pairs (bottom 25% gold)": "#8d99ae"}


def _plt():
    # Imported here: the headless backend must be chosen before pyplot loads, and only reports draw.
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def plot_training(history: Sequence[Mapping], path: Path) -> Path | None:
    """Train loss and learning rate against the optimizer step."""
    rows = [h for h in history if "loss" in h and "lr" in h]
    if not rows:
        return None
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    steps = [h["step"] for h in rows]
    ax1.plot(steps, [h["loss"] for h in rows], marker="o", ms=3, color="#264653")
    ax1.set_ylabel("train loss")
    ax1.set_title("Training loss and learning rate")
    ax1.grid(alpha=0.3)
    ax2.plot(steps, [h["lr"] for h in rows], color="#e9c46a")
    ax2.set_ylabel("learning rate")
    ax2.set_xlabel("step")
    ax2.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax2.grid(alpha=0.3)
    return _save(fig, path)


def eval_series(history: Sequence[Mapping]) -> dict[str, list[tuple[int, float]]]:
    """{"dev: name/metric": [(step, value)], "ood: ...": [...]} from the trainer's eval entries."""
    out: dict[str, list[tuple[int, float]]] = {}
    for h in history:
        if "interpolation" in h:  # WiSE-FT candidates scored after training: not a point of the curve
            continue
        for group, metrics in (h.get("eval") or {}).items():
            for key, value in (metrics or {}).items():
                if is_primary(key):
                    out.setdefault(f"{group}: {key}", []).append((int(h["step"]), float(value)))
    return out


def plot_heldout(history: Sequence[Mapping], path: Path) -> Path | None:
    """Primary held-out metrics (dev solid, out-of-domain dashed) at every evaluation step."""
    series = eval_series(history)
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in series.items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", ms=4, ls="--" if name.startswith("ood") else "-", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("metric")
    ax.set_title("Held-out metrics during training (step 0 = base model)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_similarity(before: Mapping[str, Sequence[float]], after: Mapping[str, Sequence[float]] | None,
                    path: Path) -> Path | None:
    """Histograms of cosine similarity: positives vs negatives, base model (left) and fine-tuned (right)."""
    panels = [(t, d) for t, d in (("base model", before), ("fine-tuned", after))
              if d and any(len(v) for v in d.values())]
    if not panels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), sharey=True, squeeze=False)
    bins = np.linspace(-0.2, 1.0, 49)
    for ax, (title, data) in zip(axes[0], panels):
        for name, values in data.items():
            if len(values):
                ax.hist(np.clip(values, -0.2, 1.0), bins=bins, alpha=0.6, label=f"{name} (n={len(values)})",
                        color=COLORS.get(name))
        ax.set_title(f"Cosine similarity, {title}")
        ax.set_xlabel("cosine similarity")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("count")
    return _save(fig, path)


def plot_mining(outcomes: Mapping[str, int], path: Path) -> Path | None:
    """How many mined candidates each filter removed, and how many were selected."""
    items = [(k, v) for k, v in outcomes.items() if v]
    if not items:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(items) + 1.2))
    names, values = zip(*items)
    colors = ["#2a9d8f" if n == "selected" else "#8d99ae" if n == "unused" else "#e76f51" for n in names]
    ax.barh(names, values, color=colors)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("candidates")
    ax.set_title("Hard-negative mining: outcome of every candidate")
    return _save(fig, path)


def plot_before_after(before: Mapping[str, float], after: Mapping[str, float], path: Path) -> Path | None:
    """Grouped bars of the primary metrics before and after fine-tuning."""
    keys = [k for k in before if k in after and is_primary(k)]
    if not keys:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(keys) + 2), 4))
    x = np.arange(len(keys))
    ax.bar(x - 0.2, [before[k] for k in keys], 0.4, label="base", color="#8d99ae")
    ax.bar(x + 0.2, [after[k] for k in keys], 0.4, label="fine-tuned", color="#2a9d8f")
    for i, k in enumerate(keys):
        ax.text(i - 0.2, before[k], f"{before[k]:.3f}", ha="center", va="bottom", fontsize=8)
        ax.text(i + 0.2, after[k], f"{after[k]:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, keys, fontsize=8)
    ax.set_ylim(0, 1.2)
    ax.set_title("Before / after (test split)")
    ax.legend(loc="upper center", ncol=2)
    return _save(fig, path)
