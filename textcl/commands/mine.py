"""`textcl mine`: mine hard negatives for a BEIR split or a pairs file and write a dataset with provenance.

Runs unchanged under `torchrun` / `accelerate launch -m textcl mine ...`: every rank encodes and
searches its share of the corpus, rank 0 writes the (identical) result.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import typing

from textcl.config import RunConfig, load_recipe
from textcl.data.io import load_beir, load_texts, parse_columns_arg
from textcl.data.training import load_mining_source
from textcl.errors import ConfigError

log = logging.getLogger(__name__)

# CLI flag -> recipe key; values are type-checked by the recipe loader like any `--set` override.
OPTIONS = {
    "num_negatives": int, "skip_top": int, "depth": int, "sampling": str, "relative_margin": str,
    "absolute_margin": str, "margin_reference": str, "rows": str, "max_score": str, "factory": str,
    "query_chunk_size": int, "corpus_chunk_size": int, "recall_check_queries": int, "cross_encoder": str,
    "cross_encoder_max_score": str,
}
HELP = {
    "num_negatives": "hard negatives kept per row", "skip_top": "skip this many top-ranked candidates first",
    "depth": "candidates retrieved per query", "sampling": "take the top candidates or sample among them",
    "relative_margin": "drop candidates scoring above (1 - m) x the positive (likely false negatives; none = off)",
    "absolute_margin": "drop candidates scoring above the positive minus this (none = off)",
    "margin_reference": "which positive of a multi-positive row the margins compare to",
    "rows": "retrieval sets: one row per query (all positives) or one per (query, positive)",
    "max_score": "drop candidates scoring above this cosine (none = off)",
    "factory": '"exact" (chunked, no FAISS) or a FAISS factory string: Flat, HNSW32, "IVF256,Flat|nprobe=16"',
    "query_chunk_size": "queries searched at once", "corpus_chunk_size": "corpus rows encoded and searched at once",
    "recall_check_queries": "queries whose approximate top-k is checked against exact search",
    "cross_encoder": "re-score candidates with this cross-encoder (folder or hub id)",
    "cross_encoder_max_score": "drop candidates the cross-encoder scores above this",
    "precision": "encoding precision", "batch_size": "texts per encoding batch",
    "max_seq_length": "truncate texts to this many tokens", "cache_dir": "on-disk embedding cache",
    "query_prompt": "prefix for queries (default: the model's own query prompt; \"\" = none)",
    "document_prompt": "prefix for documents (default: the model's own document prompt; \"\" = none)",
    "similarity": "cosine or dot (default: the model's similarity_fn_name)",
    "allow_int8": "let precision auto pick int8 (quality-guarded; needs textcl[int8])",
}
MODEL_OPTIONS = {"precision": str, "batch_size": int, "max_seq_length": int, "cache_dir": str,
                 "query_prompt": str, "document_prompt": str, "similarity": str, "allow_int8": str}


def register(subparsers) -> None:
    p = subparsers.add_parser("mine", help="mine hard negatives (FAISS or exact search) without false negatives",
                              description=__doc__.splitlines()[0])
    src = p.add_argument_group("input (one of --retrieval, --pairs, or the recipe's data.train)")
    src.add_argument("--retrieval", metavar="BEIR_DIR", help="BEIR folder; rows are its qrels positives")
    src.add_argument("--split", default=None, help="qrels split / dataset split (default: recipe data.split)")
    src.add_argument("--pairs", metavar="FILE", help="pairs/triplets file (JSONL, CSV, TSV, Parquet, HF)")
    src.add_argument("--columns", default=None, help="role=column,... for --pairs (e.g. query=q,positive=doc)")
    src.add_argument("--corpus", metavar="FILE", help="extra candidate texts (one per line or JSONL 'text')")
    p.add_argument("--model", help="model folder or hub id (default: recipe model.name_or_path)")
    p.add_argument("--recipe", help="YAML recipe: reads its model:, data: and mining: sections")
    p.add_argument("--seed", type=int, default=None, help="sampling / index seed (default: recipe seed, 42)")
    p.add_argument("--output", "--out", help="output .jsonl / .jsonl.gz / .parquet (default: recipe mining.output)")
    for name, tp in {**OPTIONS, **MODEL_OPTIONS}.items():
        flags = ["--" + name.replace("_", "-")] + (["--index"] if name == "factory" else [])  # --index: the old spelling
        section = "mining" if name in OPTIONS else "model"
        p.add_argument(*flags, type=tp, default=None, dest=name, choices=_choices(section, name),
                       help=f"{HELP[name]} (recipe: {section}.{name})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any recipe override")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _choices(section: str, name: str) -> list[str] | None:
    """The values a Literal recipe key accepts, listed in --help and checked by argparse."""
    tp = typing.get_type_hints(typing.get_type_hints(RunConfig)[section])[name]
    return list(typing.get_args(tp)) if typing.get_origin(tp) is typing.Literal else None


def _config(args: argparse.Namespace):
    overrides = list(args.set)
    for name in OPTIONS:
        value = getattr(args, name)
        if value is not None:  # "none" switches a margin / threshold off
            overrides.append(f"mining.{name}={'null' if str(value).lower() == 'none' else value}")
    for name in MODEL_OPTIONS:
        if getattr(args, name) is not None:
            overrides.append(f"model.{name}={getattr(args, name)}")
    if args.model:
        overrides.append(f"model.name_or_path={args.model}")
    if args.split:
        overrides.append(f"data.split={args.split}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    return load_recipe(args.recipe, overrides)


def _source(args: argparse.Namespace, cfg):
    """The rows to mine for: a RetrievalSet or a list of Examples."""
    if args.retrieval and args.pairs:
        raise ConfigError("give --retrieval or --pairs, not both")
    if args.retrieval:
        return load_beir(args.retrieval, cfg.data.split)
    if args.pairs is None and cfg.data.train is None:
        raise ConfigError("nothing to mine: give --retrieval BEIR_DIR, --pairs FILE or a recipe with data.train")
    columns = parse_columns_arg(args.columns) if args.columns else None
    return load_mining_source(cfg.data, path=args.pairs, columns=columns, as_rows=bool(args.pairs))


def _init_distributed() -> bool:
    """Join the process group torchrun/accelerate describe in the environment; True if we created it."""
    import torch  # start-up time: `textcl --help` imports every command module; torch takes seconds
    import torch.distributed as dist
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    # gloo carries the pickled top-k lists; the model itself runs on this rank's GPU when there is one.
    dist.init_process_group(backend="gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def run(args: argparse.Namespace) -> int:
    # start-up time: these load torch and sentence-transformers, and `textcl --help` imports this module
    import torch
    import torch.distributed as dist

    from textcl import distributed
    from textcl.mine import mine, write_mined
    from textcl.models import encoder_for, load_configured_model

    cfg = _config(args)
    output = args.output or cfg.mining.output
    if not output:
        raise ConfigError("give --output FILE (or mining.output in the recipe)")
    created = _init_distributed()
    try:
        rank, world = distributed.rank(), distributed.world_size()
        source = _source(args, cfg)
        extra = load_texts(args.corpus) if args.corpus else None
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
        m = cfg.model
        model = load_configured_model(m, device=device)
        encoder = encoder_for(model, m, show_progress=not args.no_progress and rank == 0)
        progress = not args.no_progress and rank == 0
        examples, stats = mine(source, encoder, cfg.mining, seed=cfg.seed, extra_corpus=extra, progress=progress)
        if rank == 0:
            stats.provenance["model"] = m.name_or_path
            stats.provenance["precision"] = encoder.precision
            if encoder.int8_report:
                stats.provenance["int8_guard"] = encoder.int8_report
            write_mined(examples, output, stats.provenance)
            log.info("wrote %d rows to %s on %d process(es); timings %s", len(examples), output, world,
                     json.dumps({k: round(v, 2) for k, v in stats.timings.items()}))
            sys.stdout.write(json.dumps(stats.to_dict(), indent=1) + "\n")
    finally:
        if created:
            dist.destroy_process_group()
    return 0
