"""``model:`` of a stage config: what to start from (preset, folder or hub id) and how to load it. Kept apart
from ``minigpt.models.loading`` so that validating a config does not import torch."""

from __future__ import annotations

from typing import Any, Literal

from minigpt.typed_config import Strict


class ModelConfig(Strict):
    init: str
    """A preset name (random init), a local HF model folder, or a hub id (needs a network)."""
    tokenizer: str | None = None
    """Tokenizer folder or hub id; defaults to the model folder. Required for a preset."""
    overrides: dict[str, Any] = {}
    """HF config fields to override (e.g. num_hidden_layers); with a preset, also vocab_size."""
    revision: str | None = None
    trust_remote_code: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2", "flash_attention_3"] = "auto"
