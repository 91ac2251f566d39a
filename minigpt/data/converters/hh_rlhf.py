"""Anthropic hh-rlhf: ``chosen`` and ``rejected`` are whole transcripts of '\\n\\nHuman:' / '\\n\\nAssistant:'
turns. The turns both share become the prompt (cut back to end on a Human turn); what follows is the pair."""

from __future__ import annotations

import re
from typing import Any

from minigpt.data.converters.fields import text_field
from minigpt.data.problems import fail
from minigpt.registry import CONVERTERS

_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(transcript: str, field: str) -> list[dict[str, str]]:
    """'\\n\\nHuman: a\\n\\nAssistant: b' → [{user, a}, {assistant, b}] (content stripped)."""
    text = transcript if transcript.startswith("\n\n") else "\n\n" + transcript.lstrip()
    parts = _TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise fail(
            "malformed transcript", field, "expected '\\n\\nHuman: ...' and '\\n\\nAssistant: ...' turns"
        )
    return [{"role": _ROLE[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


@CONVERTERS.register("hh_rlhf")
def hh_rlhf(row: dict[str, Any], system: str | None = None) -> dict[str, Any]:
    chosen = parse_transcript(text_field(row, "chosen"), "chosen")
    rejected = parse_transcript(text_field(row, "rejected"), "rejected")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    while shared and chosen[shared - 1]["role"] != "user":  # the prompt ends where the model answers
        shared -= 1
    if shared == 0:
        raise fail("malformed transcript", "chosen", "chosen and rejected share no opening Human turn")
    prompt = ([{"role": "system", "content": system}] if system else []) + chosen[:shared]
    return {"prompt": prompt, "chosen": chosen[shared:], "rejected": rejected[shared:]}
