"""The hooks every stage's trainer gets: token counting, metric naming, throughput/MFU/ETA, non-finite stop."""

from __future__ import annotations

import math
from typing import Any

from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from minigpt.errors import TrainingError
from minigpt.metrics import mfu_percent, rename
from minigpt.stages.base import RunState, Stage


class MiniGPTTrainerMixin:
    """Put first in the bases of any transformers/TRL trainer: ``class X(MiniGPTTrainerMixin, DPOTrainer)``."""

    minigpt_state: RunState
    minigpt_stage: Stage

    def training_step(self, model, inputs, num_items_in_batch=None):
        tokens, samples = self.minigpt_stage.count_batch(inputs)
        self.minigpt_state.throughput.add(tokens, samples)
        self.state.num_input_tokens_seen += tokens
        return super().training_step(model, inputs, num_items_in_batch)


def attach(trainer: Trainer, stage: Stage, state: RunState) -> Trainer:
    trainer.minigpt_state = state
    trainer.minigpt_stage = stage
    return trainer


class MetricsCallback(TrainerCallback):
    """Turns each transformers/TRL log call into DESIGN.md §5 metrics and sends them to the run log."""

    def __init__(self, state: RunState, trainer_ref: list):
        self.state = state
        self.trainer_ref = trainer_ref  # filled after the trainer exists (callbacks are built first)
        self.last_eval_step: int | None = None
        self.last_eval: dict[str, float] = {}

    def _global(self, value: float) -> float:
        trainer = self.trainer_ref[0] if self.trainer_ref else None
        if trainer is None or trainer.accelerator.num_processes == 1:
            return value
        import torch

        tensor = torch.tensor([value], device=trainer.accelerator.device, dtype=torch.float64)
        return float(trainer.accelerator.reduce(tensor, reduction="sum").item())

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        if not logs:
            return
        metrics = rename(logs, self.state.renames)
        metrics.pop("train/epoch", None)
        for key in ("train/loss", "train/grad_norm"):
            value = metrics.get(key)
            if isinstance(value, float) and not math.isfinite(value):
                raise TrainingError(
                    f"{key} is {value} at step {state.global_step}: training stopped. The newest checkpoint "
                    "before this step is intact; lower train.lr, check the data, or resume from it."
                )
        if "train/loss" in metrics:
            window = self.state.throughput.window(state.global_step, state.max_steps)
            for key in ("train/tokens_per_second", "train/samples_per_second"):
                window[key] = self._global(window[key])
            metrics.update(window)
            metrics["train/num_tokens"] = int(self._global(float(state.num_input_tokens_seen)))
            metrics.update(self.state.pop_means("train/"))
            if self.state.flops_per_token and self.state.peak_flops:
                metrics["train/mfu_percent"] = mfu_percent(
                    metrics["train/tokens_per_second"],
                    self.state.flops_per_token,
                    self.state.peak_flops,
                    self.state.n_devices,
                )
        if "eval/loss" in metrics:
            metrics["eval/ppl"] = math.exp(min(metrics["eval/loss"], 50.0))
        if any(key.startswith("eval/") for key in metrics):
            metrics.update(self.state.pop_means("eval/"))
            self.last_eval_step = state.global_step
            self.last_eval = {k: v for k, v in metrics.items() if k.startswith("eval/")}
        if state.epoch is not None:
            metrics["train/epoch"] = state.epoch
        metrics["train/global_step"] = state.global_step
        if state.is_world_process_zero:
            self.state.log.log(metrics, state.global_step)

    def on_evaluate(self, args, state, control, **kwargs):
        self.state.throughput.reset_clock(state.global_step)

    def on_save(self, args, state, control, **kwargs):
        self.state.throughput.reset_clock(state.global_step)


class _BarOnly(ProgressCallback):
    """transformers' progress bar without its raw-dict log lines (the run log prints formatted ones)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return None


def quiet_progress(trainer: Trainer) -> None:
    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(_BarOnly())
