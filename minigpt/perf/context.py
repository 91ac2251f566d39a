"""State shared by the workloads of one ``minigpt bench`` run: device, work folder, tokenizers, fresh models,
and the call into the project's own runner."""

from __future__ import annotations

import gc
import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from minigpt.perf.measure import Device, MemoryProbe, Row, model_flops_per_token
from minigpt.perf.synth import SynthTokenizer, build_tokenizer

SEED = 42


@dataclass
class BenchContext:
    device: Device
    work_dir: Path
    compile_project: bool
    """Run the project's LM stages with ``train.compile: true`` (GPU default)."""
    project_loss: str = "plain"
    """``train.loss`` of the project's LM stages (``chunked``: the fused head + cross-entropy)."""
    quiet: bool = False
    _tokenizers: dict[int, SynthTokenizer] = field(default_factory=dict)

    def note(self, message: str) -> None:
        if not self.quiet:
            print(f"[bench] {message}", file=sys.stderr, flush=True)

    def rng(self, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng(SEED + salt)

    def probe(self) -> MemoryProbe:
        probe = MemoryProbe(self.device)
        probe.start()
        return probe

    def tokenizer(self, preset: str, overrides: dict[str, Any]) -> SynthTokenizer:
        """The synthetic tokenizer with the preset's vocabulary size (so the model has the preset's shape)."""
        from minigpt.models.presets import preset_config

        vocab = int(preset_config(preset, overrides)["vocab_size"])
        if vocab not in self._tokenizers:
            self._tokenizers[vocab] = build_tokenizer(vocab, self.work_dir / f"tokenizer-{vocab}")
        return self._tokenizers[vocab]

    def model_config(self, preset: str, overrides: dict[str, Any], tok: SynthTokenizer):
        from minigpt.models.model_config import ModelConfig

        return ModelConfig(init=preset, tokenizer=str(tok.path), overrides=overrides)

    def fresh_model(self, preset: str, overrides: dict[str, Any], tok: SynthTokenizer, tokenizer: Any):
        """The model the project's runner would build: seeded, fp32 on the CPU (the trainer moves it and
        autocasts), so every implementation of a workload starts from the same weights."""
        from transformers import set_seed

        from minigpt.models.loading import build_model

        set_seed(SEED)
        cfg = self.model_config(preset, overrides, tok)
        return build_model(cfg, tokenizer, torch.device("cpu"), dtype=torch.float32)

    def flops_per_token(self, preset: str, overrides: dict[str, Any], tok: SynthTokenizer, seq: int) -> float:
        """docs/design.md §5 FLOPs per token of the preset's model, counted on a weightless (meta) copy."""
        from minigpt.models.loading import build_model

        tokenizer = tok.load()
        with torch.device("meta"):
            model = build_model(
                self.model_config(preset, overrides, tok), tokenizer, torch.device("meta"), torch.float32
            )
        return model_flops_per_token(model, seq)

    def run_project(self, stage_cfg: dict[str, Any], callbacks: list) -> Path:
        """Run a stage through ``minigpt.runner.run_stage``, exactly as ``minigpt train`` does."""
        from minigpt.runner import run_stage
        from minigpt.stages.stage_config import StageConfig

        cfg = StageConfig.model_validate(stage_cfg)
        run_stage(cfg, overwrite=True, callbacks=callbacks, console=False)
        return Path(cfg.output_dir)

    def attempt(self, workload: str, implementation: str, run: Callable[..., Row], *args: Any) -> Row:
        """``run(*args)``, or an error row if it fails: on a GPU machine lent for minutes, one implementation
        that crashes (e.g. under torch.compile) must not lose the figures of all the others."""
        try:
            return run(*args)
        except Exception as exc:
            self.note(f"{workload}: {implementation} FAILED: {type(exc).__name__}: {exc}")
            if not self.quiet:
                traceback.print_exc(file=sys.stderr)
            self.release()
            return Row(
                workload=workload,
                implementation=implementation,
                tokens_per_second=0.0,
                tokens=0,
                seconds=0.0,
                warmup_steps=0,
                timed_steps=0,
                peak_memory_bytes=None,
                memory_kind=MemoryProbe(self.device).kind,
                mfu_note="n/a: failed",
                error=f"{type(exc).__name__}: {exc}"[:500],
            )

    def release(self) -> None:
        """Between implementations: drop compiled graphs and cached GPU memory, so one run neither inherits
        the previous one's compile cache (dynamo's recompile limit would silently fall back to eager) nor
        its allocations."""
        gc.collect()
        if self.device.kind == "cuda":
            torch._dynamo.reset()
            torch.cuda.empty_cache()


def logged_throughput(output_dir: Path, warmup: int, stop: int) -> float | None:
    """The runner's own ``train/tokens_per_second`` (metrics.jsonl), averaged over log windows that lie
    inside the timed steps: a cross-check of the harness figure, None when no window fits."""
    path = output_dir / "metrics.jsonl"
    if not path.exists():
        return None
    previous, values = 0, []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        step, value = record.get("step"), record.get("train/tokens_per_second")
        if value is None or step is None:
            continue
        if previous >= warmup and step <= stop:
            values.append(float(value))
        previous = step
    return sum(values) / len(values) if values else None
