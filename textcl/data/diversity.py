"""Data-diversity report run before training: duplicates, lengths, shared positives, batch-size warnings.

Contrastive training fails quietly on narrow or repetitive data: duplicate positives in one batch
become false negatives, and a set with few distinct texts is memorised. `diversity_report` measures
what matters and returns plain JSON-able numbers plus human-readable warnings.
"""

from __future__ import annotations

import logging
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from textcl.knn import exact_search
from textcl.types import Encode, Example

log = logging.getLogger(__name__)

MIN_BATCHES_PER_EPOCH = 20
MAX_DUPLICATE_RATE = 0.05
MAX_NEAR_DUPLICATE_RATE = 0.10
MAX_COLLISIONS_PER_BATCH = 0.5


_ACCENTED_SCRIPTS_END = 0x0400  # Latin and Greek: a mark on these letters is an accent (é, ά), not a letter


def duplicate_key(text: str) -> str:
    """Case-, accent-, punctuation- and whitespace-insensitive key for the duplicate report; looser on
    purpose than `textcl.types.normalize_text`, which decides "same text" for mining and masking.

    NFKC + casefold; letters, digits and marks of every script are kept (Cyrillic, CJK, Arabic, ...),
    everything else separates words; accents on Latin and Greek letters are dropped (é -> e)."""
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    out, base = [], ""
    for ch in decomposed:
        kind = unicodedata.category(ch)[0]
        if kind == "M":
            if not base or ord(base) >= _ACCENTED_SCRIPTS_END:
                out.append(ch)
        elif kind in "LN":
            out.append(ch)
            base = ch
        else:
            out.append(" ")
            base = ""
    return " ".join(unicodedata.normalize("NFC", "".join(out)).split())


def _length_stats(lengths: Sequence[int]) -> dict:
    if not lengths:
        return {"min": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0, "mean": 0.0}
    arr = np.asarray(lengths)
    pct = {f"p{q}": round(float(np.percentile(arr, q)), 1) for q in (50, 90, 99)}
    return {"min": int(arr.min()), **pct, "max": int(arr.max()), "mean": round(float(arr.mean()), 2)}


def _duplicate_groups(keys: Sequence[str]) -> Counter:
    """key -> count for keys that occur more than once."""
    return Counter({k: c for k, c in Counter(keys).items() if c > 1})


def near_duplicates(texts: Sequence[str], encode: Encode, threshold: float, *, role: str = "document",
                    max_texts: int = 20000, seed: int = 0) -> dict:
    """Pairs of distinct texts whose embedding cosine >= threshold (on at most `max_texts`, sampled)."""
    unique = list(dict.fromkeys(texts))
    sampled = len(unique) > max_texts
    if sampled:
        rng = np.random.default_rng(seed)
        unique = [unique[i] for i in sorted(rng.choice(len(unique), max_texts, replace=False))]
    if len(unique) < 2:
        return {"checked": len(unique), "sampled": sampled, "pairs": 0, "texts_involved": 0, "rate": 0.0,
                "examples": []}
    emb = encode(list(unique), role)
    scores, idx = exact_search(emb, emb, k=min(6, len(unique)))
    pairs: set[tuple[int, int]] = set()
    for i in range(len(unique)):
        for s, j in zip(scores[i], idx[i]):
            if j >= 0 and j != i and s >= threshold:
                pairs.add((min(i, int(j)), max(i, int(j))))
    involved = {i for p in pairs for i in p}
    top = sorted(pairs, key=lambda p: -float(emb[p[0]] @ emb[p[1]]))[:5]
    return {"checked": len(unique), "sampled": sampled, "pairs": len(pairs), "texts_involved": len(involved),
            "rate": round(len(involved) / len(unique), 4),
            "examples": [[unique[a], unique[b], round(float(emb[a] @ emb[b]), 4)] for a, b in top]}


def expected_collisions_per_batch(group_sizes: Sequence[int], n: int, batch_size: int) -> float:
    """Expected number of same-positive pairs in a uniformly random batch (each is a false negative)."""
    if n < 2 or batch_size < 2:
        return 0.0
    same_pairs = sum(g * (g - 1) / 2 for g in group_sizes)
    b = min(batch_size, n)
    return float(same_pairs * b * (b - 1) / (n * (n - 1)))


def diversity_report(examples: Sequence[Example], *, batch_size: int, encode: Encode | None = None,
                     near_duplicate_threshold: float = 0.95, sources: Sequence[str | None] | None = None,
                     count_tokens: Callable[[list[str]], list[int]] | None = None,
                     max_seq_length: int | None = None, max_embed: int = 20000) -> dict:
    """Counts, duplicates, near-duplicates, lengths, shared positives, source balance and warnings."""
    n = len(examples)
    queries = [e.query for e in examples]
    positives = [e.positives[0] if e.positives else "" for e in examples]
    pair_keys = [duplicate_key(q) + "\t" + duplicate_key(p) for q, p in zip(queries, positives)]
    dup_pairs = _duplicate_groups(pair_keys)
    dup_queries = _duplicate_groups([duplicate_key(q) for q in queries])
    pos_groups = Counter(duplicate_key(p) for p in positives)
    shared = {k: c for k, c in pos_groups.items() if c > 1}
    report: dict = {
        "examples": n,
        "unique_queries": len({duplicate_key(q) for q in queries}),
        "unique_positives": len(pos_groups),
        "with_negatives": sum(1 for e in examples if e.negatives),
        "exact_duplicate_pairs": sum(c - 1 for c in dup_pairs.values()),
        "exact_duplicate_queries": sum(c - 1 for c in dup_queries.values()),
        "queries_sharing_positives": sum(shared.values()),
        "max_queries_per_positive": max(pos_groups.values(), default=0),
        "expected_false_negatives_per_batch": round(
            expected_collisions_per_batch(list(pos_groups.values()), n, batch_size), 4),
        "length_words": {"query": _length_stats([len(q.split()) for q in queries]),
                         "positive": _length_stats([len(p.split()) for p in positives])},
    }
    if count_tokens is not None and n:
        q_tok, p_tok = count_tokens(queries[:max_embed]), count_tokens(positives[:max_embed])
        report["length_tokens"] = {"query": _length_stats(q_tok), "positive": _length_stats(p_tok)}
        if max_seq_length:
            report["truncated_queries"] = sum(1 for t in q_tok if t > max_seq_length)
            report["truncated_positives"] = sum(1 for t in p_tok if t > max_seq_length)
    if encode is not None and n:
        report["near_duplicates"] = {
            "threshold": near_duplicate_threshold,
            "query": near_duplicates(queries, encode, near_duplicate_threshold, role="query", max_texts=max_embed),
            "positive": near_duplicates(positives, encode, near_duplicate_threshold, max_texts=max_embed)}
    if sources is not None and any(s is not None for s in sources):
        counts = Counter("(missing)" if s is None else str(s) for s in sources)
        report["sources"] = dict(counts.most_common())
    report["warnings"] = _warnings(report, batch_size)
    for w in report["warnings"]:
        log.warning("data check: %s", w)
    return report


def _warnings(r: dict, batch_size: int) -> list[str]:
    out = []
    n = r["examples"]
    if n == 0:
        return ["the training set is empty"]
    batches = n // max(batch_size, 1)
    if batches < MIN_BATCHES_PER_EPOCH:
        out.append(f"small set: {n} examples give only {batches} full batches of {batch_size} per epoch "
                   f"(< {MIN_BATCHES_PER_EPOCH}); expect overfitting, watch the held-out metric")
    if n < batch_size:
        out.append(f"fewer examples ({n}) than the batch size ({batch_size})")
    if r["exact_duplicate_pairs"] / n > MAX_DUPLICATE_RATE:
        out.append(f"repetitive: {r['exact_duplicate_pairs']} exact duplicate (query, positive) pairs "
                   f"({r['exact_duplicate_pairs'] / n:.1%}); deduplicate before training")
    for role in ("query", "positive"):
        nd = r.get("near_duplicates", {}).get(role)
        if nd and nd["rate"] > MAX_NEAR_DUPLICATE_RATE:
            out.append(f"repetitive: {nd['rate']:.1%} of distinct {role} texts have a near-duplicate "
                       f"(cosine >= {r['near_duplicates']['threshold']})")
    fn = r["expected_false_negatives_per_batch"]
    if fn > MAX_COLLISIONS_PER_BATCH:
        out.append(f"about {fn:.1f} pairs per batch of {batch_size} share a positive: in-batch negatives will "
                   "contain false negatives; keep loss.mask_false_negatives on or lower the batch size")
    src = r.get("sources")
    if src and len(src) > 1:
        top = max(src.values())
        if top / n > 0.9:
            out.append(f"unbalanced sources: one source holds {top / n:.0%} of the examples")
    if r.get("truncated_queries"):
        out.append(f"{r['truncated_queries']} queries are longer than max_seq_length and will be truncated")
    if r.get("truncated_positives"):
        out.append(f"{r['truncated_positives']} positives are longer than max_seq_length and will be truncated")
    return out
