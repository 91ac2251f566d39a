"""The task evaluation during training (``task_eval``): the registered task run on the model being trained,
at the start, every ``train.eval_interval`` steps and at the end, logged as ``eval/task/<metric>``.

transformers' own evaluation loop computes losses over a dataset; a task evaluation generates answers and
scores them, so it is a callback of its own. It runs on the main process only (other processes wait at the
next step's collectives) and leaves training untouched: eval mode and no gradients while it runs, training
mode restored, the torch RNG state restored (a sampling task cannot shift the training run's randomness), and
its time left out of the throughput window so ``train/tokens_per_second`` does not count evaluation time.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from transformers import TrainerCallback

from minigpt.errors import ConfigError
from minigpt.stages.stage import RunState
from minigpt.tasks.eval_spec import EvaluationSpec

PREFIX = "eval/task/"


class TaskEvalCallback(TrainerCallback):
    def __init__(self, spec: EvaluationSpec, tokenizer: Any, run_state: RunState, interval: int):
        from minigpt.registry import EVAL_TASKS

        self.spec, self.run_state, self.interval = spec, run_state, interval
        self.evaluate_fn = EVAL_TASKS.get(spec.task).function("during_training")
        # A copy: an evaluation pads on the left and may set a pad token; the training collators keep theirs.
        self.tokenizer = copy.deepcopy(tokenizer)
        self.seconds = 0.0
        self.evaluations = 0
        self.last_step: int | None = None

    def summary(self, train_seconds: float) -> dict[str, Any]:
        """What the evaluations cost: their count, seconds, and share of the stage's training time (which
        includes them)."""
        share = self.seconds / train_seconds if train_seconds > 0 else 0.0
        return {"evaluations": self.evaluations, "seconds": round(self.seconds, 2), "share": round(share, 4)}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:  # a resumed run measured its start before it was interrupted
            self._evaluate(args, state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.interval and state.global_step % self.interval == 0:
            self._evaluate(args, state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.last_step != state.global_step:
            self._evaluate(args, state, model)

    def _evaluate(self, args, state, model) -> None:
        self.last_step = state.global_step
        if not state.is_world_process_zero:
            return
        if any(hasattr(p, "full_tensor") for p in model.parameters()):
            raise ConfigError(
                "task_eval: the model is sharded (FSDP) and cannot generate on one process; remove the "
                "evaluation's during_training (the evaluation after the stage still runs)"
            )
        self.run_state.throughput.mark()
        start = time.perf_counter()
        was_training = model.training
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        model.eval()
        try:
            with torch.inference_mode():
                metrics = self.evaluate_fn(model, self.tokenizer, self.spec.args)
        finally:
            model.train(was_training)
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
        if not metrics:
            raise ConfigError(
                f"task_eval: the {self.spec.task} evaluation measured nothing with these switches: "
                f"{self.spec.args.model_dump()}"
            )
        seconds = time.perf_counter() - start
        self.seconds += seconds
        self.evaluations += 1
        record = {f"{PREFIX}{name}": float(value) for name, value in metrics.items()}
        record[f"{PREFIX}seconds"] = seconds
        # Samples trained on so far (RL: completions sampled): every stage's optimizer step takes
        # batch_size × grad_accum samples per process, so this survives a resume.
        record[f"{PREFIX}samples"] = float(
            state.global_step
            * args.per_device_train_batch_size
            * args.gradient_accumulation_steps
            * args.world_size
        )
        record["train/global_step"] = state.global_step
        self.run_state.log.log(record, state.global_step)
        self.run_state.throughput.exclude_since_mark()
