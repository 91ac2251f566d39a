"""The ``algo:`` fields of the causal-LM family's stages that have any (distill, reasoning_distill); pretrain,
midtrain and sft take none. Torch-free: a config is validated without importing the stages."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from minigpt.models.tokenizer import THINK_END, THINK_START
from minigpt.typed_config import Strict


class DistillParams(Strict):
    teacher: str
    """The teacher: a model folder (e.g. an earlier stage's output) or a hub id; it must use the student's
    tokenizer."""
    temperature: float = Field(2.0, gt=0)
    """Softens both distributions in the KD term (T)."""
    alpha: float = Field(0.5, ge=0.0, le=1.0)
    """Weight of the CE on the labels; 1 − alpha goes to the KD term (alpha = 1: plain SFT)."""
    data_schema: Literal["conversations", "text"] = "conversations"
    """Rows: conversations (loss on assistant tokens) or text (loss on every token; packed only with
    ``data.packing: true``)."""


class ReasoningParams(Strict):
    tag_loss_weight: float = Field(1.0, ge=0.0)
    """Multiplies the per-token CE of the tag tokens (1: plain SFT, through SFT's own code path)."""
    tags: list[str] = [THINK_START, THINK_END]
    """Tags whose tokens are weighted; e.g. add "<answer>", "</answer>". A tag is found by its standalone token
    ids (always so for special tokens such as <think>)."""

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        if not value or any(not tag for tag in value):
            raise ValueError("give at least one non-empty tag")
        return value
