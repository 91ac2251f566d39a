"""Generation settings every RL stage shares: the static KV cache and whether its decoding step is compiled."""

from __future__ import annotations

from typing import Any

from minigpt.stages.rl.rl_params import SamplingParams


def static_cache_kwargs(params: SamplingParams) -> dict[str, Any]:
    """``GenerationConfig`` keyword arguments for ``algo.cache_implementation`` / ``compile_generation``
    (none for the dynamic cache, so transformers' defaults stay as they are)."""
    if params.cache_implementation != "static":
        return {}
    kwargs: dict[str, Any] = {
        "cache_implementation": "static",
        "disable_compile": not params.compile_generation,
    }
    if params.max_prompt_length is not None:
        # One cache size for every step (longer prompts were dropped): a wider batch of prompts would
        # otherwise reallocate the cache and recompile the decoding step (measured on CPU with a forced
        # compile: a second graph, then a dynamic-shape one).
        kwargs["max_cache_len"] = params.max_prompt_length + params.max_completion_length
    return kwargs


def apply_generation_compile(trainer: Any, params: SamplingParams) -> None:
    """TRL builds its ``GenerationConfig`` with ``disable_compile=True`` and refuses the key in
    ``generation_kwargs`` (a duplicate keyword): with a static cache, set it on the built config instead."""
    cache = static_cache_kwargs(params)
    if not cache:
        return
    config = getattr(trainer, "generation_config", None)
    if config is None:
        raise RuntimeError(f"{type(trainer).__name__} has no generation_config (TRL version change?)")
    config.disable_compile = cache["disable_compile"]
