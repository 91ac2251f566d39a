"""Prompt rows of the RL stages (grpo, rloo on TRL; ppo, spo on the on-policy loop) → a ``datasets.Dataset``:
``prompt`` as chat messages plus every task column, which reaches the reward functions by name."""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from minigpt.errors import DataError
from minigpt.rewards import RESERVED_NAMES

_ROLES = ("system", "user", "assistant")


def _prompt_messages(prompt: Any, where: str, source: str) -> list[dict[str, str]]:
    if isinstance(prompt, str):  # a plain-text prompt is one user turn
        prompt = [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list) or not prompt:
        raise DataError(
            f"{where}: expected a non-empty list of {{role, content}} messages", file=source, field="prompt"
        )
    out = []
    for i, msg in enumerate(prompt):
        if (
            not isinstance(msg, dict)
            or msg.get("role") not in _ROLES
            or not isinstance(msg.get("content"), str)
        ):
            raise DataError(
                f"{where}: message {i} must be {{role: system/user/assistant, content: str}}",
                file=source,
                field="prompt",
            )
        out.append({"role": msg["role"], "content": msg["content"]})  # drop extra keys: Arrow needs one shape
    return out


def prompt_dataset(
    rows: list[dict[str, Any]],
    source: str,
    tokenizer: Any,
    max_prompt_length: int | None,
    overlong: str,
    note: Any,
) -> Dataset:
    """A ``datasets.Dataset`` of ``prompt`` (messages) plus every other column of the rows, which TRL hands to
    the reward functions by name."""
    out, dropped = [], 0
    for i, row in enumerate(rows):
        where = f"row {i + 1}"
        clash = sorted(set(row) & set(RESERVED_NAMES))
        if clash:
            raise DataError(
                f"{where}: column '{clash[0]}' clashes with an argument the trainer passes to "
                "reward functions; rename it",
                file=source,
                field=clash[0],
            )
        if "prompt" not in row:
            raise DataError(
                f"{where}: missing 'prompt' (prompt_only rows: prompt + task columns)", file=source
            )
        prompt = _prompt_messages(row["prompt"], where, source)
        if max_prompt_length is not None:
            text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            if n > max_prompt_length:
                if overlong == "error":
                    raise DataError(
                        f"{where}: prompt is {n} tokens, over algo.max_prompt_length "
                        f"{max_prompt_length} (data.overlong: error)",
                        file=source,
                        field="prompt",
                    )
                dropped += 1  # a chat prompt cannot be cut without breaking its template: drop it
                continue
        out.append({**row, "prompt": prompt})
    if dropped:
        note(f"{source}: {dropped} prompts over {max_prompt_length} tokens dropped")
    if not out:
        raise DataError("no prompts left (all over algo.max_prompt_length?)", file=source)
    try:
        return Dataset.from_list(out)
    except (TypeError, ValueError) as exc:  # pyarrow's errors subclass these
        raise DataError(f"columns must have one type across rows: {exc}", file=source) from None
