"""Helpers shared by test modules (importable as ``support``: pytest's ``pythonpath`` includes tests/)."""

import json
from pathlib import Path

from transformers import TrainerCallback

# A 2-layer, 64-wide model: seconds per test on a CPU.
SMALL = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


class InterruptAt(TrainerCallback):
    """Simulates Ctrl-C at the end of a given optimizer step."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt
