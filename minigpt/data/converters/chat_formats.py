"""Chat datasets: sharegpt ({from, value} turns), openai ({role, content} messages), and prompt_only."""

from __future__ import annotations

from typing import Any

from minigpt.data.converters.fields import kept_columns, list_field
from minigpt.data.problems import fail
from minigpt.data.schema import MESSAGES, check_messages, messages_key
from minigpt.registry import CONVERTERS

SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "gpt": "assistant",
    "user": "user",
    "assistant": "assistant",
}


def sharegpt_turns(row: dict[str, Any], field: str = "conversations") -> list[dict[str, str]]:
    turns = []
    for i, turn in enumerate(list_field(row, field)):
        if not isinstance(turn, dict):
            raise fail(
                "mistyped field",
                f"{field}[{i}]",
                f"expected a {{from, value}} object, got {type(turn).__name__}",
            )
        speaker = turn.get("from")
        if not isinstance(speaker, str) or speaker not in SHAREGPT_ROLES:
            raise fail("unknown role", f"{field}[{i}].from", f"{speaker!r} (use system, human, gpt)")
        turns.append({"role": SHAREGPT_ROLES[speaker], "content": turn.get("value")})
    return turns


def openai_turns(row: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The message list under ``messages`` (or ``conversations`` with role/content), and its key."""
    key = messages_key(row) or MESSAGES
    return list_field(row, key), key


@CONVERTERS.register("sharegpt")
def sharegpt(
    row: dict[str, Any], keep: list[str] | None = None, field: str = "conversations"
) -> dict[str, Any]:
    """``conversations: [{from, value}]`` with from ∈ system/human/gpt → a conversation (``messages``)."""
    turns = check_messages(sharegpt_turns(row, field), field)
    return {MESSAGES: turns, **kept_columns(row, keep or [])}


@CONVERTERS.register("openai")
def openai(row: dict[str, Any], keep: list[str] | None = None) -> dict[str, Any]:
    """``messages: [{role, content}]`` as is (extra message keys dropped); ``conversations`` also accepted."""
    messages, key = openai_turns(row)
    return {MESSAGES: check_messages(messages, key), **kept_columns(row, keep or [])}


@CONVERTERS.register("prompt_only")
def prompt_only(row: dict[str, Any], keep: list[str] | None = None) -> dict[str, Any]:
    """A conversation (openai or sharegpt layout) without its last assistant turn: a prompt for RL."""
    messages, key = openai_turns(row)
    if messages and isinstance(messages[0], dict) and "from" in messages[0]:
        messages = sharegpt_turns(row, key)
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    return {"prompt": check_messages(messages, key, last="user"), **kept_columns(row, keep or [])}
