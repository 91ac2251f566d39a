"""Instruction datasets: alpaca, code_alpaca (same layout) and gsm8k (question/answer with '#### n')."""

from __future__ import annotations

import re
from typing import Any

from minigpt.data.converters.fields import text_field
from minigpt.data.problems import fail
from minigpt.data.schema import MESSAGES
from minigpt.registry import CONVERTERS

_CALCULATION = re.compile(r"<<[^<>]*>>")  # gsm8k calculator annotations such as <<48/2=24>>


def _with_system(system: str | None, turns: list[dict[str, str]]) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + turns


@CONVERTERS.register("alpaca")
def alpaca(row: dict[str, Any], system: str | None = None, input_separator: str = "\n\n") -> dict[str, Any]:
    """instruction (+ input when non-empty) → user turn; output → assistant turn. The ``text`` column
    (the pre-rendered alpaca prompt) is ignored: the chat template does that job."""
    instruction = text_field(row, "instruction", turn="user")
    extra = text_field(row, "input", required=False)
    output = text_field(row, "output", turn="assistant")
    user = f"{instruction}{input_separator}{extra}" if extra.strip() else instruction
    turns = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return {MESSAGES: _with_system(system, turns)}


@CONVERTERS.register("code_alpaca")
def code_alpaca(
    row: dict[str, Any], system: str | None = None, input_separator: str = "\n\n"
) -> dict[str, Any]:
    """CodeAlpaca-20k has the alpaca layout (instruction, input, output) without the ``text`` column."""
    return alpaca(row, system=system, input_separator=input_separator)


def final_answer(solution: str) -> str:
    """The number after the last '####', thousands separators removed ('#### 1,234' → '1234')."""
    if "####" not in solution:
        raise fail("no final answer", "answer", "expected '#### <answer>' at the end of the solution")
    answer = solution.rsplit("####", 1)[1].strip().replace(",", "")
    if not answer:
        raise fail("no final answer", "answer", "nothing after '####'")
    return answer


@CONVERTERS.register("gsm8k")
def gsm8k(row: dict[str, Any], system: str | None = None, strip_calculations: bool = False) -> dict[str, Any]:
    """question → user; the full solution → assistant; the final answer → ``answer`` column (rewards).

    Targeting prompt_only drops the assistant turn and keeps ``answer``.
    """
    question = text_field(row, "question", turn="user")
    solution = text_field(row, "answer", turn="assistant")
    answer = final_answer(solution)
    if strip_calculations:
        solution = _CALCULATION.sub("", solution)
    turns = [{"role": "user", "content": question}, {"role": "assistant", "content": solution}]
    return {MESSAGES: _with_system(system, turns), "answer": answer}
