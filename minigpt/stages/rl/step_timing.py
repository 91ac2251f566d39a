"""Seconds per optimizer step spent generating and updating (``train/generation_seconds``,
``train/update_seconds``), for every RL stage."""

from __future__ import annotations

import time

from transformers import TrainerCallback

from minigpt.stages.stage import RunState


class StepTimer(TrainerCallback):
    """Per optimizer step: seconds spent generating (rollouts: sampling, rewards, old/ref log-probs) and the
    rest of the step (forward/backward over the micro-batches and the optimizer step). Evaluation and
    checkpointing run after ``on_step_end`` and are not counted."""

    def __init__(self, state: RunState):
        self.state = state
        self.generation = 0.0
        self._start: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()
        self.generation = 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is None:
            return
        total = time.perf_counter() - self._start
        self.state.accumulate("train/generation_seconds", self.generation)
        self.state.accumulate("train/update_seconds", max(total - self.generation, 0.0))
        self._start = None
