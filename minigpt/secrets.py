"""Keep tokens (HF_TOKEN, WANDB_API_KEY, ...) out of logs, saved configs and reports."""

from __future__ import annotations

import os
import re
from typing import Any

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
