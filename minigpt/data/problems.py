"""Row-level errors: a stable reason (for counting skipped rows) plus the file, line or row, and field.

Converters raise ``fail(...)`` without knowing where the row came from; the pipeline adds the location.
"""

from __future__ import annotations

from dataclasses import dataclass

from minigpt.errors import DataError
from minigpt.secrets import redact_text

EMPTY_TURN = "empty turn"  # the one reason that filters.empty_turns: drop turns into a counted filter


@dataclass(frozen=True)
class Location:
    """Where a raw row came from: a file with a line (text formats) or a row number (parquet, hub, JSON)."""

    file: str
    line: int | None = None
    row: int | None = None

    @property
    def id(self) -> str:
        """Short row id for ``meta.id``: file name plus line or row. It is written into every prepared row,
        so a token in the name (``rows-<token>.jsonl``) is redacted here, where the project adds it."""
        name = redact_text(self.file.rsplit("/", 1)[-1])
        if self.line is not None:
            return f"{name}:{self.line}"
        return f"{name}#{self.row}" if self.row is not None else name


def data_error(
    message: str,
    *,
    file: str | None = None,
    line: int | None = None,
    row: int | None = None,
    field: str | None = None,
    reason: str | None = None,
) -> DataError:
    """A DataError with ``reason`` (stable category) and ``row`` attributes; rows print as 'file row N'."""
    shown = f"{file} row {row}" if (file is not None and row is not None and line is None) else file
    err = DataError(message, file=shown, line=line, field=field)
    err.file = file
    err.row = row  # type: ignore[attr-defined]
    err.reason = reason or message  # type: ignore[attr-defined]
    return err


def fail(reason: str, field: str | None = None, detail: str = "") -> DataError:
    """A row problem found by a converter or schema check; the location is added later by ``locate``."""
    return data_error(f"{reason}: {detail}" if detail else reason, field=field, reason=reason)


def empty_turn(field: str, what: str) -> DataError:
    """An empty turn (``what``: "assistant turn", "text", ...): bad input, or a filter with empty_turns: drop."""
    return data_error(f"empty {what}", field=field, reason=EMPTY_TURN)


def reason_of(err: DataError) -> str:
    return getattr(err, "reason", None) or str(err)


def locate(err: DataError, loc: Location) -> DataError:
    """The same error, now naming the file and line (or row) of the raw row."""
    if err.file is not None:
        return err
    message = str(err)
    if err.field is not None:  # DataError already put "field 'x': " in front; rebuild without it
        message = message.removeprefix(f"field '{err.field}': ")
    return data_error(
        message, file=loc.file, line=loc.line, row=loc.row, field=err.field, reason=reason_of(err)
    )
