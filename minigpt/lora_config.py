"""``lora:`` of a stage config. Kept apart from ``minigpt.lora`` (peft, torch) so that validating a config does
not import torch."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from minigpt.typed_config import Strict


class LoRAConfig(Strict):
    """``lora:`` in a stage config; present (even as ``lora: {}``) means on."""

    r: int = Field(16, gt=0)
    """Rank of the update B·A."""
    alpha: float = Field(32.0, gt=0)
    """The update is scaled by alpha / r."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the adapter's input (0: deterministic, the usual choice for small models)."""
    target_modules: Literal["all-linear"] | list[str] = "all-linear"
    """Module names to adapt; ``all-linear``: every linear layer but the output head (for the Qwen3 family:
    q/k/v/o_proj and gate/up/down_proj)."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases are trained as well."""
    modules_to_save: list[str] = []
    """Modules trained in full next to the adapter (saved with it); the reward stage's ``score`` head always is."""
    merge: bool = True
    """Merge the adapter into the base weights at the end, so the stage folder is a plain HF model. ``false``: the
    stage folder is the adapter alone (loads with peft installed; needs model.init to be a folder or hub id)."""
    qlora: bool = False
    """Keep the frozen base in 4-bit NF4 (bitsandbytes, CUDA GPUs only)."""

    @field_validator("target_modules")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("give at least one module name, or 'all-linear'")
        return value
