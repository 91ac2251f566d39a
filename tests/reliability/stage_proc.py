"""Run one stage in a child process that stalls at a chosen point, so a test can SIGKILL it right there.

    python -m tests.reliability.stage_proc CONFIG MODE MARKER [--resume]

MODE ``step:K``: stall inside the forward pass of step K+1 (after K finished steps).
MODE ``save:K``: stall while writing the checkpoint of step K, after its weights and optimizer state are on
disk and before its RNG and trainer state are (transformers' ``_save_rng_state`` is the stall point).
MARKER is created when the stall begins.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch


def _stall(marker: Path) -> None:
    marker.write_text("stalled", encoding="utf-8")
    time.sleep(600)  # the test kills us long before this ends


def main(argv: list[str]) -> int:
    config, mode, marker = argv[0], argv[1], Path(argv[2])
    resume = "--resume" in argv[3:]
    torch.set_num_threads(1)
    kind, _, step_text = mode.partition(":")
    step = int(step_text)
    if kind == "step":
        from minigpt.stages.lm.causal_lm import LMTrainer

        original = LMTrainer.compute_loss

        def compute_loss(self, model, inputs, *args, **kwargs):
            if model.training and self.state.global_step == step:
                _stall(marker)
            return original(self, model, inputs, *args, **kwargs)

        LMTrainer.compute_loss = compute_loss
    elif kind == "save":
        from transformers import Trainer

        original_rng = Trainer._save_rng_state

        def save_rng_state(self, output_dir):
            if self.state.global_step == step:
                _stall(marker)
            return original_rng(self, output_dir)

        Trainer._save_rng_state = save_rng_state
    else:
        raise SystemExit(f"unknown mode {mode}")
    from minigpt.runner import run_stage_file

    run_stage_file(config, resume=resume, console=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
