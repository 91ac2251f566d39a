"""Helpers shared by test modules (importable as ``support``: pytest's ``pythonpath`` includes tests/)."""

import json
import random
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

# DESIGN.md §5: what every training stage logs.
EVERY_STAGE_METRICS = frozenset(
    {
        "train/loss",
        "train/learning_rate",
        "train/grad_norm",
        "train/epoch",
        "train/global_step",
        "train/tokens_per_second",
        "train/samples_per_second",
        "train/steps_per_second",
        "train/num_tokens",
        "train/eta_minutes",
    }
)


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


# A tiny preference task for the DPO and reward stages.
WORDS = ["cat", "dog", "bird", "fish", "mat", "tree", "pond", "hill"]


def copy_pairs(n: int, seed: int) -> list[dict]:
    """Pairs: prompt "Say the W.", preferred "the W.", dispreferred "the O." (another word). A random-init model
    learns these preferences in a few dozen steps. Held-out rows are a fresh sample (another seed)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        w, o = rng.sample(WORDS, 2)
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Say the {w}."}],
                "chosen": [{"role": "assistant", "content": f"the {w}."}],
                "rejected": [{"role": "assistant", "content": f"the {o}."}],
                "meta": {"source": "test", "id": str(len(rows))},
            }
        )
    return rows
