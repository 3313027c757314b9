"""Map table columns to roles (query, positive, negative, ids, scores): explicit mapping first,
then auto-detection from common names; the result is logged, never guessed silently.
"""

from __future__ import annotations

import difflib
import logging
import re

from textcl.errors import DataError

log = logging.getLogger(__name__)

# Candidates are matched case-insensitively, in this order.
EXAMPLE_ROLES: dict[str, tuple[str, ...]] = {
    "query": ("query", "anchor", "question", "sentence1", "queries", "q"),
    "positive": ("positive", "positives", "pos", "answer", "document", "passage", "sentence2"),
    "negative": ("negative", "negatives", "neg", "hard_negative", "hard_negatives"),
    "query_id": ("query_id", "qid", "query-id"),
    "positive_id": ("positive_ids", "positive_id", "pos_ids", "pos_id"),
    "negative_id": ("negative_ids", "negative_id", "neg_ids", "neg_id"),
    "scores": ("scores", "neg_scores", "negative_scores"),
}
ROLE_ALIASES = {"positives": "positive", "pos": "positive", "negatives": "negative", "neg": "negative",
                "anchor": "query", "positive_ids": "positive_id", "negative_ids": "negative_id",
                "score": "scores", "qid": "query_id"}
# sentence-transformers' mine_hard_negatives writes negative_1, negative_2, ... columns.
_NUMBERED_NEGATIVE = re.compile(r"^(negative|neg|hard_negative)_?(\d+)$", re.IGNORECASE)


def _normalise_roles(columns: dict | None, roles: dict, path: str) -> dict[str, str | list[str]]:
    out: dict[str, str | list[str]] = {}
    for role, col in (columns or {}).items():
        key = ROLE_ALIASES.get(role, role) if role not in roles else role
        if key not in roles:
            close = difflib.get_close_matches(role, list(roles), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise DataError(f"unknown role '{role}' in columns (valid roles: {', '.join(roles)}){hint}", path)
        if isinstance(col, (list, tuple)) and col and all(isinstance(c, str) for c in col):
            out[key] = list(col)
        elif isinstance(col, str) and col:
            out[key] = col
        else:
            raise DataError(f"columns['{role}'] must be a column name or a list of names, got {col!r}", path)
    return out


def resolve_columns(names: list[str], columns: dict | None, roles: dict[str, tuple[str, ...]],
                    required: tuple[str, ...], path: str) -> dict[str, str | list[str]]:
    """Return role -> column name (or list of names) for the columns present in `names`.

    Explicit `columns` must name existing columns; missing roles are auto-detected (logged at INFO).
    A missing required role is a DataError listing the available columns.
    """
    mapping = _normalise_roles(columns, roles, path)
    for role, col in mapping.items():
        for c in [col] if isinstance(col, str) else col:
            if c not in names:
                close = difflib.get_close_matches(c, names, n=1, cutoff=0.5)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise DataError(f"column '{c}' (role {role}) not found; available columns: "
                                f"{', '.join(map(str, names)) or 'none'}{hint}", path)
    used = {c for col in mapping.values() for c in ([col] if isinstance(col, str) else col)}
    lower = {str(n).lower(): n for n in reversed(names)}  # first spelling wins on case clashes
    detected = {}
    for role, candidates in roles.items():
        if role in mapping:
            continue
        for cand in candidates:
            if cand in lower and lower[cand] not in used:
                mapping[role] = detected[role] = lower[cand]
                used.add(lower[cand])
                break
        if role == "negative" and role not in mapping:
            numbered = sorted((int(m.group(2)), n) for n in names
                              if isinstance(n, str) and (m := _NUMBERED_NEGATIVE.match(n)) and n not in used)
            if numbered:
                mapping[role] = detected[role] = [n for _, n in numbered]
                used.update(detected[role])
    if detected:  # a guess (question -> query) is worth a line; a column named after its role is not
        guessed = any(c not in (r, f"{r}s") for r, c in detected.items() if isinstance(c, str))
        log.log(logging.INFO if guessed else logging.DEBUG, "%s: auto-detected columns %s", path,
                ", ".join(f"{r}={c!r}" for r, c in detected.items()))
    missing = [r for r in required if r not in mapping]
    if missing:
        cli = ",".join(f"{r}=COLUMN" for r in missing)
        yaml_map = ", ".join(f"{r}: COLUMN" for r in missing)
        raise DataError(f"no column for role(s) {', '.join(missing)}; available columns: "
                        f"{', '.join(map(str, names)) or 'none'}; map them with --columns {cli} "
                        f"(in a recipe: data.columns: {{{yaml_map}}})", path)
    return mapping


def parse_columns_arg(text: str) -> dict[str, str | list[str]]:
    """`query=question,positive=answer,negative=n1+n2` (CLI form) -> mapping."""
    out: dict[str, str | list[str]] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        if "=" not in item:
            raise DataError(f"--columns item '{item}' must look like role=column")
        role, col = (s.strip() for s in item.split("=", 1))
        out[role] = col.split("+") if "+" in col else col
    return out
