"""A compressed index the queries are trained for, on NFCorpus: all-MiniLM-L6-v2 vectors exported once to files
(standing in for an API's), then `textcl adapter fit --compression none|int8|binary` per seed, the lr chosen on
dev (1e-4, 3e-4, 1e-3, or the `--lrs` given) with the first seed and kept for the others; binary also re-ranked with
the float vectors.

Records (command, commit, machine, load) go to bench/records/compression.jsonl; `--table` prints the section
from the records alone. `--recipe` measures the same through `textcl run recipes/nfcorpus-adapter.yaml` with
`index.compression` (the adapter trains for the index the run builds; both evaluations search it), records in
bench/records/compression_recipe.jsonl.

    python bench/bench_compression.py [--seeds 1 2 3] [--table]
    python bench/bench_compression.py --recipe --compression binary --seeds 1 [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import NFCORPUS, ROOT, append_record, recipe_scope, run_corpus_scope, scope_note, shown_runs

RECORDS = ROOT / "bench" / "records" / "compression.jsonl"
RECIPE_RECORDS = ROOT / "bench" / "records" / "compression_recipe.jsonl"
RECIPE = ROOT / "recipes" / "nfcorpus-adapter.yaml"
SCOPE = recipe_scope(RECIPE)  # train.corpus_scope the recipe sets today: the runs the table shows
TEXTCL = str(Path(sys.executable).parent / "textcl")
KEY = "nfcorpus/ndcg@10"
LRS = (1e-4, 3e-4, 1e-3)


def export_vectors(work: Path) -> tuple[Path, Path]:
    """Query and document vectors of the bundled model (fp32, the model's own prompts), written once."""
    q, d = work / "queries.npy", work / "documents.npy"
    if q.exists() and d.exists():
        return q, d
    from textcl.data.beir import load_beir
    from textcl.data.vectors import write_vectors
    from textcl.models import Encoder, load_model

    queries = {}
    for split in ("train", "dev", "test"):
        rset = load_beir(NFCORPUS, split)
        queries.update({k: v for k, v in rset.queries.items() if k in rset.qrels})
    encode = Encoder(load_model("all-MiniLM-L6-v2", device="cpu"), precision="fp32", cache_dir=work / "cache")
    write_vectors(d, list(rset.corpus), encode([doc.full_text for doc in rset.corpus.values()], "document"))
    write_vectors(q, list(queries), encode(list(queries.values()), "query"))
    return q, d


def fit(work: Path, vectors: tuple[Path, Path], compression: str, seed: int, lrs: tuple[float, ...]) -> dict:
    out = work / f"{compression}-s{seed}"
    qrels = NFCORPUS / "qrels"
    cmd = [TEXTCL, "adapter", "fit", "--queries", str(vectors[0]), "--documents", str(vectors[1]), "--qrels",
           str(qrels / "train.tsv.gz"), "--dev-qrels", str(qrels / "dev.tsv"), "--test-qrels", str(qrels / "test.tsv"),
           "--name", "nfcorpus", "--compression", compression, "--seed", str(seed), "--k", "10", "--out", str(out),
           "--overwrite",  # the bench's own work folder: a fit that ended before its record is redone
           *[a for lr in lrs for a in ("--lr", str(lr))]]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    info = json.loads((out / "adapter.json").read_text())
    record = {"bench": "compression", "compression": compression, "seed": seed, "lr": info["settings"]["lr"],
              "lr_search": info["lr_search"], "dev_base": info["dev_base"].get(KEY), "dev_best": info["dev_best"].get(KEY),
              "test_base": info["test_base"][KEY], "test_adapter": info["test_adapter"][KEY],
              "index_bytes": info["index_bytes"], "wall_s": round(time.perf_counter() - t0, 1), "load_before": load}
    if compression == "binary":
        metrics = out / "rescored.json"
        subprocess.run([TEXTCL, "adapter", "eval", "--queries", str(vectors[0]), "--documents", str(vectors[1]),
                        "--qrels", str(qrels / "test.tsv"), "--name", "nfcorpus", "--compression", "binary",
                        "--adapter", str(out), "--rescore", "100", "--k", "10", "--output", str(metrics)],
                       check=True, stdout=subprocess.DEVNULL)
        record["test_adapter_rescored_100"] = json.loads(metrics.read_text())[f"{KEY} (rescored top-100)"]
    return append_record(RECORDS, record)


def recipe_run(work: Path, compression: str, seed: int, threads: int) -> dict:
    """One `textcl run` of the adapter recipe with `index.compression` (fp32, as the exported vectors above)."""
    out = work / f"{compression}-s{seed}"
    cmd = [TEXTCL, "run", str(RECIPE), "--no-progress", "--set", f"seed={seed}", "--set", f"output_dir={out}",
           "--set", f"index.compression={compression}", "--set", "model.precision=fp32",
           "--set", f"model.cache_dir={work / 'cache'}"]
    cold = not (work / "cache").is_dir()
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    summary = json.loads((out / "summary.json").read_text())
    info = json.loads((out / "model" / "adapter" / "adapter.json").read_text())
    record = {"bench": "compression_recipe", "compression": compression, "seed": seed, "lr": info["settings"]["lr"],
              "dev_base": info["dev_base"].get(KEY), "dev_best": info["dev_best"].get(KEY),
              "test_base": summary["before"][KEY], "test_adapter": summary["after"][KEY],
              "index_bytes": summary["index"]["bytes"]["index"], "float32_bytes": summary["index"]["bytes"]["float32"],
              "stages_s": {k: round(v.get("seconds") or 0.0, 1) for k, v in summary["stages"].items()},
              "wall_s": round(time.perf_counter() - t0, 1), "cold": cold, "threads": threads, "load_before": load,
              "corpus_scope": run_corpus_scope(out),
              "run_command": f"OMP_NUM_THREADS={threads} " + " ".join(["textcl", *cmd[1:]]).replace(str(ROOT) + "/", "")}
    return append_record(RECIPE_RECORDS, record)


def recipe_table(rows: list[dict]) -> list[str]:
    """The recipe path's rows (bench/records/compression_recipe.jsonl), under the vectors path's table."""
    rows = shown_runs(rows, SCOPE)
    lines = ["### The same through a recipe: `train.tune: adapter` + `index.compression`", "",
             "`textcl run recipes/nfcorpus-adapter.yaml --set index.compression=C` (fp32, lr from the recipe): the "
             "adapter trains against the training corpus as the index returns it, the index stage stores the codes, "
             "and eval_base / eval_tuned search that index.", "",
             "| documents stored as | index bytes | x smaller | base model on it | adapter trained for it | seeds | lr | "
             "dev base -> adapter |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for comp in dict.fromkeys(r["compression"] for r in rows):
        rs = [r for r in rows if r["compression"] == comp]
        lines.append(f"| {comp} | {rs[0]['index_bytes']:,} | {rs[0]['float32_bytes'] / rs[0]['index_bytes']:.1f} | "
                     f"{100 * rs[0]['test_base']:.2f} | {_cell([r['test_adapter'] for r in rs])} | "
                     f"{', '.join(str(r['seed']) for r in rs)} | {rs[0]['lr']:g} | "
                     f"{_cell([r['dev_base'] for r in rs[:1]])} -> {_cell([r['dev_best'] for r in rs])} |")
    lines += ["", "Runs (wall time, cold = corpus and queries embedded, 1-minute load average at start): "
              + "; ".join(f"{r['compression']} s{r['seed']} {r['wall_s']:.0f} s{' cold' if r['cold'] else ''} "
                          f"({r['load_before']:.1f}, {r['threads']} threads)" for r in rows)
              + ". Command: `" + rows[-1]["run_command"] + "`.", *scope_note(rows, "recipes/nfcorpus-adapter.yaml"), ""]
    return lines


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.mean(values)
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f} (1 seed)"


def table(records: list[dict], recipe: list[dict] | None = None) -> list[str]:
    """The BENCHMARKS.md section, from the records only (`recipe`: compression_recipe.jsonl's)."""
    rows = [r for r in records if r.get("bench") == "compression"]
    if not rows:
        return []
    lines = ["## A compressed index the queries are trained for (NFCorpus test, nDCG@10 x100)", "",
             "all-MiniLM-L6-v2 vectors (fp32) in files; `textcl adapter fit --compression C` trains a linear query "
             "adapter against the documents exactly as the compressed index returns them; search uses the same form. "
             "Binary scores float queries against sign bits. "
             + ("The lr is the one the first seed chose on dev among " + ", ".join(
                 f"{x['lr']:g}" for x in rows[0]["lr_search"]) if len(rows[0]["lr_search"]) > 1 else
                f"No lr search here: lr {rows[0]['lr']:g} is given (`--lrs`), the lr the adapter recipe chose on dev "
                "(section above)") + ".",
             "", "| documents stored as | index bytes | x smaller | base model | adapter | adapter, top-100 re-ranked "
             "with float vectors | seeds | lr | dev base -> adapter |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    full = next((r["index_bytes"] for r in rows if r["compression"] == "none"), None)
    for comp in ("none", "int8", "binary"):
        rs = [r for r in rows if r["compression"] == comp]
        if not rs:
            continue
        rescored = [r["test_adapter_rescored_100"] for r in rs if "test_adapter_rescored_100" in r]
        ratio = f"{full / rs[0]['index_bytes']:.1f}" if full else "-"
        lines.append(f"| {comp} | {rs[0]['index_bytes']:,} | {ratio} | {100 * rs[0]['test_base']:.2f} | "
                     f"{_cell([r['test_adapter'] for r in rs])} | {_cell(rescored) if rescored else '-'} | "
                     f"{', '.join(str(r['seed']) for r in rs)} | {rs[0]['lr']:g} | {_cell([r['dev_base'] for r in rs[:1]])} -> "
                     f"{_cell([r['dev_best'] for r in rs])} |")
    lines += ["", "Wall time per fit (lr search included for the first seed), load average at start: "
              + "; ".join(f"{r['compression']} s{r['seed']} {r['wall_s']:.0f} s ({r['load_before']:.1f})" for r in rows)
              + ".", ""]
    return lines + (recipe_table(recipe) if recipe else [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--compression", nargs="+", default=["none", "int8", "binary"])
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "compression")
    parser.add_argument("--lrs", type=float, nargs="+", default=list(LRS),
                        help="learning rates the first seed chooses among on dev (one: no search)")
    parser.add_argument("--table", action="store_true", help="only print the section from the records")
    parser.add_argument("--recipe", action="store_true", help="through `textcl run` with index.compression instead")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each recipe run")
    args = parser.parse_args()
    records = [json.loads(x) for x in RECORDS.read_text().splitlines()] if RECORDS.exists() else []
    recipe = [json.loads(x) for x in RECIPE_RECORDS.read_text().splitlines()] if RECIPE_RECORDS.exists() else []
    if args.recipe and not args.table:
        work = ROOT / "bench" / "results" / "compression-recipe"
        for comp in args.compression:
            for seed in args.seeds:
                recipe.append(recipe_run(work, comp, seed, args.threads))
    if not (args.table or args.recipe):
        args.work.mkdir(parents=True, exist_ok=True)
        vectors = export_vectors(args.work)
        for comp in args.compression:
            chosen = next((r["lr"] for r in records if r["compression"] == comp), None)
            for seed in args.seeds:
                if any(r["compression"] == comp and r["seed"] == seed for r in records):
                    continue  # resumable: a recorded (compression, seed) is not run again
                records.append(fit(args.work, vectors, comp, seed, (chosen,) if chosen else tuple(args.lrs)))
                chosen = records[-1]["lr"]
    print("\n".join(table(records, recipe)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
