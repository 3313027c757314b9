"""`textcl index build|search|add`: a semantic-search index over a corpus, bound to one model."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from textcl.config import ModelConfig
from textcl.data.io import get_text, iter_jsonl, iter_lines
from textcl.scores import SIMILARITIES

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser("index", help="build and search a semantic-search index")
    sub = parser.add_subparsers(dest="index_command", required=True)

    b = sub.add_parser("build", help="encode a corpus and write an index folder")
    b.add_argument("--model", required=True, help="model folder or name (all-MiniLM-L6-v2 = bundled copy)")
    b.add_argument("--corpus", required=True, help="BEIR folder, corpus JSONL (_id, title, text) or text file")
    b.add_argument("--factory", "--index", "--search", dest="factory", default="Flat",
                   help='"exact" (no FAISS), or a FAISS factory: Flat, HNSW32, "IVF256,Flat|nprobe=16"')
    b.add_argument("--output", "--out", dest="out", required=True, help="output folder for the index")
    b.add_argument("--recall-queries", help="text/JSONL file of queries for the recall check "
                   "(default: a sample of the documents)")
    b.add_argument("--compression", default="none", metavar="none|int8|binary|pq:M",
                   help="store the documents compressed (int8 4x, binary 32x smaller, pq:M = M bytes a vector); "
                        "searched over the codes (with --factory Flat)")
    b.add_argument("--dimensions", type=int, default=None,
                   help="keep the first N dimensions (Matryoshka-style; renormalised for cosine)")
    b.add_argument("--rescore", type=int, default=None, metavar="K",
                   help="with --compression: keep the float vectors too and re-rank the codes' top-K with them")
    _model_options(b)
    b.set_defaults(func=build)

    s = sub.add_parser("search", help="search an index folder")
    s.add_argument("index", help="index folder written by `textcl index build`")
    s.add_argument("query", nargs="?", help="one query (or use --queries)")
    s.add_argument("-k", type=int, default=10, help="hits per query (default 10)")
    s.add_argument("--queries", help="batch search: text file (one per line) or JSONL (_id|id, text)")
    s.add_argument("--output", help="JSONL results for --queries (default: stdout)")
    _model_options(s, required=False)
    s.set_defaults(func=search)

    a = sub.add_parser("add", help="append documents to an index (same model only)")
    a.add_argument("index", help="index folder written by `textcl index build`")
    a.add_argument("--corpus", required=True, help="documents to add: BEIR folder, corpus JSONL or text file")
    _model_options(a, required=False)
    a.set_defaults(func=add)


def _model_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    if not required:
        p.add_argument("--model", help="default: the model recorded in the index (fingerprint-checked)")
    p.add_argument("--batch-size", type=int, default=64, help="texts per encoding batch (default 64)")
    p.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "int8"],
                   help="encoding precision (build default auto; search/add default: the index's own). "
                        "int8 = OpenVINO int8 on CPU, needs textcl[int8]")
    p.add_argument("--allow-int8", action="store_true", help="let --precision auto pick int8 (quality-guarded)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own Python code")
    p.add_argument("--query-prompt", default=None, help="prefix for queries (build: stored in the index)")
    p.add_argument("--document-prompt", default=None, help="prefix for documents (build: stored in the index)")
    p.add_argument("--similarity", default=None, choices=list(SIMILARITIES),
                   help="how vectors are scored (default: the model's similarity_fn_name; build: stored in the index)")


def _encoder(model_name: str, args: argparse.Namespace, stored: dict | None = None):
    # start-up time: textcl.models loads torch, and `textcl --help` imports this module
    from textcl.models import encoder_for, load_configured_model

    stored = stored or {}
    # unset: what the index was built with, else the model's own (None)
    q_prompt = args.query_prompt if args.query_prompt is not None else stored.get("query_prompt")
    d_prompt = args.document_prompt if args.document_prompt is not None else stored.get("document_prompt")
    mc = ModelConfig(name_or_path=model_name, max_seq_length=None,  # the model's own
                     precision=args.precision or stored.get("precision") or "auto", allow_int8=args.allow_int8,
                     batch_size=args.batch_size, trust_remote_code=args.trust_remote_code,
                     query_prompt=q_prompt, document_prompt=d_prompt,
                     similarity=args.similarity or stored.get("similarity"), cache_dir=None)
    return encoder_for(load_configured_model(mc), mc, show_progress=not args.no_progress)  # off without a terminal


def _read_queries(path: str) -> list[tuple[str, str]]:
    if path.endswith((".jsonl", ".jsonl.gz")):
        return [(str(o.get("_id", o.get("id", n))), get_text(o, "text", path, n)) for n, o in iter_jsonl(path)]
    return [(str(n), line.strip()) for n, line in iter_lines(path) if line.strip()]


def build(args: argparse.Namespace) -> int:
    from textcl.compress import IndexForm  # start-up time, as in _encoder
    from textcl.index import SearchIndex, load_corpus

    form = IndexForm(args.compression, args.dimensions, args.rescore)  # a bad form fails before the model loads
    corpus = load_corpus(args.corpus)
    enc = _encoder(args.model, args)
    queries = [t for _, t in _read_queries(args.recall_queries)] if args.recall_queries else None
    # A model folder is stored absolute so searching from any directory finds it; names stay names.
    model = str(Path(args.model).expanduser().resolve()) if Path(args.model).expanduser().exists() else args.model
    index = SearchIndex.build(enc, corpus, args.out, factory=args.factory, model=model,
                              recall_queries=queries, form=form)
    index.config.update(query_prompt=enc.prompts["query"], document_prompt=enc.prompts["document"],
                        corpus=str(Path(args.corpus).resolve()))
    index.save()
    recall = index.config.get("recall")
    extra = f", recall@{recall['k']} vs exact {recall['recall']:.4f} ({recall['query_source']})" if recall else ""
    guard = index.config.get("int8_guard")
    if guard:
        extra += (f"; int8 cosine to fp32 mean {guard['mean_cosine']:.4f}, min {guard['min_cosine']:.4f} "
                  f"on {guard['texts']} texts")
    size = index.config.get("bytes")
    if size:
        extra += (f"; {form.describe()['compression']}, {index.config['dim']} dimensions: {size['index']:,} bytes "
                  f"({size['float32'] / size['index']:.1f}x smaller than float32)"
                  + (f" + {size['float_kept_for_rescore']:,} of float vectors for rescoring" if form.rescore else ""))
    print(f"indexed {len(index)} documents with {args.factory} into {args.out}{extra}")
    return 0


def _load(args: argparse.Namespace):
    from textcl.index import SearchIndex  # start-up time, as in _encoder

    index = SearchIndex.load(args.index)
    model = args.model or index.config.get("model")
    if not model:
        raise SystemExit("the index does not record its model; pass --model")
    index.attach(_encoder(model, args, index.config))
    return index


def search(args: argparse.Namespace) -> int:
    if (args.query is None) == (args.queries is None):
        print("give exactly one of: a query, or --queries FILE", file=sys.stderr)
        return 2
    index = _load(args)
    if args.query is not None:
        for rank, hit in enumerate(index.search(args.query, k=args.k)[0], 1):
            print(f"{rank}\t{hit.score:.4f}\t{hit.id}\t{hit.title or hit.snippet[:80]}")
        return 0
    queries = _read_queries(args.queries)
    results = index.search([t for _, t in queries], k=args.k)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        for (qid, text), hits in zip(queries, results):
            row = {"query_id": qid, "query": text,
                   "hits": [{"id": h.id, "score": round(h.score, 6), "title": h.title} for h in hits]}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        if args.output:
            out.close()
    if args.output:
        print(f"wrote {len(queries)} results to {args.output}")
    return 0


def add(args: argparse.Namespace) -> int:
    from textcl.index import load_corpus  # start-up time, as in _encoder

    index = _load(args)
    n = index.add(load_corpus(args.corpus))
    print(f"added {n} documents; the index now holds {len(index)}")
    return 0
