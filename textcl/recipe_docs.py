"""The recipe reference (docs/recipes.md), generated from the config dataclasses: every key with its type,
default and the comment written next to the field in textcl/config.py. `make docs` writes it; a test fails
when the committed page differs from what the code generates.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Any

from textcl import config as C

HEADER = """# Recipe reference

Generated from `textcl/config.py` by `make docs` (do not edit by hand). A recipe is YAML with these
sections; every key is optional, `--set section.key=value` overrides any of them on the command line, and
unknown keys are an error naming the closest valid one. `null` is YAML's None. Relative paths resolve
against the recipe's folder (against the working directory in `--set`).
"""


def field_comments(cls: type) -> dict[str, str]:
    """{field: its comment}: the `# ...` at the end of the field's line, after the comment lines just above it."""
    source = inspect.getsource(cls).splitlines()
    tree = ast.parse(inspect.getsource(cls))
    out: dict[str, str] = {}
    for node in tree.body[0].body:  # type: ignore[attr-defined]
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        above, i = [], node.lineno - 2
        while i >= 0 and source[i].strip().startswith("#"):
            above.insert(0, source[i].strip().lstrip("#").strip())
            i -= 1
        line = source[node.end_lineno - 1]
        inline = line.split("  # ", 1)[1].strip() if "  # " in line else ""
        out[node.target.id] = " ".join(x for x in (*above, inline) if x)
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _value(v: Any) -> str:
    if v is None:
        return "`null`"
    if isinstance(v, bool):
        return f"`{str(v).lower()}`"
    if isinstance(v, str):
        return f'`"{v}"`'
    return f"`{v}`"


def section_table(name: str, cls: type) -> list[str]:
    hints = typing.get_type_hints(cls)
    notes = field_comments(cls)
    lines = [f"## `{name}`" if name else "## top level", "", "| key | type | default | what it does |",
             "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            continue
        doc = notes.get(f.name, "").replace("|", "\\|")
        kind = C._type_name(hints[f.name]).replace("|", "\\|")  # noqa: SLF001 - the loader's own wording
        lines.append(f"| `{f.name}` | {kind} | {_value(_default(f)).replace('|', chr(92) + '|')} | {doc} |")
    return lines + [""]


def render() -> str:
    lines = [HEADER]
    lines += section_table("", C.RunConfig)
    hints = typing.get_type_hints(C.RunConfig)
    for f in dataclasses.fields(C.RunConfig):
        sub = hints[f.name]
        if dataclasses.is_dataclass(sub):
            lines += section_table(f.name, sub)
            sub_hints = typing.get_type_hints(sub)
            for g in dataclasses.fields(sub):
                if dataclasses.is_dataclass(sub_hints[g.name]):
                    lines += section_table(f"{f.name}.{g.name}", sub_hints[g.name])
    return "\n".join(lines).rstrip() + "\n"


def undocumented() -> list[str]:
    """Recipe keys without a comment next to their field (the test keeps this empty)."""
    missing = []

    def walk(prefix: str, cls: type) -> None:
        hints, notes = typing.get_type_hints(cls), field_comments(cls)
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(hints[f.name]):
                walk(key + ".", hints[f.name])
            elif not notes.get(f.name):
                missing.append(key)

    walk("", C.RunConfig)
    return missing


def write(path: str | Path) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(render(), encoding="utf-8")
    return Path(path)


if __name__ == "__main__":
    print(write(Path(__file__).resolve().parents[1] / "docs" / "recipes.md"))
