"""`textcl adapter fit|eval`: a linear query adapter from vector files alone (embeddings of a model textcl
cannot run: an API, a vector-database export), and textcl's retrieval metrics of vector files, with or without
an adapter. The model-based form is the recipe key `train.tune: adapter`."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from textcl.errors import ConfigError

log = logging.getLogger("textcl")

VECTORS_HELP = ".parquet with columns id, vector (a list of floats per row), or .npy [n, dim] with <name>.ids.txt"
JUDGEMENTS_HELP = "BEIR qrels (query-id, corpus-id, score; header optional) or pairs (query-id<TAB>corpus-id)"


def _vector_args(p: argparse.ArgumentParser, qrels_help: str) -> None:
    p.add_argument("--queries", required=True, help=f"query vectors: {VECTORS_HELP}")
    p.add_argument("--documents", required=True, help=f"document vectors: {VECTORS_HELP}")
    p.add_argument("--qrels", required=True, help=f"{qrels_help}: {JUDGEMENTS_HELP}")
    p.add_argument("--name", default=None, help="dataset name of the metric keys (default: the folder above qrels/, "
                                                "else 'vectors'); it also picks MTEB's identical-id rule")
    p.add_argument("--similarity", choices=["cosine", "dot"], default="cosine",
                   help="cosine (default): queries and documents are L2-normalised as read, and q' after the "
                        "adapter; dot: raw vectors")
    p.add_argument("--compression", default="none", metavar="none|int8|binary|pq:M",
                   help="score documents as a compressed index holds them (int8 4x, binary 32x smaller, pq:M = M "
                        "bytes a vector); fit trains the adapter against exactly those vectors")
    p.add_argument("--k", type=int, action="append", default=None, help="cut-offs (default 1 3 5 10 100)")
    p.add_argument("--ignore-identical-ids", choices=["auto", "true", "false"], default="auto",
                   help="drop a document whose id equals the query id (auto: MTEB's rule for --name)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("adapter", help="fit or score a linear query adapter on vector files",
                                   description=__doc__)
    sub = parser.add_subparsers(dest="adapter_command", required=True, metavar="ACTION")
    fit = sub.add_parser("fit", help="train W (q' = W q + b) on query/document vectors; select on dev",
                         description="Train a linear query adapter on stored vectors and write adapter.safetensors, "
                                     "W.npy, b.npy and adapter.json (settings, dev scores) to --out.")
    _vector_args(fit, "training judgements")
    fit.add_argument("--dev-qrels", default=None, help=f"dev judgements that select the step and lr: {JUDGEMENTS_HELP}")
    fit.add_argument("--test-qrels", default=None, help="also report base and adapter metrics on these (never used "
                                                        "for selection)")
    fit.add_argument("--out", "--output", dest="out", required=True, help="folder for the adapter files")
    fit.add_argument("--overwrite", action="store_true", help="replace an adapter already in --out")
    fit.add_argument("--lr", type=float, action="append", default=None,
                     help="learning rate; repeat it for a dev-chosen search (default 1e-3)")
    fit.add_argument("--batch-size", type=int, default=64, help="queries per step (default 64)")
    fit.add_argument("--epochs", type=int, default=30, help="passes over the training queries (default 30)")
    fit.add_argument("--rank", type=int, default=None, help="W = I + U V^T of this rank (default: full d x d)")
    fit.add_argument("--bias", action="store_true", help="learn b too")
    fit.add_argument("--corpus-scope", choices=["all", "labelled"], default="all",
                     help="train against every document vector (default) or only those a training judgement names: "
                          "unlabelled documents, like those a growing collection adds later, are then not ranked low")
    fit.add_argument("--weight-decay", type=float, default=0.0, help="AdamW decay on W - I (towards the identity)")
    fit.add_argument("--temperature", type=float, default=0.05, help="softmax temperature of the loss (default 0.05)")
    fit.add_argument("--eval-every", type=int, default=None, help="steps between dev evaluations (default: a "
                                                                  "quarter epoch)")
    fit.add_argument("--patience", type=int, default=12, help="dev evaluations without a gain before stopping")
    fit.add_argument("--seed", type=int, default=42, help="seeds the batch order and a low-rank factor's start")
    fit.set_defaults(func=run_fit)
    ev = sub.add_parser("eval", help="retrieval metrics of vector files (queries through an adapter with --adapter)",
                        description="Score stored vectors with textcl's retrieval evaluator (the metrics of "
                                    "`textcl eval`), optionally with the queries mapped by an adapter folder.")
    _vector_args(ev, "judgements to score")
    ev.add_argument("--adapter", default=None, help="a folder written by `textcl adapter fit` (or a tune: adapter "
                                                    "model's adapter/ folder)")
    ev.add_argument("--rescore", type=int, default=None, metavar="K",
                    help="also report the compressed index's top-K re-ranked with the float document vectors")
    ev.add_argument("--output", default=None, help="write the metrics as JSON here")
    ev.set_defaults(func=run_eval)


def _name(args: argparse.Namespace) -> str:
    if args.name:
        return args.name
    qrels = Path(args.qrels).resolve()
    return qrels.parent.parent.name if qrels.parent.name == "qrels" else "vectors"


def _identical(args: argparse.Namespace) -> bool | None:
    return None if args.ignore_identical_ids == "auto" else args.ignore_identical_ids == "true"


def _k(args: argparse.Namespace) -> list[int]:
    return sorted(set(args.k or [1, 3, 5, 10, 100]))


def run_fit(args: argparse.Namespace) -> int:
    # start-up time: torch loads only when a command runs
    from textcl.adapter import AdapterSettings
    from textcl.adapter_files import save_adapter
    from textcl.vectorfit import VectorSet, fit_vectors, read_qrels, score

    start = time.perf_counter()
    if (Path(args.out) / "adapter.safetensors").exists() and not args.overwrite:
        raise ConfigError(f"{args.out} already holds an adapter; replace it with --overwrite, or choose another --out")
    vs = VectorSet.read(args.queries, args.documents, _name(args), args.similarity == "cosine")
    compressed = vs.compress(args.compression, args.seed) if args.compression != "none" else None
    train = read_qrels(args.qrels, vs, training=True)
    dev = read_qrels(args.dev_qrels, vs, training=False) if args.dev_qrels else None
    test = read_qrels(args.test_qrels, vs, training=False) if args.test_qrels else None
    lrs = args.lr or [1e-3]
    if len(lrs) > 1 and not dev:
        log.warning("several --lr values but no --dev-qrels: the first one is kept (nothing to choose on)")
    fits = []
    for lr in lrs:
        settings = AdapterSettings(lr=lr, batch_size=args.batch_size, epochs=args.epochs, rank=args.rank,
                                   bias=args.bias, weight_decay=args.weight_decay, temperature=args.temperature,
                                   eval_every=args.eval_every, patience=args.patience if dev else None,
                                   seed=args.seed, normalize=vs.normalize)
        fit = fit_vectors(vs, train, dev, settings, k_values=_k(args), ignore_identical_ids=_identical(args),
                          labelled_only=args.corpus_scope == "labelled")
        if fit.metric:
            log.info("lr %g: dev %s %.4f at step %s (identity %.4f); %.1f s of training", lr, fit.metric,
                     fit.best[fit.metric], fit.best_step, fit.base[fit.metric], fit.train_s)
        fits.append(fit)
    best = max(fits, key=lambda f: f.best.get(f.metric, 0.0)) if dev else fits[0]
    extra: dict = {"queries": args.queries, "documents": args.documents, "qrels": args.qrels,
                   "corpus_scope": args.corpus_scope,
                   "dev_qrels": args.dev_qrels, "similarity": args.similarity, "dataset": vs.name,
                   "compression": args.compression, "index_bytes": compressed.nbytes if compressed else
                   int(vs.documents.matrix.nbytes),
                   "lr_search": [{"lr": f.settings.lr, "dev_best": f.best.get(f.metric or "", None),
                                  "best_step": f.best_step, "train_s": round(f.train_s, 3)} for f in fits]}
    if test:
        kw = {"split": "test", "k_values": _k(args), "ignore_identical_ids": _identical(args)}
        extra["test_base"] = score(vs, test, **kw)
        extra["test_adapter"] = score(vs, test, adapter=(best.weight, best.bias), **kw)
    extra["wall_s"] = round(time.perf_counter() - start, 2)
    folder = save_adapter(args.out, best.weight, best.bias, {**best.summary(), **extra})
    key = f"{vs.name}/ndcg@10"
    if test:
        print(f"test {key}: {100 * extra['test_base'][key]:.2f} -> {100 * extra['test_adapter'][key]:.2f}")
    if best.metric:
        print(f"dev {best.metric}: {100 * best.base[best.metric]:.2f} -> {100 * best.best[best.metric]:.2f} "
              f"(lr {best.settings.lr:g}, step {best.best_step})")
    print(f"adapter: {folder}/W.npy, b.npy, adapter.safetensors, adapter.json")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from textcl.adapter_files import load_adapter  # start-up time, as in run_fit
    from textcl.vectorfit import VectorSet, read_qrels, score, score_rescored

    vs = VectorSet.read(args.queries, args.documents, _name(args), args.similarity == "cosine")
    float_bytes = int(vs.documents.matrix.nbytes)
    compressed = vs.compress(args.compression) if args.compression != "none" else None
    adapter = None
    if args.adapter:
        weight, bias, normalize = load_adapter(args.adapter)
        if normalize != vs.normalize:
            log.warning("the adapter was trained with normalize=%s, scored here with --similarity %s", normalize,
                        args.similarity)
        adapter = (weight, bias)
    qrels = read_qrels(args.qrels, vs, training=False)
    metrics = score(vs, qrels, k_values=_k(args), ignore_identical_ids=_identical(args), adapter=adapter)
    if args.rescore:
        rescored = score_rescored(vs, qrels, args.rescore, _k(args), adapter=adapter)
        metrics.update({f"{key} (rescored top-{args.rescore})": v for key, v in rescored.items()})
    if compressed is not None:
        metrics["index_bytes"] = compressed.nbytes
        print(f"index: {compressed.spec}, {compressed.nbytes:,} bytes ({float_bytes / compressed.nbytes:.1f}x smaller "
              "than float32)")
    for key in sorted(metrics):
        if key.rsplit("/", 1)[-1].split(" ")[0] in ("ndcg@10", "recall@100", "mrr@10"):
            print(f"{key}: {100 * metrics[key]:.2f}")
    if args.output:
        Path(args.output).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return 0
