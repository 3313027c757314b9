"""On-disk embedding cache keyed per text, so any subset or order of texts encoded before is a hit: the
corpus encoded by one stage (data check, evaluation, mining, training) is reused by every other.

One folder per (model fingerprint, encoding settings, role) holds shards `part-*.npz`, each with the
sha256 of its texts and their float32 embeddings. Shards are written atomically and never modified.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class EmbeddingStore:
    """Rows by text key in one cache folder; shards are loaded once, on first use."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._rows: dict[bytes, tuple[int, int]] | None = None
        self._parts: list[np.ndarray] = []

    def _load(self) -> dict[bytes, tuple[int, int]]:
        if self._rows is None:
            self._rows = {}
            for path in sorted(self.folder.glob("part-*.npz")):
                with np.load(path) as part:
                    self._add(part["keys"], part["embeddings"])
        return self._rows

    def _add(self, keys: np.ndarray, emb: np.ndarray) -> None:
        assert self._rows is not None
        p = len(self._parts)
        self._parts.append(emb)
        for i, key in enumerate(keys):
            self._rows.setdefault(bytes(key), (p, i))

    def missing(self, keys: list[bytes]) -> list[int]:
        """Positions of keys not in the store (first occurrence of each)."""
        rows, seen, out = self._load(), set(), []
        for i, key in enumerate(keys):
            if key not in rows and key not in seen:
                seen.add(key)
                out.append(i)
        return out

    def add(self, keys: list[bytes], emb: np.ndarray) -> None:
        """Write one shard with these rows (atomic: a crash leaves no partial shard)."""
        self._load()
        arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32)
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        self.folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(arr.tobytes()).hexdigest()[:24]
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp.npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, keys=arr, embeddings=emb)
            os.replace(tmp, self.folder / f"part-{name}.npz")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._add(arr, emb)

    def get(self, keys: list[bytes]) -> np.ndarray:
        rows = self._load()
        return np.stack([self._parts[p][i] for p, i in (rows[k] for k in keys)]).astype(np.float32, copy=False)
