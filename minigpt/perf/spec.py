"""The workloads and their two sizes.

``real`` is the shape docs/design.md §7 measured on an H100 (and the targets refer to); ``tiny`` is the ``tiny``
preset cut to two layers with short sequences and a couple of steps, so that every workload runs on a CPU
in seconds: a smoke test of the harness, not a performance figure.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from typing import Any

from minigpt.errors import ConfigError

WORKLOADS = ("pretrain-26m", "pretrain-100m", "sft-packed", "grpo-step", "decode")
SIZES = ("tiny", "real")
_TINY_MODEL: dict[str, Any] = {"num_hidden_layers": 2}


@dataclass(frozen=True)
class LMShape:
    preset: str
    seq: int
    batch: int
    warmup: int
    steps: int
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps


@dataclass(frozen=True)
class GRPOShape:
    preset: str
    prompts: int
    """Prompts per optimizer step."""
    generations: int
    """Completions per prompt."""
    prompt_words: int
    completion: int
    """max_completion_length."""
    warmup: int
    steps: int
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps


@dataclass(frozen=True)
class DecodeShape:
    preset: str
    sequences: tuple[int, ...]
    prompt_len: int
    new_tokens: int
    warmup: int
    """Untimed ``generate`` calls per batch size."""
    steps: int
    """Timed ``generate`` calls per batch size."""
    overrides: dict[str, Any] = field(default_factory=dict)


Shape = LMShape | GRPOShape | DecodeShape

_REAL: dict[str, Shape] = {
    "pretrain-26m": LMShape("minimind-26m", seq=512, batch=64, warmup=5, steps=20),
    "pretrain-100m": LMShape("base-100m", seq=1024, batch=32, warmup=5, steps=20),
    # The 26M shape: packed SFT against pretraining of the same model at the same sequence and batch.
    "sft-packed": LMShape("minimind-26m", seq=512, batch=64, warmup=5, steps=20),
    "grpo-step": GRPOShape(
        "minimind-26m", prompts=8, generations=8, prompt_words=32, completion=256, warmup=1, steps=3
    ),
    "decode": DecodeShape(
        "minimind-26m", sequences=(64, 512), prompt_len=32, new_tokens=256, warmup=1, steps=2
    ),
}

_TINY: dict[str, Shape] = {
    "pretrain-26m": LMShape("tiny", seq=64, batch=4, warmup=2, steps=5, overrides=_TINY_MODEL),
    "pretrain-100m": LMShape("tiny", seq=128, batch=2, warmup=2, steps=5, overrides=_TINY_MODEL),
    "sft-packed": LMShape("tiny", seq=64, batch=4, warmup=2, steps=5, overrides=_TINY_MODEL),
    # Four timed steps of 16-token completions (~0.4 s in all): with two steps of 8 tokens (80 ms) a single
    # scheduler stall on a shared CPU decided the ratio.
    "grpo-step": GRPOShape(
        "tiny",
        prompts=2,
        generations=4,
        prompt_words=8,
        completion=16,
        warmup=1,
        steps=4,
        overrides=_TINY_MODEL,
    ),
    "decode": DecodeShape(
        "tiny", sequences=(4, 16), prompt_len=8, new_tokens=8, warmup=1, steps=3, overrides=_TINY_MODEL
    ),
}


def parse_workloads(text: str | None) -> list[str]:
    """``a,b`` → validated names in the order given; None or "all" → every workload."""
    if not text or text.strip() == "all":
        return list(WORKLOADS)
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if name not in WORKLOADS:
            close = difflib.get_close_matches(name, WORKLOADS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown workload '{name}'.{hint} Workloads: {', '.join(WORKLOADS)}")
    return list(dict.fromkeys(names))


def _model_label(preset: str, overrides: dict[str, Any]) -> str:
    """``L<layers> d<hidden> v<vocab>`` of the model the preset and overrides build."""
    from minigpt.models.presets import preset_config

    config = preset_config(preset, overrides)
    return f"L{config['num_hidden_layers']} d{config['hidden_size']} v{config['vocab_size']}"


def shape_label(workload: str, shape: Shape) -> str:
    """The name a row is printed under: the kind of workload and the model and sizes it really ran (layers,
    hidden size, vocabulary, then sequence and batch, or the GRPO / decode sizes), so that a tiny run is never
    shown under a real shape's name. The workload id (``pretrain-26m``) names the docs/design.md §7 shape it
    stands for at ``--size real`` and is what ``--workloads`` selects and the JSON rows carry."""
    model = _model_label(shape.preset, shape.overrides)
    if isinstance(shape, LMShape):
        kind = "pretrain" if workload.startswith("pretrain") else workload
        return f"{kind} {model} seq{shape.seq} b{shape.batch}"
    if isinstance(shape, GRPOShape):
        return (
            f"{workload} {model} {shape.prompts}px{shape.generations}g "
            f"prompt{shape.prompt_words} compl{shape.completion}"
        )
    return f"{workload} {model} prompt{shape.prompt_len} new{shape.new_tokens}"


def shape_for(workload: str, size: str, steps: int | None = None, warmup: int | None = None) -> Shape:
    if size not in SIZES:
        raise ConfigError(f"unknown size '{size}': use one of {', '.join(SIZES)}")
    shape = (_REAL if size == "real" else _TINY)[workload]
    changes: dict[str, int] = {}
    if steps is not None:
        changes["steps"] = steps
    if warmup is not None:
        changes["warmup"] = warmup
    return replace(shape, **changes) if changes else shape
