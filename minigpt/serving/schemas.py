"""Request bodies of the HTTP API, validated by pydantic. A field the server does not implement is
refused by name (``extra="forbid"``) rather than silently ignored, so a client never believes that, say,
``tools`` or ``n=3`` took effect."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

MAX_STOP_SEQUENCES = 4  # OpenAI's limit


def _as_list(value: Any) -> Any:
    """OpenAI's ``stop`` is a string or a list of them; one type makes errors name the field plainly."""
    return [value] if isinstance(value, str) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    """One part of a message's content in the list form (``[{"type": "text", "text": ...}]``)."""

    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None  # accepted for compatibility; the chat template has no place for it

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    """``POST /v1/chat/completions``. Omitted sampling fields take the server's defaults (its CLI options),
    which suit small models better than OpenAI's temperature 1. ``temperature: 0`` decodes greedily."""

    model: str
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: Annotated[list[str], BeforeValidator(_as_list), Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: list[str] | None) -> list[str] | None:
        if value and any(s == "" for s in value):
            raise ValueError("a stop sequence must not be empty")
        return value

    def stop_sequences(self) -> list[str]:
        return list(self.stop or [])

    def requested_tokens(self) -> int | None:
        """``max_completion_tokens`` (the newer name) wins over ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens


class TicTacToeMoveRequest(_Strict):
    """``POST /v1/tictactoe/move``: the board before the model's move, row-major, ``X``/``O``/``.``."""

    board: Annotated[str, Field(pattern=r"^[XO.]{9}$")]
