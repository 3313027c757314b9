"""The training corpus for corpus-wide negatives: its texts and ids, the frozen document embeddings
(computed once by the base model), and for each batch the row of every query's sampled positive and
the rows kept out of its softmax.

Exclusion is the miner's and the in-batch masks' rule, asked of one `ExclusionIndex`
(textcl/exclusion.py): a document is never a negative of a query if it is a known positive of that
query by id, has the normalised text of one, or has the query's own normalised text.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from textcl.compress import IndexForm, IndexView
from textcl.config import RunConfig
from textcl.data.batching import Batch
from textcl.data.beir import find_file, is_beir_folder
from textcl.data.examples import load_texts
from textcl.data.retrieval import load_corpus
from textcl.errors import ConfigError, DataError
from textcl.exclusion import ExclusionIndex, KnownPositives
from textcl.scores import pairwise_scores
from textcl.shard import CorpusShard, shard_bounds
from textcl.types import Encode, Example, normalize_text

log = logging.getLogger(__name__)

FP32_LIMIT_BYTES = 1 << 30  # corpus_dtype=auto keeps fp32 up to 1 GiB of embeddings, else fp16


@dataclass
class TrainingCorpus:
    """Documents queries are scored against. `embeddings` [N, D] are frozen (no gradient)."""

    texts: list[str]
    ids: list[str] | None
    embeddings: torch.Tensor | None = None
    _index: ExclusionIndex = field(default_factory=ExclusionIndex, repr=False)
    shard_start: int | None = None  # train.corpus_shard: `embeddings` are rows [shard_start, +len) only

    def __post_init__(self) -> None:
        self._index = ExclusionIndex.of_documents(self.texts, self.ids)

    def to(self, device: torch.device | str) -> TrainingCorpus:
        """Move the embeddings to the training device, once: every step then scores them where they are."""
        if self.embeddings is not None:
            self.embeddings = self.embeddings.to(device)
        return self

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def shard(self) -> CorpusShard | None:
        """This rank's rows of a sharded corpus (None: `embeddings` hold every row)."""
        if self.shard_start is None or self.embeddings is None:
            return None
        return CorpusShard(self.embeddings, self.shard_start, len(self))

    def keep_shard(self, rank: int, world: int) -> TrainingCorpus:
        """Keep rank `rank`'s rows of `world` (`textcl.shard.shard_bounds`) when embeddings hold every row."""
        if self.embeddings is not None and self.shard_start is None:
            start, stop = shard_bounds(len(self), world, rank)
            self.embeddings, self.shard_start = self.embeddings[start:stop].clone(), start
        return self

    def row_of(self, text: str, doc_id: str | None) -> int:
        """The corpus row of a positive: by id when the corpus has ids, else by (normalised) text."""
        by_id = self._index.rows_of_id(doc_id)
        if by_id:
            return by_id[0]
        rows = self._index.rows_of_text(normalize_text(text))
        if not rows:
            raise DataError(f"positive {doc_id or text[:60]!r} is not in the training corpus; give it in "
                            "train.corpus or train on rows whose positives come from that corpus")
        exact = [r for r in rows if self.texts[r] == text]
        return (exact or rows)[0]

    def targets(self, batch: Batch) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """(positive row of each query [B], excluded (rows, cols)): the sampled positive (it enters the loss
        once, as the positive) and its text, and whatever `ExclusionIndex.excluded` names for the query."""
        g = batch.group_size
        ids = batch.candidate_ids or [None] * len(batch.candidates)
        positives, ex_rows, ex_cols = [], [], []
        for i, query in enumerate(batch.queries):
            pos = self.row_of(batch.candidates[i * g], ids[i * g])
            positives.append(pos)
            known = batch.positive_sets[i] if batch.positive_sets else KnownPositives()
            cols = {pos, *self._index.rows_of_text(normalize_text(batch.candidates[i * g]))}
            cols |= self._index.excluded(known, query)
            ex_rows += [i] * len(cols)
            ex_cols += sorted(cols)
        return (torch.tensor(positives, dtype=torch.long),
                (torch.tensor(ex_rows, dtype=torch.long), torch.tensor(ex_cols, dtype=torch.long)))

    def positive_pairs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(query rows, corpus rows) of every known positive of each query: each id found in this corpus,
        then (one row per text) each normalised text that no row found by id has (`KnownPositives` keeps
        ids and texts as unpaired sets: a positive without an id in the corpus is still a target by its
        text); the sampled positive always. All of them are also in `targets`' exclusions."""
        g = batch.group_size
        ids = batch.candidate_ids or [None] * len(batch.candidates)
        rows, cols = [], []
        for i in range(len(batch)):
            found = {self.row_of(batch.candidates[i * g], ids[i * g])}
            known = batch.positive_sets[i] if batch.positive_sets else KnownPositives()
            by_id = {r for d in known.ids for r in self._index.rows_of_id(d)[:1]}
            covered = {normalize_text(self.texts[r]) for r in by_id}
            found |= by_id
            found.update(self._index.rows_of_text(t)[0] for t in known.texts
                         if t not in covered and self._index.rows_of_text(t))
            rows += [i] * len(found)
            cols += sorted(found)
        return torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)


def storage_dtype(n: int, dim: int, choice: str) -> torch.dtype:
    """fp32, or fp16 (half the memory; scores are still computed in fp32) for `auto` past 1 GiB."""
    if choice == "fp32":
        return torch.float32
    if choice == "fp16":
        return torch.float16
    return torch.float32 if n * dim * 4 <= FP32_LIMIT_BYTES else torch.float16


def load_corpus_texts(config: RunConfig, examples: Sequence[Example]) -> tuple[list[str], list[str] | None, str]:
    """(texts, ids or None, where they came from): `train.corpus` (a BEIR folder or a text file), else
    the BEIR corpus of `data.train`, else every positive and negative text of the training rows; with
    `train.corpus_scope: labelled`, only the documents a training row names."""
    texts, ids, where = _corpus_texts(config, examples)
    if config.train.corpus_scope == "labelled":
        named_ids = {i for ex in examples for i in (*ex.positive_ids, *ex.negative_ids)}
        named = set(_example_texts(examples))
        keep = [k for k, t in enumerate(texts) if t in named or (ids is not None and ids[k] in named_ids)]
        log.info("train.corpus_scope labelled: %d of the %d corpus documents are named by a training row; the rest "
                 "are left out of training", len(keep), len(texts))
        texts, ids = [texts[k] for k in keep], ([ids[k] for k in keep] if ids is not None else None)
        where = f"{where} (labelled documents only)"
    return texts, ids, where


def _corpus_texts(config: RunConfig, examples: Sequence[Example]) -> tuple[list[str], list[str] | None, str]:
    source = config.train.corpus or config.data.train
    if source is not None and is_beir_folder(source):
        docs = load_corpus(source)
        return [d.full_text for d in docs.values()], list(docs), str(find_file(Path(source), "corpus.jsonl"))
    if config.train.corpus is not None:
        texts = list(dict.fromkeys(load_texts(config.train.corpus)))
        known = set(texts)
        texts += [t for t in _example_texts(examples) if t not in known]
        return texts, None, config.train.corpus
    return _example_texts(examples), None, "the training rows' positives and negatives"


def _example_texts(examples: Sequence[Example]) -> list[str]:
    return list(dict.fromkeys(t for ex in examples for t in (*ex.positives, *ex.negatives)))


def build_training_corpus(config: RunConfig, examples: Sequence[Example], encode: Encode | None,
                          shard: tuple[int, int] | None = None) -> TrainingCorpus:
    """Load the corpus texts and, when `encode` is given, embed them once (document role). `shard` = (rank,
    world): embed only that rank's rows (`TrainingCorpus.keep_shard`; the texts stay whole for the exclusions)."""
    texts, ids, where = load_corpus_texts(config, examples)
    if ids is None and any(ex.positive_ids for ex in examples):
        log.info("the training corpus has no ids: positives are matched by text")
    corpus = TrainingCorpus(texts=texts, ids=ids)
    log.info("training corpus: %d documents from %s", len(corpus), where)
    encode = as_indexed(config, encode) if encode is not None else None
    if encode is not None and shard is not None:
        start, stop = shard_bounds(len(texts), shard[1], shard[0])
        corpus.embeddings = embed_corpus(texts[start:stop], encode, config.train.corpus_dtype, total=len(texts))
        corpus.shard_start = start
    elif encode is not None:
        corpus.embeddings = embed_corpus(texts, encode, config.train.corpus_dtype)
    return corpus


def as_indexed(config: RunConfig, encode: Encode) -> Encode:
    """With tune: query / adapter (documents keep the frozen model) and index.compression / dimensions set, the
    corpus the query side trains against is the documents as that index returns them (textcl.compress.IndexView:
    dequantised, truncated dimensions zero-padded); otherwise `encode`."""
    form = IndexForm.of(config.index)
    if form.plain or config.train.tune not in ("query", "adapter"):
        return encode
    log.info("the query side trains for the index: training corpus as index.compression %s, dimensions %s return it",
             form.compression, form.dimensions or "all")
    return IndexView(encode, form, config.seed, training=True)


def embed_corpus(texts: list[str], encode: Encode, dtype_choice: str, total: int | None = None) -> torch.Tensor:
    """`texts` embedded, stored as `storage_dtype` chooses for a corpus of `total` rows (default: these)."""
    emb = np.asarray(encode(texts, "document"), dtype=np.float32)
    dtype = storage_dtype(total or emb.shape[0], emb.shape[1], dtype_choice)
    return torch.from_numpy(emb).to(dtype)


def sample_candidates(corpus: TrainingCorpus, q_emb: torch.Tensor, exclude: tuple[torch.Tensor, torch.Tensor],
                      k: int, m: int, rng: np.random.Generator, block: int = 65536,
                      similarity: str = "dot") -> dict[str, torch.Tensor]:
    """A bounded candidate set per step: each query's top-`k` non-excluded documents by the current
    (detached) query embeddings, and `m` documents drawn uniformly with replacement, shared by the batch.
    Masks mark excluded documents and samples that are among the query's top-k (counted exactly)."""
    if corpus.embeddings is None:
        raise ConfigError("the training corpus has no embeddings")
    emb = corpus.embeddings
    n, b = emb.shape[0], q_emb.shape[0]
    rows, cols = exclude
    device = emb.device  # the corpus's device (the training device): top-k runs there
    q_emb = q_emb.to(device)
    excluded = torch.zeros((b, n), dtype=torch.bool, device=device)
    excluded[rows.to(device), cols.to(device)] = True
    k = min(k, n)
    best = torch.full((b, 0), -math.inf, device=device)
    top = torch.zeros((b, 0), dtype=torch.long, device=device)
    with torch.no_grad():  # running top-k over corpus blocks: memory follows the block, not the corpus
        for start in range(0, n, block):
            scores = pairwise_scores(q_emb.float(), emb[start:start + block].float(), similarity)
            scores = scores.masked_fill(excluded[:, start:start + block], -math.inf)
            vals, idx = scores.topk(min(k, scores.shape[1]), dim=1)
            best, order = torch.cat([best, vals], 1).topk(min(k, best.shape[1] + vals.shape[1]), dim=1)
            top = torch.gather(torch.cat([top, idx + start], 1), 1, order)
    hard_valid = ~torch.gather(excluded, 1, top)
    sampled = torch.from_numpy(rng.integers(0, n, size=m)).long().to(device)
    in_top = torch.zeros((b, n), dtype=torch.bool, device=device)
    in_top.scatter_(1, top, True)
    sampled_valid = ~(excluded[:, sampled] | in_top[:, sampled])
    return {"top": top, "hard_valid": hard_valid, "sampled": sampled, "sampled_valid": sampled_valid}
