"""Fixed prompts answered greedily by a model folder; the report shows every stage's answer to each prompt
side by side, so what training changed can be read, not only scored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from minigpt.tasks.samples.samples_settings import SamplesEvalArgs


def evaluate(model_dir: str | Path, args: SamplesEvalArgs) -> dict[str, Any]:
    from minigpt.tasks.batch_generation import (
        greedy_completions,
        is_chat_model,
        load_for_generation,
        prompt_texts,
    )

    model, tokenizer = load_for_generation(model_dir, args.trust_remote_code)
    chat = is_chat_model(model_dir, tokenizer, args.chat_template)
    texts = prompt_texts(tokenizer, args.prompts, chat, args.system if chat else None)
    completions = greedy_completions(
        model, tokenizer, texts, chat=chat, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens
    )
    samples = [{"prompt": p, "completion": c} for p, c in zip(args.prompts, completions, strict=True)]
    return {"samples": samples, "settings": {**args.model_dump(mode="json"), "chat_template": chat}}


def headline(result: dict[str, Any]) -> dict[str, float]:
    return {}  # text to read, no score


def describe(result: dict[str, Any]) -> str:
    lines = []
    for s in result.get("samples") or []:
        lines += [f"**Prompt:** {s['prompt']}", "", _quoted(s["completion"]), ""]
    return "\n".join(lines)


def report_section(results: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Per prompt, a table of every stage's completion (greedy, so a rebuilt report shows the same text)."""
    prompts: list[str] = []
    answers: dict[tuple[str, str], str] = {}
    for stage, result in results:
        for s in result.get("samples") or []:
            if s["prompt"] not in prompts:
                prompts.append(s["prompt"])
            answers[(stage, s["prompt"])] = s["completion"]
    lines = ["Greedy completions of fixed prompts, after each stage.", ""]
    for prompt in prompts:
        lines += [f"**Prompt:** {_inline(prompt)}", "", "| stage | completion |", "|---|---|"]
        for stage, _ in results:
            text = answers.get((stage, prompt))
            lines.append(f"| {stage} | {_inline(text) if text is not None else '—'} |")
        lines.append("")
    return lines


def _inline(text: str, width: int = 400) -> str:
    """One table cell: newlines shown as ⏎, long text cut, pipes escaped."""
    text = text.strip().replace("\r", "").replace("\n", " ⏎ ")
    text = text if len(text) <= width else text[: width - 1] + "…"
    return (text or "(empty)").replace("|", "\\|")


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}" for line in (text.strip() or "(empty)").splitlines())
