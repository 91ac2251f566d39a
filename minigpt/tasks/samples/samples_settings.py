"""The switches of the samples task (torch-free): fixed prompts every stage answers greedily."""

from __future__ import annotations

from pydantic import Field

from minigpt.typed_config import Strict

DEFAULT_PROMPTS = (
    "What is 12 plus 30?",
    "Write one sentence about the sea.",
    "Name three colours.",
)


class SamplesEvalArgs(Strict):
    prompts: list[str] = Field(list(DEFAULT_PROMPTS), min_length=1)
    """The prompts: user turns for a chat model, texts to continue for a base model."""
    system: str | None = None
    """A system turn before each prompt (chat models only)."""
    chat_template: bool | None = None
    """Through the chat template; default: when the folder is a chat model (not pretrain / midtrain)."""
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(16, ge=1)
    trust_remote_code: bool = False
