"""Fixtures for the data tests: a tiny local tokenizer (byte-level BPE with the ChatML template) and writers for
sample files and mixture configs. Everything is offline and seeded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

CORPUS = [
    "The cat sat on the mat. The dog ran in the park.",
    "What is two plus three? Two plus three is five.",
    "Write a function that adds two numbers and returns the sum.",
    "Human: hello there. Assistant: hello, how can I help you today?",
]


def build_tokenizer(out_dir: Path, corpus: list[str] = CORPUS, vocab_size: int = 300) -> Path:
    """A tiny byte-level BPE tokenizer (the tokenizers library, wrapped in PreTrainedTokenizerFast with the
    project's ChatML chat template) trained on a few strings and saved to ``out_dir``."""
    from minigpt.models.tokenizer import save_tokenizer, train_tokenizer

    save_tokenizer(train_tokenizer(corpus, vocab_size, min_frequency=1), out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def other_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same template, different vocabulary (trained on other text)."""
    return build_tokenizer(
        tmp_path_factory.mktemp("tok2"), ["zebra quartz jumps", "völlig andere Wörter"], 280
    )


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """Rows may be dicts (serialised) or raw strings (written as they are, for malformed lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def alpaca_rows(n: int, start: int = 0) -> list[dict[str, str]]:
    return [
        {"instruction": f"Say the number {i}.", "input": "" if i % 2 else f"context {i}", "output": f"{i}"}
        for i in range(start, start + n)
    ]


@pytest.fixture
def mixture(tmp_path: Path) -> Callable[..., Path]:
    """Write a mixture YAML into tmp_path; sources' paths are relative to it."""

    def make(sources: list[dict[str, Any]], name: str = "mix", **fields: Any) -> Path:
        data = {
            "name": name,
            "stage": fields.pop("stage", "sft"),
            "schema": fields.pop("schema", "conversations"),
        }
        data.update(fields)
        data["sources"] = sources
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    return make
