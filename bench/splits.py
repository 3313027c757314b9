"""Derived BEIR folders for the generalisation benchmarks (issue 29): documents the recipe never trained
towards ("new documents") and smaller label budgets. Written under a folder given on the command line
(default out/splits, never committed); corpus and queries are symlinks to the source, never copies.

    .venv/bin/python bench/splits.py                       # new-docs + budgets 50 150 500 all, seeds 1 2 3
    .venv/bin/python bench/splits.py --out out/splits --budgets 50 150 --seeds 1

Each split is `<out>/<name>/nfcorpus/` (the leaf keeps the name `nfcorpus`, so metric keys and per-dataset
rules stay those of NFCorpus) with `<out>/<name>/split.json` (counts), written last: its presence means done.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
from pathlib import Path

from common import NFCORPUS, ROOT  # first: sets up sys.path and env

from textcl.data.beir import count_qrels_rows, find_file, load_beir_corpus, load_qrels

SOURCE = NFCORPUS  # read-only benchmark data
NEW_PERCENT = 20
HELDOUT_PERCENT = 16  # of all documents (20% of the seen ones): held out of training to watch new-document behaviour
Qrels = dict[str, dict[str, int]]  # query id -> document id -> grade, as textcl reads BEIR qrels


def _bucket(doc_id: str) -> int:
    return int(hashlib.sha256(doc_id.encode("utf-8")).hexdigest(), 16) % 100


def is_new(doc_id: str, percent: int = NEW_PERCENT) -> bool:
    """A stable 'new document' draw: sha256 of the id mod 100 below `percent` (no seed, no order)."""
    return _bucket(doc_id) < percent


def is_heldout(doc_id: str) -> bool:
    """A seen document held out of training (the next HELDOUT_PERCENT buckets after the new ones): its dev qrels
    stand in for new documents when a run chooses its model, without looking at the new documents themselves."""
    return NEW_PERCENT <= _bucket(doc_id) < NEW_PERCENT + HELDOUT_PERCENT


def _find(folder: Path, name: str) -> Path:
    path = find_file(folder, name)
    if path is None:
        raise FileNotFoundError(f"{folder}: no {name}[.gz]")
    return path


def read_qrels(folder: Path, split: str) -> Qrels:
    """qrels/{split}.tsv[.gz] read by textcl's one BEIR qrels reader (header, CRLF and gzip handled)."""
    return load_qrels(_find(folder / "qrels", f"{split}.tsv"))


def read_doc_ids(folder: Path) -> list[str]:
    return list(load_beir_corpus(_find(folder, "corpus.jsonl")))


def _keep(qrels: Qrels, keep) -> Qrels:
    """The judgements whose document passes `keep`; a query left with none drops out."""
    kept = {q: {d: g for d, g in docs.items() if keep(d)} for q, docs in qrels.items()}
    return {q: docs for q, docs in kept.items() if docs}


def _write_qrels(path: Path, qrels: Qrels) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        fh.writelines(f"{q}\t{d}\t{g}\n" for q, docs in qrels.items() for d, g in docs.items())


def _link(source: Path, leaf: Path, name: str) -> None:
    src = _find(source, name)
    (leaf / src.name).symlink_to(src.resolve())


def _start(out: Path, source: Path) -> Path:
    """A fresh leaf folder `<out>/nfcorpus` with the corpus and queries linked from `source`."""
    if out.exists():
        shutil.rmtree(out)
    return _leaf(out / "nfcorpus", source)


def _leaf(leaf: Path, source: Path) -> Path:
    (leaf / "qrels").mkdir(parents=True)
    _link(source, leaf, "corpus.jsonl")
    _link(source, leaf, "queries.jsonl")
    return leaf


def _finish(out: Path, facts: dict) -> dict:
    (out / "split.json").write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    return facts


def new_docs_split(source: Path, out: Path, percent: int = NEW_PERCENT) -> dict:
    """Train and dev lose every qrel naming a new document; test keeps only pairs whose document is new
    (queries left with none drop out); the corpus stays whole. Returns (and writes) the counts."""
    leaf = _start(out, source)
    docs = read_doc_ids(source)
    new = {d for d in docs if is_new(d, percent)}
    facts: dict = {"kind": "new-docs", "percent": percent, "docs": len(docs), "new_docs": len(new)}
    for split, keep in (("train", lambda d: d not in new), ("dev", lambda d: d not in new),
                        ("test", lambda d: d in new)):
        qrels = read_qrels(source, split)
        kept = _keep(qrels, keep)
        _write_qrels(leaf / "qrels" / f"{split}.tsv", kept)
        facts[split] = {"qrels": count_qrels_rows(qrels), "kept": count_qrels_rows(kept), "queries": len(qrels),
                        "queries_kept": len(kept)}
    check_new_docs(leaf, new)
    return _finish(out, facts)


def heldout_split(source: Path, out: Path) -> dict:
    """The new-documents split for a run that chooses its model watching documents it never trained towards:
    `<out>/nfcorpus` is new-docs (same test) with the held-out documents' train and dev qrels removed too;
    `<out>/heldout` has the held-out documents' dev qrels (what selection watches: a set given to
    `eval.ood_retrieval` with a forgetting budget) and test qrels (reported only). Corpus whole in both."""
    leaf = _start(out, source)
    docs = read_doc_ids(source)
    new = {d for d in docs if is_new(d)}
    held = {d for d in docs if is_heldout(d)}
    watch = _leaf(out / "heldout", source)  # the set's name (its folder) keys its metrics: heldout/ndcg@10
    facts: dict = {"kind": "new-docs-heldout", "percent": NEW_PERCENT, "heldout_percent": HELDOUT_PERCENT,
                   "docs": len(docs), "new_docs": len(new), "heldout_docs": len(held)}
    for split, keep in (("train", lambda d: d not in new and d not in held),
                        ("dev", lambda d: d not in new and d not in held), ("test", new.__contains__)):
        qrels = read_qrels(source, split)
        kept = _keep(qrels, keep)
        _write_qrels(leaf / "qrels" / f"{split}.tsv", kept)
        facts[split] = {"qrels": count_qrels_rows(qrels), "kept": count_qrels_rows(kept), "queries": len(qrels),
                        "queries_kept": len(kept)}
    for split in ("dev", "test"):
        kept = _keep(read_qrels(source, split), held.__contains__)
        _write_qrels(watch / "qrels" / f"{split}.tsv", kept)
        facts[f"heldout_{split}"] = {"kept": count_qrels_rows(kept), "queries_kept": len(kept)}
    check_new_docs(leaf, new | held, test_docs=new)
    return _finish(out, facts)


def check_new_docs(leaf: Path, new: set[str], test_docs: set[str] | None = None) -> None:
    """Re-read the written folder: no train/dev qrel names a `new` document, every test qrel a `test_docs` one
    (default: a new one)."""
    test_docs = new if test_docs is None else test_docs
    for split, wrong, what in (("train", new.__contains__, "new"), ("dev", new.__contains__, "new"),
                               ("test", lambda d: d not in test_docs, "seen")):
        bad = [(q, d) for q, docs in read_qrels(leaf, split).items() for d in docs if wrong(d)]
        if bad:
            raise AssertionError(f"{leaf}: {len(bad)} {split} qrels name {what} documents (e.g. {bad[0]})")


def new_docs_pool(source: Path, out: Path, percent: int = NEW_PERCENT) -> dict:
    """A diagnostic twin of the new-documents test set: the same test qrels, but the corpus holds the new
    documents only, so seen documents (relevant or not) cannot crowd the new ones out of the top 10."""
    if out.exists():
        shutil.rmtree(out)
    leaf = out / "nfcorpus"
    (leaf / "qrels").mkdir(parents=True)
    corpus = load_beir_corpus(_find(source, "corpus.jsonl"))
    with open(leaf / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc_id, doc in corpus.items():
            if is_new(doc_id, percent):
                fh.write(json.dumps({"_id": doc_id, "title": doc.title, "text": doc.text}) + "\n")
    _link(source, leaf, "queries.jsonl")
    test = _keep(read_qrels(source, "test"), lambda d: is_new(d, percent))
    _write_qrels(leaf / "qrels" / "test.tsv", test)
    return _finish(out, {"kind": "new-docs-pool", "percent": percent,
                         "docs": sum(1 for d in corpus if is_new(d, percent)),
                         "test": {"kept": count_qrels_rows(test), "queries_kept": len(test)}})


def seen_corpus(source: Path, out: Path, percent: int = NEW_PERCENT) -> Path:
    """`<out>/corpus.jsonl`: the corpus without the new documents, the training corpus of a run for which new
    documents arrive only after training (they are never its negatives either). Returns the folder."""
    out.mkdir(parents=True, exist_ok=True)
    corpus = load_beir_corpus(_find(source, "corpus.jsonl"))
    tmp = out / "corpus.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for doc_id, doc in corpus.items():
            if not is_new(doc_id, percent):
                fh.write(json.dumps({"_id": doc_id, "title": doc.title, "text": doc.text}) + "\n")
    tmp.replace(out / "corpus.jsonl")
    return out


def train_queries(source: Path) -> list[str]:
    """Train queries with at least one qrel, in file order."""
    return list(read_qrels(source, "train"))


def budget_split(source: Path, out: Path, n: int, seed: int) -> dict:
    """Train qrels of a seeded sample of `n` train queries (all of them when n >= their number); dev and
    test qrels linked unchanged."""
    leaf = _start(out, source)
    queries = train_queries(source)
    chosen = set(random.Random(seed).sample(sorted(queries), min(n, len(queries))))
    qrels = {q: docs for q, docs in read_qrels(source, "train").items() if q in chosen}
    _write_qrels(leaf / "qrels" / "train.tsv", qrels)
    for split in ("dev", "test"):
        src = _find(source / "qrels", f"{split}.tsv")
        (leaf / "qrels" / src.name).symlink_to(src.resolve())
    seed_used = seed if n < len(queries) else None  # every query: no sample, the seed plays no part
    return _finish(out, {"kind": "budget", "n": len(chosen), "seed": seed_used, "train_queries": len(queries),
                         "train_qrels_kept": count_qrels_rows(qrels), "queries": sorted(chosen)})


def budget_name(n: int, seed: int, total: int) -> str:
    """`budget-50-s1`; a budget of every train query is one folder whatever the seed: `budget-all`."""
    return "budget-all" if n >= total else f"budget-{n}-s{seed}"


def write_all(source: Path, out: Path, budgets: list[int], seeds: list[int], force: bool = False) -> dict[str, dict]:
    """Write every split not written yet (`force`: again); returns name -> counts."""
    done: dict[str, dict] = {}
    total = len(train_queries(source))
    todo = [("new-docs", lambda o: new_docs_split(source, o)), ("new-docs-heldout", lambda o: heldout_split(source, o))]
    for n in budgets:
        for seed in seeds:
            todo.append((budget_name(n, seed, total), lambda o, n=n, seed=seed: budget_split(source, o, n, seed)))
    for name, make in dict(todo).items():
        folder = out / name
        if (folder / "split.json").is_file() and not force:
            done[name] = json.loads((folder / "split.json").read_text())
        else:
            done[name] = make(folder)
    return done


def _summary(name: str, facts: dict) -> str:
    if facts["kind"] == "new-docs-heldout":
        return (f"{name}: as new-docs, and {facts['heldout_docs']} seen documents held out of train/dev: "
                f"{facts['heldout_dev']['kept']} dev qrels ({facts['heldout_dev']['queries_kept']} queries) name them")
    if facts["kind"] == "new-docs":
        parts = [f"{s} qrels {facts[s]['kept']}/{facts[s]['qrels']} kept ({facts[s]['queries_kept']}/"
                 f"{facts[s]['queries']} queries)" for s in ("train", "dev", "test")]
        return (f"{name}: docs {facts['docs']} ({facts['docs'] - facts['new_docs']} seen, {facts['new_docs']} new); "
                + "; ".join(parts) + "; no train/dev positive is a new document")
    drawn = f"seed {facts['seed']}" if facts["seed"] is not None else "no sample"
    return (f"{name}: {facts['n']} of {facts['train_queries']} train queries ({drawn}), "
            f"{facts['train_qrels_kept']} train qrels; dev and test unchanged")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "out" / "splits"))
    parser.add_argument("--source", default=str(SOURCE))
    parser.add_argument("--budgets", nargs="*", default=["50", "150", "500", "all"],
                        help="numbers of train queries; 'all' = every train query with qrels")
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument("--force", action="store_true", help="rewrite splits already written")
    args = parser.parse_args()
    source = Path(args.source)
    total = len(train_queries(source))
    budgets = [total if b == "all" else int(b) for b in args.budgets]
    for name, facts in write_all(source, Path(args.out), budgets, args.seeds, args.force).items():
        print(_summary(name, facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
