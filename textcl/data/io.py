"""Public entry point of the data layer: every reader and writer, by named roles, never column order.

Errors carry file, line and field (`DataError`). With `on_error="skip"` bad rows are counted in a
`LoadReport` (logged and returned), never dropped silently. The implementation lives in
`source.py` (bytes, lines, checks), `beir.py`, `scored.py`, `tables.py`, `columns.py`,
`examples.py` and `writers.py`.
"""

from __future__ import annotations

from textcl.data.beir import count_qrels_rows, load_beir, load_beir_corpus, load_beir_queries, load_qrels
from textcl.data.columns import EXAMPLE_ROLES, parse_columns_arg, resolve_columns
from textcl.data.examples import (
    examples_from_retrieval_set,
    load_examples,
    load_texts,
    load_texts_with_report,
    row_to_example,
)
from textcl.data.scored import (
    SCORED_ROLES,
    load_scored_pairs,
    load_scored_pairs_with_report,
    load_sick,
    load_stsb,
)
from textcl.data.source import (
    DelimitedRows,
    LoadReport,
    check_text,
    get_text,
    iter_jsonl,
    iter_lines,
    open_binary,
)
from textcl.data.tables import FORMATS, detect_format
from textcl.data.writers import write_examples

__all__ = [
    "EXAMPLE_ROLES", "SCORED_ROLES", "FORMATS", "DelimitedRows", "LoadReport", "check_text", "count_qrels_rows",
    "detect_format", "examples_from_retrieval_set", "get_text", "iter_jsonl", "iter_lines", "load_beir",
    "load_beir_corpus", "load_beir_queries", "load_examples", "load_qrels", "load_scored_pairs",
    "load_scored_pairs_with_report", "load_sick", "load_stsb", "load_texts", "load_texts_with_report", "open_binary",
    "parse_columns_arg", "resolve_columns", "row_to_example", "write_examples",
]
