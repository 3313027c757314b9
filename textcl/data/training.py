"""Training rows from a recipe's `data:` section: the one loader that training, the pipeline's check
and mine stages and `textcl mine` use, so every one of them sees the same rows.
"""

from __future__ import annotations

import logging
from pathlib import Path

from textcl.config import DataConfig
from textcl.data.beir import is_beir_folder, load_beir
from textcl.data.examples import load_examples, load_texts
from textcl.data.scored import load_scored_pairs
from textcl.data.source import LoadReport
from textcl.errors import ConfigError
from textcl.types import Example, RetrievalSet

log = logging.getLogger(__name__)


def load_training_rows(dc: DataConfig, loss: str, *, path: str | Path | None = None, fmt: str | None = None,
                       columns: dict | None = None) -> tuple[list, LoadReport | None]:
    """The items `loss` trains on, read from `path` (default `data.train`): Example rows (infonce),
    ScoredPair (cosent) or str (simcse), cut to `data.max_examples`. Returns (items, load report);
    the report is None for scored pairs and texts, which have no skip policy."""
    path = dc.train if path is None else path
    if path is None:
        raise ConfigError("data.train is not set")
    fmt = dc.format if fmt is None else fmt
    columns = (columns if columns is not None else dc.columns) or None
    report = None
    if loss == "cosent":
        items: list = load_scored_pairs(path, format=fmt, split=dc.split, columns=columns)
    elif loss == "simcse":
        items = load_texts(path)
    else:
        items, report = load_examples(path, format=fmt, columns=columns, split=dc.split, on_error=dc.on_error)
    if dc.max_examples is not None and len(items) > dc.max_examples:
        log.info("data.max_examples=%d: using the first %d of %d items", dc.max_examples, dc.max_examples,
                 len(items))
        items = items[:dc.max_examples]
    return items, report


def uses_retrieval_set(dc: DataConfig, path: str | Path | None = None, *, as_rows: bool = False) -> bool:
    """Whether mining reads `path` (default `data.train`) as a BEIR retrieval set (all its qrels are known
    positives) rather than as rows: `data.format: beir`, or format auto and a BEIR folder (unless
    `as_rows`: `textcl mine --pairs` asks for rows)."""
    path = dc.train if path is None else path
    auto_beir = dc.format == "auto" and not as_rows and path is not None and is_beir_folder(Path(path))
    return path is not None and (dc.format == "beir" or auto_beir)


def load_mining_source(dc: DataConfig, *, path: str | Path | None = None, columns: dict | None = None,
                       as_rows: bool = False) -> RetrievalSet | list[Example]:
    """What mining adds negatives to: the BEIR split (`data.split`) when `uses_retrieval_set`, else the
    training rows (`load_training_rows` for infonce)."""
    if uses_retrieval_set(dc, path, as_rows=as_rows):
        return load_beir(dc.train if path is None else path, dc.split)
    return load_training_rows(dc, "infonce", path=path, columns=columns)[0]  # load_examples logged its report
