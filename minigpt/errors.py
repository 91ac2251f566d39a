"""The project's own error types. The CLI prints these as one clear message (no traceback) and exits != 0."""

from __future__ import annotations


class MiniGPTError(Exception):
    """Base class for every error the user is meant to read and act on."""


class ConfigError(MiniGPTError):
    """A config file (YAML) is malformed, has an unknown key, a wrong type or a missing field."""


class DataError(MiniGPTError):
    """A data source is unreadable or a row is malformed. Names file, line (or row) and field."""

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None, field: str | None = None
    ):
        self.file, self.line, self.field = file, line, field
        where = ""
        if file is not None:
            where = f"{file}"
            if line is not None:
                where += f":{line}"
            where += ": "
        if field is not None:
            where += f"field '{field}': "
        super().__init__(where + message)


class ModelError(MiniGPTError):
    """A model folder, preset or tokenizer cannot be used."""


class TrainingError(MiniGPTError):
    """Training stopped on a fault (non-finite loss, locked output folder, ...)."""
