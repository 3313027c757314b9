"""`textcl check PATH`: load a dataset exactly as training/evaluation would and print its counts and
the load report (what was kept, skipped and why). Exit code 2 on the first bad row unless
`--on-error skip`.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from textcl.data import io
from textcl.errors import DataError
from textcl.types import Example, ScoredPair


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("check", help="load a dataset and print counts and the load report",
                              description=" ".join(__doc__.split()))
    p.add_argument("path", help="file, folder (BEIR, STS-B, saved HF dataset) or HF hub id")
    p.add_argument("--format", default="auto", help=f"auto or one of {', '.join(io.FORMATS)}")
    p.add_argument("--columns", default=None, help="role=column,... e.g. query=question,positive=answer "
                   "(several columns for one role: negative=n1+n2)")
    p.add_argument("--split", default=None, help="split for BEIR / HF / STS-B / SICK (default: train, "
                   "test for scored pairs)")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="raise on the first bad row (default) or skip and count bad rows")
    p.add_argument("--kind", choices=("auto", "examples", "scored", "texts"), default="auto",
                   help="what to load: training examples, scored pairs or raw texts (default: from the format)")
    p.set_defaults(func=run)


def _stats(values: list[int]) -> str:
    return f"min {min(values)}, median {statistics.median(values):g}, max {max(values)}" if values else "-"


def describe_examples(examples: list[Example]) -> list[str]:
    n = len(examples)
    n_pos = [len(e.positives) for e in examples]
    n_neg = [len(e.negatives) for e in examples]
    return [
        f"examples: {n}",
        f"unique queries: {len({e.query for e in examples})}",
        f"positives per example: {_stats(n_pos)} (total {sum(n_pos)})",
        f"negatives per example: {_stats(n_neg)} (total {sum(n_neg)}; {sum(1 for k in n_neg if k)} examples "
        "have negatives)",
        f"query length (chars): {_stats([len(e.query) for e in examples])}",
        f"positive length (chars): {_stats([len(p) for e in examples for p in e.positives])}",
        f"with query_id: {sum(e.query_id is not None for e in examples)}",
        f"exact duplicate examples: {n - len(set(examples))}",
    ]


def describe_pairs(pairs: list[ScoredPair]) -> list[str]:
    scores = [p.score for p in pairs]
    return [f"scored pairs: {len(pairs)}",
            f"score: min {min(scores):g}, mean {statistics.fmean(scores):.4g}, max {max(scores):g}",
            f"exact duplicate pairs: {len(pairs) - len(set(pairs))}"]


def _kind(args: argparse.Namespace) -> str:
    if args.kind != "auto":
        return args.kind
    fmt = io.detect_format(args.path) if args.format == "auto" else args.format
    if fmt in ("stsb", "sick"):
        return "scored"
    if fmt == "text":
        return "texts"
    if fmt == "beir":
        return "beir"
    return "examples"


def run(args: argparse.Namespace) -> int:
    columns = io.parse_columns_arg(args.columns) if args.columns else None
    kind = _kind(args)
    lines: list[str] = []
    pairs_error: DataError | None = None
    if kind == "beir":
        split = args.split or "train"
        rset = io.load_beir(args.path, split, on_unknown=args.on_error)
        lines += [f"corpus: {len(rset.corpus)} documents", f"queries: {rset.meta['all_queries']} "
                  f"({len(rset.queries)} with qrels in split '{split}')",
                  f"qrels rows ({split}): {io.count_qrels_rows(rset.qrels)}"]
        kind = "examples"
    if kind == "examples":
        try:
            examples, report = io.load_examples(args.path, format=args.format, columns=columns,
                                                split=args.split or "train", on_error=args.on_error)
            lines += describe_examples(examples)
            score_cols = [n for n in report.notes if n.startswith("ignored column")
                          and n.split("'")[1].lower() in io.SCORED_ROLES["score"]]
            if args.kind == "auto" and score_cols:
                lines.append(f"note: {score_cols[0]} looks like a similarity score; showing scored pairs "
                             "(use --kind examples to check it as training pairs)")
                kind, args.split = "scored", args.split or "train"
        except DataError as exc:
            if args.kind != "auto" or "no column for role" not in str(exc):
                raise
            kind, pairs_error = "scored", exc  # a table of (sentence1, sentence2, score) is not a set of examples
    if kind == "scored":
        lines = [line for line in lines if line.startswith("note:")]
        try:
            pairs, report = io.load_scored_pairs_with_report(args.path, format=args.format, columns=columns,
                                                             split=args.split or "test", on_error=args.on_error)
        except DataError as exc:
            if pairs_error is None or "no column for role" not in str(exc):
                raise
            # Neither shape fits: training pairs are what most users check, so their roles lead.
            raise DataError(f"{pairs_error.reason}; or, for scored pairs, roles sentence1, sentence2, score",
                            pairs_error.path) from None
        lines += describe_pairs(pairs)
    elif kind == "texts":
        texts, report = io.load_texts_with_report(args.path, on_error=args.on_error)
        lines += [f"texts: {len(texts)}", f"length (chars): {_stats([len(t) for t in texts])}",
                  f"exact duplicates: {len(texts) - len(set(texts))}"]
    print(f"# textcl check {Path(args.path)}")
    print("\n".join(lines))
    print(report.summary())
    return 0
