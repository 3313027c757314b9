"""`textcl eval`: score a model on STS and retrieval sets and write a JSON report with its conventions."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from textcl.config import EvalConfig, ModelConfig, load_recipe
from textcl.errors import ConfigError
from textcl.scores import SIMILARITIES
from textcl.types import encoder_identity

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a model on STS and retrieval sets",
                              description="Evaluate on STS (Spearman of cosine) and BEIR-style retrieval "
                                          "(nDCG/MRR/Recall/MAP/P@k, trec_eval conventions).")
    p.add_argument("--model", help="model folder or hub id (all-MiniLM-L6-v2 = bundled offline copy); "
                                   "default: the recipe's model.name_or_path")
    p.add_argument("--recipe", help="read sets and options from this recipe's eval: and model: sections")
    p.add_argument("--sts", action="append", default=None, metavar="PATH",
                   help="STS-B folder/file, SICK TSV or scored-pairs file (repeatable)")
    p.add_argument("--retrieval", action="append", default=None, metavar="PATH",
                   help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) or a pairs file (query, "
                        "positive[, ids]: every positive is relevant for its query) (repeatable)")
    p.add_argument("--corpus", default=None, metavar="PATH",
                   help="extra documents for pairs files given to --retrieval (corpus JSONL, text file or BEIR "
                        "folder); the corpus is the positives plus these")
    p.add_argument("--split", default=None, help="split to evaluate (default: recipe eval.split or test)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "int8"], default=None,
                   help="encoding precision (auto = bf16 where the hardware has bf16 units; a recipe's int8 "
                        "is scored in fp32 unless given here; int8 needs textcl[int8])")
    p.add_argument("--k", type=int, action="append", default=None, metavar="K",
                   help="cut-offs for retrieval metrics (repeatable; default 1 3 5 10 100 1000)")
    p.add_argument("--ignore-identical-ids", choices=["auto", "true", "false"], default=None,
                   help="drop documents whose id equals the query id (auto = MTEB default per dataset)")
    p.add_argument("--factory", "--search", dest="factory", default=None,
                   help='"exact" (default) or a FAISS factory string: Flat, HNSW32, "IVF256,Flat|nprobe=16"')
    p.add_argument("--strict", action="store_true",
                   help="qrels naming a doc or query missing from the set, or repeating a judgement, are errors "
                        "(default: warn once and evaluate as pytrec_eval/MTEB do)")
    p.add_argument("--batch-size", type=int, default=None, help="texts per encoding batch")
    p.add_argument("--max-seq-length", type=int, default=None, help="truncate texts to this many tokens")
    p.add_argument("--query-prompt", default=None,
                   help="prefix for queries (default: the model's own query prompt; \"\" = none)")
    p.add_argument("--document-prompt", default=None,
                   help="prefix for documents (default: the model's own document prompt; \"\" = none)")
    p.add_argument("--similarity", default=None, choices=list(SIMILARITIES),
                   help="how embeddings are scored (default: the model's similarity_fn_name)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own Python code")
    p.add_argument("--cache-dir", default=None, help="on-disk embedding cache (keyed by weights + text)")
    p.add_argument("--output", "--out", default=None, help="write the JSON report here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _configs(args: argparse.Namespace):
    if args.recipe:
        cfg = load_recipe(args.recipe)
        model_cfg, eval_cfg = cfg.model, cfg.eval
    else:
        # Without a recipe the model keeps its own max_seq_length unless --max-seq-length says otherwise.
        model_cfg, eval_cfg = ModelConfig(max_seq_length=None), EvalConfig()
    if args.model:
        model_cfg = dataclasses.replace(model_cfg, name_or_path=args.model)
    elif not args.recipe:
        raise ConfigError("give --model PATH_OR_ID (or --recipe with a model: section)")
    updates: dict = {}
    if args.sts is not None or args.retrieval is not None:
        updates.update(sts=[str(Path(p)) for p in args.sts or []],
                       retrieval=[str(Path(p)) for p in args.retrieval or []], ood_sts=[], ood_retrieval=[])
    if args.split:
        updates["split"] = args.split
    if args.k:
        updates["k_values"] = sorted(set(args.k))
    if args.ignore_identical_ids:
        updates["ignore_identical_ids"] = {"auto": None, "true": True, "false": False}[args.ignore_identical_ids]
    if args.factory:
        updates["factory"] = args.factory
    if args.strict:
        updates["strict"] = True
    if args.corpus:
        updates["extra_corpus"] = str(Path(args.corpus).resolve())
    eval_cfg = dataclasses.replace(eval_cfg, **updates)
    m_updates = {k: v for k, v in (("precision", args.precision), ("batch_size", args.batch_size),
                                   ("max_seq_length", args.max_seq_length), ("cache_dir", args.cache_dir),
                                   ("query_prompt", args.query_prompt), ("document_prompt", args.document_prompt),
                                   ("similarity", args.similarity))
                 if v is not None}
    if args.trust_remote_code:
        m_updates["trust_remote_code"] = True
    model_cfg = dataclasses.replace(model_cfg, **m_updates)
    if not (eval_cfg.sts or eval_cfg.retrieval or eval_cfg.ood_sts or eval_cfg.ood_retrieval):
        raise ConfigError("nothing to evaluate: give --sts PATH and/or --retrieval PATH "
                          "(or a recipe with eval.sts / eval.retrieval)")
    return model_cfg, eval_cfg


def run(args: argparse.Namespace) -> int:
    # start-up time: these load torch and sentence-transformers, and `textcl --help` imports this module
    from textcl.eval import evaluate_sets, load_sets
    from textcl.eval.results import build_results, format_results, write_results
    from textcl.models import encoder_for, load_configured_model

    model_cfg, eval_cfg = _configs(args)
    loaded = load_sets(eval_cfg, eval_cfg.split)  # bad input fails here, in seconds, before the model loads
    model = load_configured_model(model_cfg)
    encoder = encoder_for(model, model_cfg, precision=args.precision, scoring=True,  # explicit CLI choice wins
                          show_progress=not args.no_progress)
    results = evaluate_sets(encoder, eval_cfg, eval_cfg.split, loaded=loaded)
    model_info = {"name_or_path": model_cfg.name_or_path, **encoder_identity(encoder),
                  "precision": encoder.precision, "max_seq_length": model.max_seq_length,
                  "device": str(encoder.device)}
    report = build_results(results, model_info)
    sys.stdout.write(format_results(report) + "\n")
    if args.output:
        log.info("report written to %s", write_results(report, args.output))
    return 0
