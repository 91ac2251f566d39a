"""Plain text for pretraining: one column of a row becomes ``text``."""

from __future__ import annotations

from typing import Any

from minigpt.data.converters.fields import text_field
from minigpt.registry import CONVERTERS


@CONVERTERS.register("text")
def text(row: dict[str, Any], field: str = "text") -> dict[str, Any]:
    return {"text": text_field(row, field, turn="text")}
