"""The four row schemas (docs/design.md §4): checks, normalisation, and adapting one schema to another.

Role order: an optional system turn first, then user and assistant alternating. A conversation ends with an
assistant turn; a prompt ends with a user turn; chosen/rejected continue a prompt, so they start with the
assistant. Content is a non-empty string. A plain-string ``prompt`` of a ``prompt_only`` row is one user turn.

A ``conversations`` row holds its turns under ``messages`` (the Hugging Face name, which TRL's SFTTrainer reads);
``conversations`` is accepted on input and renamed, so older files and prepared data still load.

``adapt`` is the one schema check: mixture rows (after their converter) and files given straight to a stage
(``data.train`` / ``data.validation``, see ``minigpt.data.row_pipeline.read_checked``) both go through it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from minigpt.data.problems import empty_turn, fail

ROLES = ("system", "user", "assistant")
SCHEMA_FIELDS = {
    "text": ("text",),
    "conversations": ("messages",),
    "preference": ("prompt", "chosen", "rejected"),
    "prompt_only": ("prompt",),
}
# Schemas whose rows keep extra columns (task columns such as gsm8k's ``answer`` for rewards).
KEEPS_EXTRAS = ("conversations", "prompt_only")

Renderer = Callable[[list[dict[str, str]]], str]

MESSAGES = "messages"
"""The key a ``conversations`` row's turns are written under."""
LEGACY_MESSAGES = "conversations"
"""The key older rows (and data prepared before the rename) hold their turns under; still read."""


def messages_key(row: dict[str, Any]) -> str | None:
    """The key holding a conversation row's turns: ``messages``, else ``conversations``, else None."""
    if MESSAGES in row:
        return MESSAGES
    return LEGACY_MESSAGES if LEGACY_MESSAGES in row else None


def row_messages(row: dict[str, Any]) -> Any:
    """A conversation row's turns under either key (None when it has neither)."""
    key = messages_key(row)
    return row[key] if key else None


def check_messages(
    messages: Any, field: str, *, first: str = "user", last: str | None = "assistant", system: bool = True
) -> list[dict[str, str]]:
    """Validate a list of {role, content} turns and return clean copies (only role and content)."""
    if not isinstance(messages, list):
        raise fail("mistyped field", field, f"expected a list of messages, got {type(messages).__name__}")
    if not messages:
        raise fail("empty conversation", field, "no turns")
    out: list[dict[str, str]] = []
    expected = first
    for i, msg in enumerate(messages):
        where = f"{field}[{i}]"
        if not isinstance(msg, dict):
            raise fail(
                "mistyped field", where, f"expected a {{role, content}} object, got {type(msg).__name__}"
            )
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise fail("unknown role", f"{where}.role", f"{role!r} (use {', '.join(ROLES)})")
        if not isinstance(content, str):
            kind = "missing" if content is None else type(content).__name__
            raise fail("mistyped field", f"{where}.content", f"expected a string, got {kind}")
        if role == "system" and i == 0 and system:
            pass
        elif role != expected:
            raise fail("wrong role order", f"{where}.role", f"expected {expected}, got {role}")
        else:
            expected = "assistant" if role == "user" else "user"
        if not content.strip():
            raise empty_turn(f"{where}.content", f"{role} turn")
        out.append({"role": role, "content": content})
    if last is not None and out[-1]["role"] != last:
        article = "an" if last == "assistant" else "a"
        raise fail(
            "wrong role order", f"{field}[{len(out) - 1}].role", f"must end with {article} {last} turn"
        )
    return out


def validate_row(row: dict[str, Any], schema: str) -> dict[str, Any]:
    """Check a row against ``schema`` and return the normalised row (``conversations`` → ``messages``)."""
    row = dict(row)
    if schema == "conversations":
        return _validate_conversation(row)
    for name in SCHEMA_FIELDS[schema]:
        if name not in row or row[name] is None:
            raise fail("missing field", name, f"a {schema} row needs {', '.join(SCHEMA_FIELDS[schema])}")
    if schema == "text":
        if not isinstance(row["text"], str):
            raise fail("mistyped field", "text", f"expected a string, got {type(row['text']).__name__}")
        if not row["text"].strip():
            raise empty_turn("text", "text")
    elif schema == "prompt_only":
        prompt = row["prompt"]
        if isinstance(prompt, str):  # a plain-text prompt is one user turn (the RL stages always took it)
            prompt = [{"role": "user", "content": prompt}]
        row["prompt"] = check_messages(prompt, "prompt", last="user")
    else:
        row["prompt"] = check_messages(row["prompt"], "prompt", last="user")
        for name in ("chosen", "rejected"):
            row[name] = check_messages(row[name], name, first="assistant", system=False)
        if row["chosen"] == row["rejected"]:
            raise fail("identical chosen and rejected", "rejected", "the pair carries no preference")
    keep = set(SCHEMA_FIELDS[schema]) | {"meta"}
    if schema not in KEEPS_EXTRAS:
        row = {k: v for k, v in row.items() if k in keep}
    return row


def _validate_conversation(row: dict[str, Any]) -> dict[str, Any]:
    """A conversation row with its turns checked and written under ``messages``. Errors name the key the row
    used, so they point at the user's own field. With both keys ``messages`` wins and ``conversations`` stays
    an extra column like any other."""
    key = messages_key(row)
    if key is None or row[key] is None:
        raise fail("missing field", MESSAGES, f"a conversations row needs {MESSAGES} (or {LEGACY_MESSAGES})")
    turns = check_messages(row.pop(key), key)
    return {MESSAGES: turns, **row}


def detect_schema(row: dict[str, Any], target: str) -> str:
    """Which schema a converter's output row is in; the target wins when its fields are present."""
    if all(k in row for k in SCHEMA_FIELDS[target]) or (target == "conversations" and messages_key(row)):
        return target
    if target == "preference" and ("chosen" in row or "rejected" in row):
        return target  # half a pair: a preference row missing a field (named by validation), not a prompt
    if "chosen" in row and "rejected" in row:
        return "preference"
    if "prompt" in row:
        return "prompt_only"
    if messages_key(row):
        return "conversations"
    if "text" in row:
        return "text"
    return target  # validation then names the missing field


def render_plain(messages: list[dict[str, str]]) -> str:
    """Conversation as plain text, for ``render: plain`` (no tokenizer needed)."""
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def adapt(row: dict[str, Any], target: str, render: Renderer | None) -> dict[str, Any]:
    """Turn a valid row of another schema into ``target``; raise for pairs that make no sense."""
    produced = detect_schema(row, target)
    row = validate_row(row, produced)
    if produced == target:
        return row
    extras = {k: v for k, v in row.items() if k not in SCHEMA_FIELDS[produced]}
    if produced == "preference":
        # SFT, RL or midtraining on the preferred answer: the prompt plus chosen is a whole conversation.
        row = {MESSAGES: row["prompt"] + row["chosen"], **extras}
        produced = "conversations"
    if produced == "conversations" and target == "prompt_only":
        turns = row[MESSAGES]
        return validate_row({"prompt": turns[:-1], **extras}, target)  # drop the last assistant turn
    if produced == "conversations" and target == "text":
        if render is None:
            raise fail("cannot render", None, "conversations need a tokenizer chat template or render: plain")
        return validate_row({"text": render(row[MESSAGES]), **extras}, target)
    if produced == target:
        return validate_row(row, target)
    # Worded for both callers: a mixture (after its converter) and a file given straight to a stage.
    raise fail("wrong schema", None, f"a {produced} row cannot be turned into a {target} row")


def content_key(row: dict[str, Any], schema: str) -> bytes:
    """Exact-dedup key: a digest of the schema's content fields (meta and task columns excluded)."""
    content = [row[k] for k in SCHEMA_FIELDS[schema]]
    text = json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
