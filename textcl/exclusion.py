"""Known positives and the one rule for what may never be a negative: a document is excluded for a query if
it is a known positive by id, has the normalised text of one, or has the query's normalised text.
`ExclusionIndex` maps ids and normalised texts to rows; the miner, the in-batch masks and the training
corpus all ask it, so the rule is written here once.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

from textcl.types import normalize_text

# Why a row is excluded, in the order the rule tests them: the first that applies is the reason given.
REASONS = ("positive_id", "positive_text", "query_text")


@dataclass(frozen=True)
class KnownPositives:
    """What is known to be relevant to one query: positive ids and normalized positive texts."""

    ids: frozenset[str] = frozenset()
    texts: frozenset[str] = frozenset()


class ExclusionIndex:
    """Rows by id and by normalised text. A row may carry several keys (a query keyed by its known
    positives) and a key several rows (duplicate texts)."""

    def __init__(self) -> None:
        self._by_id: dict[Hashable, list[int]] = {}
        self._by_text: dict[str, list[int]] = {}

    @classmethod
    def of_documents(cls, texts: Sequence[str], ids: Sequence[Hashable | None] | None = None) -> ExclusionIndex:
        """Row i = document i: its id (None = no id) and its text, normalised here."""
        index = cls()
        for row, text in enumerate(texts):
            index.add(row, texts=(normalize_text(text),))
        for row, key in enumerate(ids or ()):
            if key is not None:
                index.add(row, ids=(key,))
        return index

    def add(self, row: int, ids: Iterable[Hashable] = (), texts: Iterable[str] = ()) -> None:
        """Key `row` by `ids` and by `texts` (already normalised)."""
        for key in ids:
            self._by_id.setdefault(key, []).append(row)
        for text in texts:
            self._by_text.setdefault(text, []).append(row)

    def rows_of_id(self, key: Hashable | None) -> list[int]:
        return list(self._by_id.get(key, ())) if key is not None else []

    def rows_of_text(self, normalized: str) -> list[int]:
        return list(self._by_text.get(normalized, ()))

    def exclusions(self, known: KnownPositives, query: str, rows: Iterable[int] = ()) -> dict[int, str]:
        """Row -> why it may never be a negative of `query` (an entry of REASONS, the first that applies).
        `rows` are known positives already resolved to rows (they count as `positive_id`)."""
        out: dict[int, str] = dict.fromkeys(rows, "positive_id")
        for key in known.ids:
            out.update((r, "positive_id") for r in self._by_id.get(key, ()) if r not in out)
        for text in known.texts:
            out.update((r, "positive_text") for r in self._by_text.get(text, ()) if r not in out)
        out.update((r, "query_text") for r in self._by_text.get(normalize_text(query), ()) if r not in out)
        return out

    def excluded(self, known: KnownPositives, query: str) -> set[int]:
        """The rows `exclusions` names, without the reasons."""
        return set(self.exclusions(known, query))
