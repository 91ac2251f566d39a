"""What a hooked trainer logs: each transformers/TRL log call as the project's metrics (docs/design.md §5) in
the run log and its trackers, and a progress bar without transformers' own printed dicts."""

from __future__ import annotations

import math
from typing import Any

from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from minigpt.distributed import merge_sums, sum_over_processes
from minigpt.errors import TrainingError
from minigpt.metrics import mfu_percent, rename


class MetricsCallback(TrainerCallback):
    """Turns each transformers/TRL log call into docs/design.md §5 metrics and sends them to the run log."""

    def __init__(self, trainer: Any):
        # ``trainer``: the hooked trainer that builds this callback (trainer_hooks.MiniGPTTrainerMixin);
        # not imported here, which would make the two modules import each other.
        self.trainer = trainer
        self.state = trainer.minigpt_state
        self.last_eval_step: int | None = None
        self.last_eval: dict[str, float] = {}

    def _reducer(self):
        """Sums per-process numbers over all processes (None in a single process: nothing to add)."""
        if self.trainer.accelerator.num_processes == 1:
            return None
        device = self.trainer.accelerator.device
        return lambda values: sum_over_processes(values, device)

    def _merge(self):
        """Combines per-process (sum, weight) pairs of averaged metrics (None in a single process)."""
        return merge_sums if self._reducer() is not None else None

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        if not logs:
            return
        metrics = rename(logs, self.state.renames)
        metrics.pop("train/epoch", None)
        # A backstop: MiniGPTTrainerMixin already stops (or skips) a bad step before the optimizer applies
        # it; this catches a trainer whose loop bypasses that hook.
        for key in ("train/loss", "train/grad_norm"):
            value = metrics.get(key)
            if isinstance(value, float) and not math.isfinite(value):
                raise TrainingError(
                    f"{key} is {value} at step {state.global_step}: training stopped. The newest checkpoint "
                    "before this step is intact; lower train.lr, check the data, or resume from it."
                )
        if "train/loss" in metrics and self.trainer.minigpt_stage.ctx.cfg.train.max_bad_steps:
            metrics["train/skipped_steps"] = self.trainer.minigpt_skipped_steps
        if "train/loss" in metrics:
            # Both are collectives: transformers calls on_log on every process with the same logs.
            metrics.update(self.state.throughput.window(state.global_step, state.max_steps, self._reducer()))
            metrics["train/num_tokens"] = self.trainer.minigpt_sync_tokens()
            metrics.update(self.state.pop_means("train/", self._merge()))
            if self.state.flops_per_token and self.state.peak_flops:
                metrics["train/mfu_percent"] = mfu_percent(
                    metrics["train/tokens_per_second"],
                    self.state.flops_per_token,
                    self.state.peak_flops,
                    self.state.n_devices,
                )
        if "eval/loss" in metrics and self.state.eval_loss_is_token_nll:
            metrics["eval/ppl"] = math.exp(min(metrics["eval/loss"], 50.0))
        if any(key.startswith("eval/") for key in metrics):
            metrics.update(self.state.pop_means("eval/", self._merge()))
            self.last_eval_step = state.global_step
            self.last_eval = {k: v for k, v in metrics.items() if k.startswith("eval/")}
        if state.epoch is not None:
            metrics["train/epoch"] = state.epoch
        metrics["train/global_step"] = state.global_step
        if state.is_world_process_zero:
            self.state.log.log(metrics, state.global_step)

    def on_train_begin(self, args, state, control, **kwargs):
        self.state.throughput.start(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        # transformers logs, evaluates and saves after this hook: the evaluation and the save (below) are
        # then left out of the throughput window.
        self.state.throughput.mark()

    def on_evaluate(self, args, state, control, **kwargs):
        self.state.throughput.exclude_since_mark()

    def on_save(self, args, state, control, **kwargs):
        self.state.throughput.exclude_since_mark()


class _BarOnly(ProgressCallback):
    """transformers' progress bar without its raw-dict log lines (the run log prints formatted ones)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return None


def quiet_progress(trainer: Trainer) -> None:
    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(_BarOnly())
