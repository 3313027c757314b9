"""Progress bars for long steps: one tqdm bar with an ETA on a terminal, nothing in a log file.

A bar is off when the caller turns it off, when stderr is not a terminal (a log file gets no escape
codes) or when TQDM_DISABLE is set (`--no-progress`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def bars_wanted() -> bool:
    return not os.environ.get("TQDM_DISABLE") and sys.stderr.isatty()


def bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """`tqdm(iterable, **kwargs)`, disabled unless `enabled` and `bars_wanted()`."""
    return tqdm(iterable, disable=not (enabled and bars_wanted()), dynamic_ncols=True, **kwargs)
