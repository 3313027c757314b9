"""The run report: generalization flags (forgetting, overfitting), the before/after table, and
report.md + report.html with PNG plots, all from the pipeline's summary dict.

Metrics are fractions in [0, 1]; "points" are 100x that (a drop of 0.012 nDCG@10 is 1.2 points).
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from textcl.eval import plots
from textcl.eval.metrics import is_primary

log = logging.getLogger(__name__)
OVERFIT_MIN_DROP_POINTS = 0.5


def forgetting_flags(before: Mapping[str, float], after: Mapping[str, float], ood_keys: Sequence[str],
                     threshold_points: float) -> list[dict]:
    """Out-of-domain primary metrics (nDCG@10, Spearman) that dropped by more than `threshold_points`."""
    flags = []
    for key in ood_keys:
        if key in before and key in after and is_primary(key):
            drop = 100.0 * (before[key] - after[key])
            if drop > threshold_points:
                flags.append({"metric": key, "before": before[key], "after": after[key],
                              "drop_points": round(drop, 3), "threshold_points": threshold_points})
    return flags


def overfitting_flags(history: Sequence[Mapping]) -> list[dict]:
    """Held-out primary metric falling after its best evaluation while the train loss kept falling."""
    series = {k: v for k, v in plots.eval_series(history).items() if k.startswith("dev")}
    losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
    flags = []
    for name, points in series.items():
        if len(points) < 3:
            continue
        best_step, best = max(points, key=lambda p: (p[1], -p[0]))
        last_step, last = points[-1]
        if last_step <= best_step or 100.0 * (best - last) <= OVERFIT_MIN_DROP_POINTS:
            continue
        near_best = [loss for s, loss in losses if s <= best_step] or [losses[0][1]] if losses else []
        after_best = [loss for s, loss in losses if s > best_step]
        if near_best and after_best and after_best[-1] < near_best[-1]:
            flags.append({"metric": name.split(": ", 1)[1], "best_step": best_step, "best": best,
                          "last_step": last_step, "last": last, "drop_points": round(100 * (best - last), 3),
                          "loss_at_best": near_best[-1], "loss_last": after_best[-1]})
    return flags


def interpolation_trials(history: Sequence[Mapping]) -> list[dict]:
    """WiSE-FT candidates the trainer scored after training (`train.interpolate_base`), with the dev value
    of the checkpoint they mix (step = that checkpoint's step). With a forgetting budget
    (`train.max_ood_drop`) each trial also has its out-of-domain dev drop, the budget and whether it was kept."""
    budget = next((h for h in history if "forgetting_budget" in h), None)
    trials = []
    for h in history:
        if "interpolation" not in h:
            continue
        key = h.get("metric")
        checkpoint = next((e["eval"]["dev"].get(key) for e in history if "eval" in e and "interpolation" not in e
                           and e["step"] == h["step"]), None)
        trial = {"alpha": h["interpolation"], "step": h["step"], "metric": key,
                 "dev": (h["eval"].get("dev") or {}).get(key), "checkpoint_dev": checkpoint}
        if budget is not None:
            trial.update(ood_drop_dev=h.get("ood_drop_dev"), budget=budget["forgetting_budget"],
                         kept=budget["chosen"] == h["interpolation"])
        trials.append(trial)
    return trials


def before_after_rows(before: Mapping[str, float], after: Mapping[str, float],
                      ood_keys: Sequence[str] = ()) -> list[tuple[str, str, float | None, float | None]]:
    """(set kind, metric, before, after) for every primary metric, in-domain first."""
    keys = [k for k in dict.fromkeys([*before, *after]) if is_primary(k)]
    keys.sort(key=lambda k: (k in ood_keys, k))
    return [("out-of-domain" if k in ood_keys else "in-domain", k, before.get(k), after.get(k)) for k in keys]


def format_table(before: Mapping[str, float], after: Mapping[str, float], ood_keys: Sequence[str] = ()) -> str:
    """Plain-text before/after table for the terminal."""
    rows = before_after_rows(before, after, ood_keys)
    if not rows:
        return "(no evaluation sets configured)"
    width = max(len("metric (points)"), *(len(r[1]) for r in rows))
    lines = [f"{'set':<14}{'metric (points)':<{width}}  {'base':>8}  {'tuned':>8}  {'delta':>8}"]
    for kind, key, b, a in rows:
        delta = f"{100 * (a - b):+.2f}pt" if a is not None and b is not None else "-"
        lines.append(f"{kind:<14}{key:<{width}}  {_fmt(b):>8}  {_fmt(a):>8}  {delta:>8}")
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"  # points (x100), the unit of every textcl table


def make_plots(summary: Mapping, history: Sequence[Mapping], similarity: Mapping, out_dir: Path) -> dict[str, str]:
    """Write every plot that has data; return {name: path relative to out_dir}."""
    pdir = out_dir / "plots"
    made = {
        "training": plots.plot_training(history, pdir / "training.png"),
        "heldout": plots.plot_heldout(history, pdir / "heldout.png"),
        "before_after": plots.plot_before_after(summary.get("before", {}), summary.get("after", {}),
                                                pdir / "before_after.png"),
        "similarity": plots.plot_similarity(similarity.get("before", {}), similarity.get("after"),
                                            pdir / "similarity.png"),
        "mining": plots.plot_mining((summary.get("mining") or {}).get("outcomes", {}), pdir / "mining.png"),
    }
    return {k: str(v.relative_to(out_dir)) for k, v in made.items() if v is not None}


def render_markdown(summary: Mapping, images: Mapping[str, str]) -> str:
    """report.md: results, generalization flags, data check, mining, training, index, stages."""
    ood = summary.get("ood_metrics", [])
    md = [f"# textcl run report\n\nRecipe: `{summary.get('recipe')}`  \nSeed: {summary.get('seed')}  \n"
          f"Base model: `{summary.get('base_model')}`  \nFine-tuned model: `{summary.get('model_dir') or '-'}`\n"]
    md.append("## Before / after (test split)\n")
    md.append("| set | metric (points, x100) | base | fine-tuned | delta |\n|---|---|---|---|---|")
    for kind, key, b, a in before_after_rows(summary.get("before", {}), summary.get("after", {}), ood):
        delta = f"{100 * (a - b):+.2f}" if a is not None and b is not None else "-"
        md.append(f"| {kind} | {key} | {_fmt(b)} | {_fmt(a)} | {delta} |")
    md.append("")
    if "before_after" in images:
        md.append(f"![before/after]({images['before_after']})\n")
    md.append("## Generalization\n")
    flags = summary.get("flags", {})
    for f in flags.get("forgetting", []):
        md.append(f"- **FORGETTING**: {f['metric']} fell {f['drop_points']:.2f} points "
                  f"({f['before']:.4f} -> {f['after']:.4f}; threshold {f['threshold_points']})")
    for f in flags.get("overfitting", []):
        md.append(f"- **OVERFITTING**: dev {f['metric']} fell from {f['best']:.4f} (step {f['best_step']}) to "
                  f"{f['last']:.4f} (step {f['last_step']}) while train loss fell {f['loss_at_best']:.4f} -> "
                  f"{f['loss_last']:.4f}")
    md += _unflagged(flags, sorted({k.split("/")[0] for k in ood}), summary.get("dev_evaluations", 0))
    trials = summary.get("interpolation") or []
    if trials:
        if "budget" in trials[0]:  # chosen within a forgetting budget, not by dev alone
            best = next((t for t in trials if t["kept"]), trials[0])
            kept = best["kept"]
            budget = (f" within the forgetting budget of {trials[0]['budget']} points (out-of-domain dev drop: "
                      + ", ".join(f"a={t['alpha']} {t['ood_drop_dev']:.2f}" for t in trials) + ")")
        else:
            best = max(trials, key=lambda t: t["dev"])
            kept, budget = best["checkpoint_dev"] is None or best["dev"] > best["checkpoint_dev"], ""
        md.append(f"- WiSE-FT (`train.interpolate_base`), dev {trials[0]['metric']} of a x step {trials[0]['step']} "
                  f"+ (1 - a) x base: " + ", ".join(f"a={t['alpha']} {_fmt(t['dev'])}" for t in trials)
                  + f" vs {_fmt(trials[0]['checkpoint_dev'])} for the checkpoint{budget}: "
                  + (f"the model is the a={best['alpha']} mix" if kept else "the checkpoint stays the model"))
    md.append("")
    for name, title in (("heldout", "Held-out metrics over steps"), ("training", "Loss and learning rate"),
                        ("similarity", "Similarity of positives vs negatives"), ("mining", "Mining filters")):
        if name in images:
            md.append(f"### {title}\n\n![{title}]({images[name]})\n")
    md += _data_section(summary.get("data") or {})
    mining = summary.get("mining")
    if mining:
        md.append("## Mining\n")
        md.append(f"{mining.get('negatives', 0)} negatives for {mining.get('rows', 0)} rows from "
                  f"{mining.get('candidates', 0)} candidates (index {mining.get('index')}); outcomes: "
                  + ", ".join(f"{k} {v}" for k, v in mining.get("outcomes", {}).items() if v) + "\n")
    index = summary.get("index")
    if index:
        recall = index.get("recall")
        rtext = f", recall@{recall['k']} vs exact {recall['recall']:.4f}" if recall else ""
        md.append(f"## Index\n\n`{index['path']}`: {index['count']} documents, {index['factory']}{rtext}. Search "
                  f"it with `textcl index search {index['path']} \"your query\"`.\n")
    md.append("## Stages\n\n| stage | status | seconds |\n|---|---|---|")
    for name, st in summary.get("stages", {}).items():
        md.append(f"| {name} | {st['status']} | {st.get('seconds', 0):.1f} |")
    return "\n".join(md) + "\n"


def _unflagged(flags: Mapping, ood_names: Sequence[str], dev_evaluations: int) -> list[str]:
    """Say "none flagged" only for what was checked; a check that could not run says "not checked"."""
    lines = []
    if not flags.get("forgetting"):
        lines.append(f"- forgetting: none flagged (out-of-domain sets: {', '.join(ood_names)})" if ood_names else
                     "- forgetting: **not checked** (no out-of-domain set: add eval.ood_retrieval or eval.ood_sts)")
    if not flags.get("overfitting"):
        lines.append(f"- overfitting: none flagged ({dev_evaluations} dev evaluations)" if dev_evaluations >= 3 else
                     f"- overfitting: **not checked** ({dev_evaluations} dev evaluations during training; it needs "
                     "3 or more: set train.eval_every)")
    return lines


def _data_section(data: Mapping) -> list[str]:
    if not data:
        return []
    lines = ["## Data check\n",
             f"{data['examples']} examples, {data['unique_queries']} distinct queries, {data['unique_positives']} "
             f"distinct positives; {data['exact_duplicate_pairs']} exact duplicate pairs; "
             f"{data['queries_sharing_positives']} queries share a positive (max {data['max_queries_per_positive']} "
             f"per positive); expected false negatives per batch: {data['expected_false_negatives_per_batch']}.\n"]
    nd = data.get("near_duplicates")
    if nd:
        lines.append(f"Near-duplicates (cosine >= {nd['threshold']}): queries {nd['query']['pairs']} pairs, "
                     f"positives {nd['positive']['pairs']} pairs.\n")
    lw = data["length_words"]
    lines.append(f"Length in words (p50 / p90 / max): queries {lw['query']['p50']} / {lw['query']['p90']} / "
                 f"{lw['query']['max']}, positives {lw['positive']['p50']} / {lw['positive']['p90']} / "
                 f"{lw['positive']['max']}.\n")
    if data.get("sources"):
        lines.append("Sources: " + ", ".join(f"{k} {v}" for k, v in data["sources"].items()) + "\n")
    lines += [f"- **warning**: {w}" for w in data.get("warnings", [])]
    return [*lines, ""]


def render_html(markdown: str) -> str:
    """A self-contained HTML page from the report markdown (headings, tables, lists, images)."""
    body, in_table, in_list = [], False, False
    for line in markdown.splitlines():
        if in_list and not line.startswith("- "):
            body.append("</ul>")
            in_list = False
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-: "):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            body.append(f'<p><img src="{html.escape(src.rstrip(")"))}" alt="{html.escape(alt)}"></p>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("- "):
            if not in_list:
                body.append("<ul>")
                in_list = True
            body.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    body += ["</table>"] if in_table else []
    body += ["</ul>"] if in_list else []
    style = ("body{font-family:sans-serif;max-width:960px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>textcl report</title><style>{style}"
            f"</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def write_report(summary: Mapping, history: Sequence[Mapping], similarity: Mapping, out_dir: str | Path) -> Path:
    """Write plots/, report.md and report.html into `out_dir`; return the report.md path."""
    out_dir = Path(out_dir)
    images = make_plots(summary, history, similarity, out_dir)
    markdown = render_markdown(summary, images)
    (out_dir / "report.md").write_text(markdown, encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(markdown), encoding="utf-8")
    return out_dir / "report.md"
