"""The general rewards (gsm8k_answer, format, length) on hand-computed cases, with string and conversational
completions, and their registration."""

from __future__ import annotations

import pytest

from minigpt.registry import REWARDS
from minigpt.rewards.general import (
    extract_final_number,
    format_reward,
    gsm8k_answer,
    length_reward,
    length_score,
)


def chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("She has 3 apples, then 5 more. The answer is 8", 8.0),
        ("Step 1: 2 + 2 = 4\n#### 1,234", 1234.0),
        ("#### 72 apples (from 3 baskets)", 72.0),  # the first number after the marker, not the last
        ("#### 5 #### 6", 6.0),  # the last marker counts
        ("It costs $1,234,567.50.", 1234567.5),
        ("The temperature is -3 degrees", -3.0),
        ("5-3", 3.0),  # a hyphen after a digit is not a minus sign
        ("1,2,3", 3.0),  # not a thousands separator
        ("The answer is 42.", 42.0),
        ("no digits here", None),
        ("#### none", None),
    ],
)
def test_extract_final_number(text, number):
    assert extract_final_number(text) == number


def test_gsm8k_answer_matches_numerically():
    completions = ["so 1,000 in total", "#### 7.0", "it is 12", "nothing", "the answer is 0.5"]
    answers = ["1000", "Natalia sold 3 + 4 = 7 clips.\n#### 7", 13, "4", 0.5]
    assert gsm8k_answer(completions, answer=answers) == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert gsm8k_answer([chat("#### 18")], answer=["18"]) == [1.0]  # conversational completion


def test_gsm8k_answer_needs_the_column():
    with pytest.raises(ValueError, match="column 'answer'"):
        gsm8k_answer(["1"])
    with pytest.raises(ValueError, match="2 completions but 1"):
        gsm8k_answer(["1", "2"], answer=["1"])


def test_format_reward():
    completions = [
        "<think>add 3 and 4</think>\n7",  # reasoning then answer
        "  <think>\nmulti\nline\n</think> 7  ",  # whitespace around is stripped, DOTALL crosses lines
        "<think>no answer</think>",  # nothing after the block
        "7 <think>late</think> 8",  # text before the block: not a full match
        "plain answer",
    ]
    assert format_reward(completions) == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert format_reward(completions, mode="search") == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert format_reward([chat("Move: 4"), chat("move 4")], pattern=r"Move: \d") == [1.0, 0.0]


def test_length_reward_formula():
    # -min(1, max(0, |L - target| - tolerance) / target)
    assert length_score(10, target=10) == 0.0
    assert length_score(15, target=10) == -0.5
    assert length_score(5, target=10) == -0.5
    assert length_score(40, target=10) == -1.0  # floored at -1
    assert length_score(13, target=10, tolerance=2) == pytest.approx(-0.1)
    assert length_score(5, target=10, mode="max") == 0.0  # only too long is penalised
    assert length_score(12, target=10, mode="max") == pytest.approx(-0.2)
    texts = ["abcd", "ab", chat("one two three")]
    assert length_reward(texts, target=4, unit="chars") == [0.0, -0.5, -1.0]  # 13 chars
    assert length_reward(texts, target=3, unit="words") == [pytest.approx(-2 / 3), pytest.approx(-2 / 3), 0.0]
    assert length_reward(["x", "y"], target=4, completion_ids=[[1, 2, 3, 4], [1, 2]]) == [0.0, -0.5]
    with pytest.raises(ValueError, match="completion_ids"):
        length_reward(["x"], target=4)


def test_rewards_are_registered_with_arg_checks():
    assert {"gsm8k_answer", "format", "length"} <= set(REWARDS.names())
    assert REWARDS.get("format") is format_reward
    with pytest.raises(ValueError, match="unit"):
        REWARDS.get("length").validate_args({"unit": "bytes"})
    with pytest.raises(ValueError, match="positive integer"):
        REWARDS.get("length").validate_args({"target": 0})
    REWARDS.get("format").validate_args({"pattern": r"\d+", "mode": "search"})
