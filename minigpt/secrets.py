"""Keep tokens (HF_TOKEN, WANDB_API_KEY, ...) out of logs, saved configs and reports."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

_SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "OPENAI_API_KEY", "TRACKIO_TOKEN")
_SECRET_KEY = re.compile(r"(^|_)(token|api_key|apikey|secret|password)$", re.IGNORECASE)
_TOKEN_SHAPES = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,})\b")
REDACTED = "***"


def _secret_values() -> list[str]:
    return [v for k in _SECRET_ENV if (v := os.environ.get(k)) and len(v) >= 6]


def redact_text(text: str) -> str:
    for value in _secret_values():
        text = text.replace(value, REDACTED)
    return _TOKEN_SHAPES.sub(REDACTED, text)


def redact(data: Any) -> Any:
    """Redact secret-looking keys and any environment secret values found in strings."""
    if isinstance(data, dict):
        return {
            k: (REDACTED if _SECRET_KEY.search(str(k)) and v not in (None, "", False) else redact(v))
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [redact(v) for v in data]
    if isinstance(data, str):
        return redact_text(data)
    return data


class RedactingStream:
    """A text stream that redacts what is written to it and hands everything else (``fileno``, ``isatty``,
    ``encoding``, ...) to the stream it wraps."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(redact_text(text))
        return len(text)  # what the caller handed over, as a plain stream would report it

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextmanager
def redacted_console() -> Iterator[None]:
    """Redact every secret a command prints (``print``, logging handlers, warnings, progress bars: all go
    through ``sys.stdout`` / ``sys.stderr``), so no single print can forget it. A secret cut across two
    writes (a streamed answer token by token) is not caught; paths, configs and messages are written whole."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (s if isinstance(s, RedactingStream) else RedactingStream(s) for s in saved)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
