"""Shared pieces of the reliability tests: a tiny stage config, config files, output-folder listings."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

# Two layers of 64: a step takes milliseconds, so the tests spend their time on what they check.
SMALL = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
}


def stage_dict(
    out: Path, tok_dir: Path, train_file: Path, stage: str = "sft", data: dict | None = None, **train: Any
) -> dict[str, Any]:
    """A complete stage config as a plain dict (write it with write_yaml or validate it)."""
    base_train = {"max_steps": 8, "batch_size": 4, "lr": 3e-3, "log_interval": 1, "warmup_steps": 0}
    base_train.update(train)
    return {
        "stage": stage,
        "output_dir": str(out),
        "model": {"init": "tiny", "tokenizer": str(tok_dir), "overrides": dict(SMALL)},
        "data": {"train": [str(train_file)], "max_length": 48, **(data or {})},
        "train": base_train,
    }


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def files_under(folder: Path) -> list[str]:
    """Every file (not folder) under ``folder``, relative, sorted; [] when the folder does not exist."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def subprocess_env(**extra: str) -> dict[str, str]:
    """Offline, single-threaded (the machine is shared), and able to import the tests folder."""
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": os.pathsep.join(
                [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")]
            ),
        }
    )
    env.update(extra)
    return env


PYTHON = sys.executable
