"""Semantic-search index on disk: build from a corpus with one model, reload, search, add; never mix models.

A folder holds `embeddings.npy` (float32; unit rows when the similarity is cosine), `index.faiss` (absent for factory "exact"),
`ids.jsonl` (row -> id, title, snippet), `fingerprint.txt` (the model's weights fingerprint) and
`config.json` (model, factory, counts, the precision the documents were encoded at with the int8 quality
guard's numbers, and the recall of an approximate index against exact search).
With `form` (an `IndexForm`: index.compression / dimensions / rescore) the documents are stored truncated and/or
compressed: `codes.faiss` (textcl.compress) replaces `embeddings.npy`, which then holds the float vectors only
when kept for rescoring; queries are truncated as the documents were, and search scores the codes.
Search uses `textcl.knn` so results follow its layout: score desc, ties by ascending row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from textcl.compress import Compressed, IndexForm, compress, rescore
from textcl.data.retrieval import load_corpus  # noqa: F401 - re-exported: `textcl.index.load_corpus` is public
from textcl.errors import ConfigError, DataError
from textcl.knn import build_faiss_index, exact_search, faiss_search, recall_at_k
from textcl.types import Document, Encode, encoder_identity, plan_encoding

log = logging.getLogger(__name__)

FILES = ("embeddings.npy", "ids.jsonl", "fingerprint.txt", "config.json")
CODES = "codes.faiss"  # a compressed index's codes, in place of embeddings.npy
SNIPPET_CHARS = 160


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    title: str
    snippet: str = ""


def _rebuild_hint(path: Path, config: dict) -> str:
    model, corpus = config.get("model") or "MODEL", config.get("corpus") or "CORPUS"
    form = "".join(f" --{key} {config[key]}" for key in ("compression", "dimensions", "rescore")
                   if config.get(key) not in (None, "none"))
    return (f"rebuild it: textcl index build --model {model} --corpus {corpus} --factory "
            f"{config.get('factory', 'Flat')}{form} --out {path}")


def _read_faiss(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError("file is missing")
    return faiss.read_index(str(path))


def _read_part(path: Path, read: Callable[[Path], Any], config: dict) -> Any:
    """One file of an index folder; a missing or damaged one is a DataError naming it and the fix."""
    try:
        return read(path)
    # np.load, json and faiss report truncation with several types (ValueError, EOFError, RuntimeError ...)
    except (OSError, ValueError, EOFError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else type(exc).__name__
        raise DataError(f"damaged index file ({reason}); {_rebuild_hint(path.parent, config)}", str(path)) from None


class SearchIndex:
    """Embeddings + optional FAISS index + id map for one model (identified by its fingerprint)."""

    def __init__(self, path: Path, embeddings: np.ndarray | None, rows: list[dict], config: dict, faiss_index=None,
                 compressed: Compressed | None = None):
        self.path, self.embeddings, self.rows, self.config = path, embeddings, rows, config
        self.faiss_index = faiss_index
        self.compressed = compressed  # the codes of a compressed index (then embeddings: kept floats or None)
        self.encode: Encode | None = None

    # ------------------------------------------------------------ build / load

    @classmethod
    def build(cls, encode: Encode, corpus: Mapping[str, Document], out: str | Path, *, factory: str = "Flat",
              fingerprint: str | None = None, model: str | None = None, recall_k: int = 10,
              recall_queries: Sequence[str] | None = None, max_recall_queries: int = 200,
              seed: int = 0, form: IndexForm | None = None) -> SearchIndex:
        """Encode `corpus` (title + text), build the index (stored as `form` says), measure approximate recall,
        write `out`."""
        fingerprint = fingerprint or getattr(encode, "fingerprint", None)
        if fingerprint is None:
            raise ConfigError("SearchIndex.build needs the model fingerprint: pass an Encoder or fingerprint=...")
        ids = list(corpus)
        texts = [corpus[i].full_text for i in ids]
        plan_encoding(encode, {"document": texts, "query": list(recall_queries or [])})
        emb = encode(texts, "document").astype(np.float32)
        rows = [_row(i, corpus[i]) for i in ids]
        config = {"model": model, **encoder_identity(encode), "fingerprint": fingerprint, "factory": factory,
                  "dim": int(emb.shape[1]), "count": len(ids), "seed": seed,
                  "precision": getattr(encode, "precision", None)}
        if getattr(encode, "int8_report", None):
            config["int8_guard"] = {k: v for k, v in encode.int8_report.items() if k != "folder"}
        index = cls(Path(out), emb, rows, config)
        index._store(form or IndexForm())
        index.encode = encode
        index._rebuild()
        if config["factory"] != "exact":
            config["recall"] = index._measure_recall(encode, recall_queries, recall_k, max_recall_queries, seed)
        index.save()
        return index

    @classmethod
    def load(cls, path: str | Path, encode: Encode | None = None, *, fingerprint: str | None = None) -> SearchIndex:
        """Load a folder; with `encode`, check that it is the model the index was built with."""
        path = Path(path)
        required = _required_files(path)
        missing = [f for f in required if not (path / f).is_file()]
        if missing:
            raise DataError(f"not a textcl index folder (missing {', '.join(missing)})", str(path))
        config = _read_part(path / "config.json", lambda p: json.loads(p.read_text(encoding="utf-8")), {})
        rows = _read_part(path / "ids.jsonl", lambda p: [json.loads(line) for line in
                                                        p.read_text(encoding="utf-8").splitlines()], config)
        emb = _read_part(path / "embeddings.npy", np.load, config) if "embeddings.npy" in required else None
        compressed = None
        if CODES in required:
            compressed = _read_part(path / CODES, lambda p: Compressed.load(p, config["compression"], config["dim"]),
                                    config)
        faiss_index = None
        if config.get("factory", "exact") != "exact":
            faiss_index = _read_part(path / "index.faiss", _read_faiss, config)
            _set_search_params(faiss_index, config.get("search_params", {}))
        counts = {name: len(part) for name, part in (("embeddings.npy", emb), (CODES, compressed), ("ids.jsonl", rows))
                  if part is not None}
        if faiss_index is not None:
            counts["index.faiss"] = faiss_index.ntotal
        if len(set(counts.values())) > 1:
            raise DataError(f"damaged index: its files disagree on the number of documents ({counts}); "
                            f"{_rebuild_hint(path, config)}", str(path))
        index = cls(path, emb, rows, config, faiss_index, compressed)
        if encode is not None:
            index.attach(encode, fingerprint=fingerprint)
        return index

    def attach(self, encode: Encode, *, fingerprint: str | None = None) -> None:
        """Use `encode` for text queries; refuse it when its fingerprint differs from the index's."""
        given = fingerprint or getattr(encode, "fingerprint", None)
        if given is None:
            raise ConfigError("cannot verify the model: pass an Encoder (it has .fingerprint) or fingerprint=...")
        if given != self.config["fingerprint"]:
            raise ConfigError(
                f"index {self.path} was built with model {self.config.get('model')!r} (fingerprint "
                f"{self.config['fingerprint'][:12]}), but the given model has fingerprint {given[:12]}; "
                "embeddings of different models are not comparable: search with the same model or rebuild")
        built, now = self.config.get("precision"), getattr(encode, "precision", None)
        if built and now and built != now:
            # Same weights: int8/bf16/fp32 embeddings of one model agree to cosine ~0.99, so search works.
            log.info("index %s was built at precision %s; queries are encoded at %s (same model, so they "
                     "still search it; scores differ slightly from a %s query)", self.path, built, now, built)
        self.encode = encode

    # ------------------------------------------------------------ search / add

    def __len__(self) -> int:
        return len(self.rows)

    def search_embeddings(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Raw layout from textcl.knn: scores/rows [n, k], padded (-inf, -1)."""
        queries = self.form.truncate(queries, self._cosine)  # as the documents were (a no-op without dimensions)
        if self.compressed is not None:
            return self._search_compressed(queries, k)
        if self.faiss_index is None:
            return exact_search(queries, self.embeddings, k, similarity=self.similarity)
        return faiss_search(self.faiss_index, queries, k)

    @property
    def similarity(self) -> str:
        """How this index scores (recorded at build; indexes from before the setting: inner product)."""
        return self.config.get("similarity") or "dot"

    def search(self, queries: str | Sequence[str], k: int = 10) -> list[list[Hit]]:
        """Top-k hits per query (a single string gives a list with one result list)."""
        if self.encode is None:
            raise ConfigError("no model attached: SearchIndex.load(path, encode) or index.attach(encode)")
        texts = [queries] if isinstance(queries, str) else list(queries)
        scores, rows = self.search_embeddings(self.encode(texts, "query"), k)
        return [[Hit(self.rows[r]["id"], float(s), self.rows[r]["title"], self.rows[r]["snippet"])
                 for s, r in zip(srow, rrow) if r >= 0] for srow, rrow in zip(scores, rows)]

    def add(self, corpus: Mapping[str, Document]) -> int:
        """Encode and append documents with the attached (fingerprint-checked) model; returns the count."""
        if self.encode is None:
            raise ConfigError("no model attached: load the index with the model it was built with")
        known = {r["id"] for r in self.rows}
        dup = [i for i in corpus if i in known]
        if dup:
            raise DataError(f"{len(dup)} ids already in the index, e.g. '{dup[0]}'", str(self.path))
        ids = list(corpus)
        emb = self._store_new(self.encode([corpus[i].full_text for i in ids], "document").astype(np.float32))
        if emb is not None:
            self.embeddings = np.concatenate([self.embeddings, emb])
        self.rows += [_row(i, corpus[i]) for i in ids]
        self.config["count"] = len(self.rows)
        if self.faiss_index is not None:
            self.faiss_index.add(np.ascontiguousarray(emb))
        self.save()
        return len(ids)

    # ------------------------------------------------------------ internals

    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if self.embeddings is not None:
            np.save(self.path / "embeddings.npy", self.embeddings)
        if self.compressed is not None:
            self.compressed.save(self.path / CODES)
        if not self.form.plain:
            self.config["bytes"] = self._bytes()
        with (self.path / "ids.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows)
        (self.path / "fingerprint.txt").write_text(self.config["fingerprint"] + "\n", encoding="utf-8")
        if self.faiss_index is not None:
            faiss.write_index(self.faiss_index, str(self.path / "index.faiss"))
        (self.path / "config.json").write_text(json.dumps(self.config, indent=2) + "\n", encoding="utf-8")

    # ------------------------------------------------------------ truncated / compressed storage (IndexForm)

    @property
    def form(self) -> IndexForm:
        c = self.config
        return IndexForm(c.get("compression") or "none", c.get("dimensions"), c.get("rescore"))

    @property
    def _cosine(self) -> bool:  # truncated vectors are renormalised only for cosine
        return self.config.get("similarity") == "cosine"

    def _store(self, form: IndexForm) -> None:
        """Keep the built float vectors as `form` says: truncated (queries then are too) and/or compressed (the
        codes are searched; the float vectors stay only for rescoring); the config records the form."""
        if form.plain:
            return
        form.check(self.config.get("similarity"), self.embeddings.shape[1])
        if form.compressed and self.config["factory"] not in ("Flat", "exact"):
            raise ConfigError(f"index.compression {form.compression} with factory {self.config['factory']}: a "
                              "compressed index is searched exhaustively over its codes; set factory: Flat, or "
                              "compression: none with a FAISS factory that compresses (e.g. IVF1024,PQ32)")
        self.config.update(form.describe(), model_dim=self.config["dim"])
        self.embeddings = form.truncate(self.embeddings, self._cosine)
        self.config["dim"] = int(self.embeddings.shape[1])
        if form.compressed:
            self.compressed = compress(self.embeddings, form.compression, self.config.get("seed", 0))
            self.config["factory"] = "exact"  # an exhaustive scan of the codes
            self.embeddings = self.embeddings if form.rescore else None

    def _store_new(self, emb: np.ndarray) -> np.ndarray | None:
        """New documents' vectors in the index's form: codes appended; the float rows to keep (or None)."""
        emb = self.form.truncate(emb, self._cosine)
        if self.compressed is not None:
            self.compressed.add(emb)
        return emb if self.embeddings is not None else None

    def _search_compressed(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k over the codes; with rescore and the float vectors kept, the codes' top-K re-ranked with them."""
        depth = max(k, self.form.rescore or 0) if self.embeddings is not None else k
        scores, rows = self.compressed.search(queries, depth)
        if self.embeddings is not None and self.form.rescore:
            scores, rows = rescore(queries, rows, self.embeddings)
        out_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_i = np.full((len(queries), k), -1, dtype=np.int64)
        m = min(k, scores.shape[1])
        out_s[:, :m], out_i[:, :m] = scores[:, :m], rows[:, :m]
        return out_s, out_i

    def _bytes(self) -> dict[str, int]:
        """What the index searches, the float vectors kept beside it, and float32 vectors of the model's size."""
        searched = self.compressed.nbytes if self.compressed is not None else int(self.embeddings.nbytes)
        kept = int(self.embeddings.nbytes) if self.compressed is not None and self.embeddings is not None else 0
        return {"index": searched, "float_kept_for_rescore": kept,
                "float32": len(self.rows) * int(self.config.get("model_dim", self.config["dim"])) * 4}

    def _rebuild(self) -> None:
        if self.config["factory"] == "exact":
            return
        self.faiss_index = build_faiss_index(self.embeddings, self.config["factory"], gpu=False,
                                             seed=self.config.get("seed", 0), similarity=self.similarity)
        self.config["search_params"] = _get_search_params(self.faiss_index)

    def _measure_recall(self, encode: Encode, queries: Sequence[str] | None, k: int, limit: int,
                        seed: int) -> dict:
        """Recall@k of the approximate index against exact search, on real queries or sampled documents."""
        rng = np.random.default_rng(seed)
        if queries:
            texts = list(queries)[:limit]
            q, source = self.form.truncate(encode(texts, "query"), self._cosine), "queries"
        else:
            pick = np.sort(rng.choice(len(self.rows), min(limit, len(self.rows)), replace=False))
            q, source = self.embeddings[pick], "corpus sample"
        k = min(k, len(self.rows))
        e_s, e_i = exact_search(q, self.embeddings, k, similarity=self.similarity)
        a_s, a_i = faiss_search(self.faiss_index, q, k)
        recall = recall_at_k(a_i, e_i, k, exact_scores=e_s, approx_scores=a_s)
        log.info("index %s: recall@%d vs exact = %.4f on %d %s", self.config["factory"], k, recall, len(q), source)
        return {"k": k, "queries": int(len(q)), "query_source": source, "recall": round(float(recall), 4)}


def _required_files(path: Path) -> tuple[str, ...]:
    """The files a folder needs: a compressed index (its config.json says) has codes.faiss, and embeddings.npy
    only when the float vectors are kept for rescoring."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return FILES  # missing or damaged: reported by the caller
    if config.get("compression", "none") == "none":
        return FILES
    return (CODES, *FILES[1:], *(("embeddings.npy",) if config.get("rescore") else ()))


def _row(doc_id: str, doc: Document) -> dict:
    return {"id": doc_id, "title": doc.title, "snippet": doc.text[:SNIPPET_CHARS]}


def _get_search_params(index) -> dict:
    """Search-time parameters that faiss.write_index does not keep (HNSW efSearch, IVF nprobe)."""
    out = {}
    base = faiss.downcast_index(index)
    if hasattr(base, "hnsw"):
        out["efSearch"] = int(base.hnsw.efSearch)
    ivf = faiss.try_extract_index_ivf(index) if hasattr(faiss, "try_extract_index_ivf") else None
    if ivf is not None:
        out["nprobe"] = int(ivf.nprobe)
    return out


def _set_search_params(index, params: dict) -> None:
    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)
