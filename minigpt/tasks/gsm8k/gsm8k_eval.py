"""GSM8K-style evaluation: each question answered greedily (batched), the final number of the answer read
with the project's answer parser (the ``gsm8k_answer`` reward's rule: :func:`extract_final_number`) and
compared with the row's answer (:func:`numbers_match`). The score is the share of rows answered right."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from minigpt.errors import ConfigError
from minigpt.rewards.general import extract_final_number, numbers_match
from minigpt.tasks.gsm8k.gsm8k_settings import SAMPLE_DATA, GSM8KEvalArgs


def read_rows(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The ``question`` / ``answer`` rows of a JSONL file; a bad line is refused naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: GSM8K data file not found")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{path}:{number}: not a JSON object: {exc}") from None
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise ConfigError(f"{path}:{number}: a row needs a 'question' string")
        if gold_number(row.get("answer")) is None:
            raise ConfigError(f"{path}:{number}: 'answer' must be a number or text ending in '#### N'")
        rows.append(row)
        if limit is not None and len(rows) == limit:
            break
    if not rows:
        raise ConfigError(f"{path}: no rows")
    return rows


def gold_number(answer: Any) -> float | None:
    """The reference number of a row: a number as it is, a text by the same rule as a completion."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int | float):
        return float(answer)
    return extract_final_number(answer) if isinstance(answer, str) else None


def score(completions: list[str], rows: list[dict[str, Any]], failures: int = 5) -> dict[str, Any]:
    """Exact match of each completion's final number with its row's answer; the first ``failures`` wrong
    ones are kept (question, gold, predicted, completion)."""
    correct, wrong, unparsed = 0, [], 0
    for row, text in zip(rows, completions, strict=True):
        predicted, gold = extract_final_number(text), gold_number(row["answer"])
        if numbers_match(predicted, gold):
            correct += 1
            continue
        unparsed += predicted is None
        if len(wrong) < failures:
            wrong.append({"question": row["question"], "gold": gold, "predicted": predicted, "text": text})
    n = len(rows)
    return {
        "n": n,
        "correct": correct,
        "exact_match": correct / n,
        "no_number": unparsed,
        "failure_examples": wrong,
    }


def evaluate(model_dir: str | Path, args: GSM8KEvalArgs) -> dict[str, Any]:
    from minigpt.tasks.batch_generation import (
        greedy_completions,
        is_chat_model,
        load_for_generation,
        prompt_texts,
    )

    data = Path(args.data) if args.data is not None else SAMPLE_DATA
    rows = read_rows(data, args.limit)
    model, tokenizer = load_for_generation(model_dir, args.trust_remote_code)
    chat = is_chat_model(model_dir, tokenizer, args.chat_template)
    template = args.prompt if chat else args.plain_prompt
    users = [template.replace("{question}", row["question"]) for row in rows]
    texts = prompt_texts(tokenizer, users, chat, args.system if chat else None)
    completions = greedy_completions(
        model,
        tokenizer,
        texts,
        chat=chat,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        stop=args.stop,
    )
    result = score(completions, rows, args.failures)
    result["settings"] = {**args.model_dump(mode="json"), "data": str(data), "chat_template": chat}
    return result


def headline(result: dict[str, Any]) -> dict[str, float]:
    return {"exact match": result["exact_match"]} if "exact_match" in result else {}


def describe(result: dict[str, Any]) -> str:
    lines = [
        f"Exact match: {result['correct']} of {result['n']} ({100 * result['exact_match']:.1f}%); "
        f"answers without a number: {result['no_number']}.",
    ]
    examples = result.get("failure_examples") or []
    if examples:
        lines += ["", "| question | gold | predicted | completion |", "|---|---|---|---|"]
        for e in examples:
            cells = [e["question"], _number(e["gold"]), _number(e["predicted"]), e["text"]]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    return str(int(value)) if float(value).is_integer() else str(value)


def _cell(text: str, width: int = 160) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("|", "\\|")
