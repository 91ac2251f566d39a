"""General rewards with TRL's reward signature: ``fn(completions, **columns) -> list[float]``.

``completions`` holds strings, or message lists (conversational prompts; the last message's content is
read). Dataset columns arrive as keyword lists of the same length (``answer`` for ``gsm8k_answer``); TRL also
passes ``prompts``, ``completion_ids`` and a few trainer hooks, which these functions ignore unless noted.
Each function returns raw values; weights between several rewards belong to the stage's config
(``algo.rewards[i].weight``), never here.

An optional ``validate_args`` attribute on a reward function checks its config ``args`` when the config is
loaded, so a bad regex or unit fails before any model is built.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from minigpt.registry import REWARDS


def completion_text(completion: Any) -> str:
    """The text of one completion: a string as is, or the content of the last message of a message list."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        return content if isinstance(content, str) else ""
    return ""


def _check_lengths(name: str, completions: Sequence[Any], **columns: Sequence[Any] | None) -> None:
    for column, values in columns.items():
        if values is None:
            raise ValueError(f"reward '{name}' needs the dataset column '{column}' (not found in the rows)")
        if len(values) != len(completions):
            raise ValueError(
                f"reward '{name}': {len(completions)} completions but {len(values)} '{column}' values"
            )


# ---------------------------------------------------------------- gsm8k_answer

# A number not glued to a preceding digit or dot (so "5-3" reads 5 and 3, not 5 and -3).
_NUMBER = re.compile(r"(?<![\d.])-?\d+(?:\.\d+)?")
# A thousands separator: a comma between a digit and exactly three digits ("1,234,567" → "1234567"),
# leaving lists such as "1,2,3" alone.
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def extract_final_number(text: str) -> float | None:
    """The final answer of a text, as a number, or None.

    Rule: thousands commas are removed first; then, if the text contains ``####`` (GSM8K's answer marker),
    the FIRST number after the LAST ``####``; otherwise the LAST number anywhere in the text. A number is an
    optional minus sign, digits, and an optional decimal part (``$1,234.50`` → 1234.5, ``42.`` → 42).
    """
    text = _THOUSANDS.sub("", text)
    if "####" in text:
        match = _NUMBER.search(text.rsplit("####", 1)[1])
        return float(match.group()) if match else None
    found = _NUMBER.findall(text)
    return float(found[-1]) if found else None


def _gold_number(answer: Any) -> float | None:
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int | float):
        return float(answer)
    if isinstance(answer, str):
        return extract_final_number(answer)
    return None


def numbers_match(predicted: float | None, gold: float | None) -> bool:
    """Equal up to 1e-6 relative (absolute below 1): ``7`` matches ``7.0``; None matches nothing."""
    if predicted is None or gold is None:
        return False
    return math.isclose(predicted, gold, rel_tol=1e-6, abs_tol=1e-6)


@REWARDS.register("gsm8k_answer")
def gsm8k_answer(
    completions: Sequence[Any], answer: Sequence[Any] | None = None, **kwargs: Any
) -> list[float]:
    """1.0 when the completion's final number (see :func:`extract_final_number`) equals the ``answer``
    column numerically, else 0.0 (also when the completion has no number).

    ``answer`` may be a number or a string; a string is read with the same rule, so both ``"72"`` and a full
    GSM8K solution ending in ``#### 72`` work.
    """
    _check_lengths("gsm8k_answer", completions, answer=answer)
    return [
        1.0 if numbers_match(extract_final_number(completion_text(c)), _gold_number(a)) else 0.0
        for c, a in zip(completions, answer, strict=True)
    ]


# ---------------------------------------------------------------- format

# A reasoning block, then a non-empty answer after it. DOTALL: both parts may span lines.
DEFAULT_FORMAT = r"<think>.*?</think>\s*\S.*"


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.DOTALL)


@REWARDS.register("format")
def format_reward(
    completions: Sequence[Any], pattern: str = DEFAULT_FORMAT, mode: str = "full", **kwargs: Any
) -> list[float]:
    """1.0 when the completion has the expected form, else 0.0.

    ``pattern`` is a Python regex compiled with DOTALL (``.`` crosses newlines). ``mode: full`` (default)
    needs the whole completion, stripped of surrounding whitespace, to match; ``mode: search`` needs a match
    anywhere. The default pattern asks for ``<think>…</think>`` followed by a non-empty answer. The RL stages
    decode completions keeping special tokens other than end-of-sequence and padding, so ``<think>`` tags
    that the tokenizer treats as special tokens still reach this check.
    """
    regex = _compiled(pattern)
    test = regex.fullmatch if mode == "full" else regex.search
    return [1.0 if test(completion_text(c).strip()) else 0.0 for c in completions]


def _validate_format(args: dict[str, Any]) -> None:
    if args.get("mode", "full") not in ("full", "search"):
        raise ValueError(f"format: mode must be 'full' or 'search', got {args['mode']!r}")
    try:
        _compiled(str(args.get("pattern", DEFAULT_FORMAT)))
    except re.error as exc:
        raise ValueError(f"format: invalid regex pattern {args.get('pattern')!r}: {exc}") from None


format_reward.validate_args = _validate_format  # type: ignore[attr-defined]


# ---------------------------------------------------------------- length

_UNITS = ("chars", "words", "tokens")


def completion_length(completion: Any, unit: str, ids: Sequence[int] | None = None) -> int:
    """Length in ``chars`` (of the text), ``words`` (whitespace-separated) or ``tokens`` (generated ids,
    counting the end-of-sequence token when the completion has one)."""
    if unit == "tokens":
        if ids is None:
            raise ValueError("length: unit 'tokens' needs completion_ids (passed by the RL trainers)")
        return len(ids)
    text = completion_text(completion)
    return len(text.split()) if unit == "words" else len(text)


def length_score(length: int, target: int, tolerance: int = 0, mode: str = "target") -> float:
    """``-min(1, max(0, d - tolerance) / target)`` with ``d = |length - target|`` (mode ``target``) or
    ``d = max(0, length - target)`` (mode ``max``: only too-long completions are penalised)."""
    distance = abs(length - target) if mode == "target" else max(0, length - target)
    return -min(1.0, max(0, distance - tolerance) / target)


@REWARDS.register("length")
def length_reward(
    completions: Sequence[Any],
    target: int = 200,
    unit: str = "tokens",
    tolerance: int = 0,
    mode: str = "target",
    completion_ids: Sequence[Sequence[int]] | None = None,
    **kwargs: Any,
) -> list[float]:
    """A length penalty in [-1, 0]: 0 within ``tolerance`` of ``target``, falling linearly to -1 at a
    distance of ``target + tolerance`` (formula in :func:`length_score`). ``mode: max`` penalises only
    completions longer than ``target``. Units: ``tokens`` (default), ``words`` or ``chars``."""
    ids = completion_ids if completion_ids is not None else [None] * len(completions)
    return [
        length_score(completion_length(c, unit, i), target, tolerance, mode)
        for c, i in zip(completions, ids, strict=True)
    ]


def _validate_length(args: dict[str, Any]) -> None:
    target, tolerance = args.get("target", 200), args.get("tolerance", 0)
    if not isinstance(target, int) or isinstance(target, bool) or target <= 0:
        raise ValueError(f"length: target must be a positive integer, got {target!r}")
    if not isinstance(tolerance, int) or isinstance(tolerance, bool) or tolerance < 0:
        raise ValueError(f"length: tolerance must be a non-negative integer, got {tolerance!r}")
    if args.get("unit", "tokens") not in _UNITS:
        raise ValueError(f"length: unit must be one of {', '.join(_UNITS)}, got {args['unit']!r}")
    if args.get("mode", "target") not in ("target", "max"):
        raise ValueError(f"length: mode must be 'target' or 'max', got {args['mode']!r}")


length_reward.validate_args = _validate_length  # type: ignore[attr-defined]
