"""Small field readers shared by the converters: each names the raw field when it is missing or mistyped."""

from __future__ import annotations

from typing import Any

from minigpt.data.problems import empty_turn, fail


def text_field(row: dict[str, Any], name: str, *, required: bool = True, turn: str | None = None) -> str:
    """A string column. Absent or null: an error if required, else "". ``turn`` names the role it becomes,
    so an empty value is reported as an empty turn (which ``filters.empty_turns: drop`` may filter)."""
    value = row.get(name)
    if value is None:
        if required:
            raise fail(
                "missing field", name, f"the row has no '{name}' (columns: {', '.join(map(str, row))})"
            )
        return ""
    if not isinstance(value, str):
        raise fail("mistyped field", name, f"expected a string, got {type(value).__name__}")
    if turn is not None and not value.strip():
        raise empty_turn(name, "text" if turn == "text" else f"{turn} turn")
    return value


def list_field(row: dict[str, Any], name: str) -> list[Any]:
    value = row.get(name)
    if value is None:
        raise fail("missing field", name, f"the row has no '{name}' (columns: {', '.join(map(str, row))})")
    if not isinstance(value, list):
        raise fail("mistyped field", name, f"expected a list, got {type(value).__name__}")
    return value


def kept_columns(row: dict[str, Any], keep: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Copy the task columns named in ``keep`` (e.g. an answer for a reward function)."""
    out = {}
    for name in keep:
        if name not in row:
            raise fail("missing field", name, "named in converter_args.keep")
        out[name] = row[name]
    return out
