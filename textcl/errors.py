"""Exception types raised at textcl's boundaries (recipes, files, public functions)."""

from __future__ import annotations


class TextclError(Exception):
    """Base class: every error textcl raises on purpose."""


class ConfigError(TextclError, ValueError):
    """A recipe or override is invalid."""


class DataError(TextclError, ValueError):
    """Input data is malformed; the message names the file, line and field."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f":{line}"
            if field is not None:
                where += f" field '{field}'"
            where += ": "
        super().__init__(where + message)
        self.path, self.line, self.field = path, line, field
        self.reason = message  # the message without the location prefix


class TrainingError(TextclError, RuntimeError):
    """Training cannot continue (non-finite loss, resource fault)."""


class TrainingInterrupted(TextclError):
    """Ctrl-C during training: a checkpoint of `step` was saved (step 0: nothing to resume)."""

    def __init__(self, step: int, checkpoint: str | None):
        super().__init__(f"interrupted at step {step}" + (f"; checkpoint {checkpoint}" if checkpoint else ""))
        self.step, self.checkpoint = step, checkpoint
