"""Golden trajectories: the first optimizer steps of every registered stage on the SMALL tiny model, pinned.

Each stage trains ``STEPS`` steps from a seeded random init on seeded synthetic data; the logged losses, gradient
norms and (for RL) rewards of every step must equal ``trajectories.json`` within rtol 1e-4. A refactoring that
changes no behaviour keeps them; one that changes a loss, a data order, a mask or a sampling stream does not.

Regenerate only after checking that a change of numbers is intended (a version upgrade of torch/transformers/trl
may move them too; the file records the versions it was made with):

    MINIGPT_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/golden -q
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from support import SMALL, copy_pairs, write_jsonl

from minigpt.metrics import read_metrics
from minigpt.registry import STAGES
from minigpt.runner import run_stage
from minigpt.stages.stage_config import StageConfig

GOLDEN = Path(__file__).with_name("trajectories.json")
UPDATE = os.environ.get("MINIGPT_UPDATE_GOLDEN") == "1"
STEPS = 3
RTOL = 1e-4
# Metrics pinned where a stage logs them (per optimizer step).
PINNED = (
    "train/loss",
    "train/grad_norm",
    "train/reward",
    "train/actor_loss",
    "train/critic_loss",
    "train/kl",
    "rewards/margins",
)


def digit_share(completions, **kwargs):
    """Share of a completion's characters that are digits: a dense, deterministic reward."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def _sentences(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    subjects = ["the cat", "the dog", "a bird", "a fish"]
    places = ["on the mat", "under the tree", "near the pond"]
    return [{"text": f"{rng.choice(subjects)} sat {rng.choice(places)}."} for _ in range(n)]


def _conversations(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        rows.append(
            {
                "conversations": [
                    {"role": "user", "content": f"What is {a} plus {b}?"},
                    {"role": "assistant", "content": f"<think>{a}+{b}</think>{a} plus {b} is {a + b}."},
                ]
            }
        )
    return rows


def _prompts(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"prompt": [{"role": "user", "content": f"Write digits like {rng.randint(0, 99)}"}]} for _ in range(n)
    ]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_tokenizer_dir) -> dict:
    root = tmp_path_factory.mktemp("golden")
    files = {
        "text": write_jsonl(root / "text.jsonl", _sentences(200, 1)),
        "conversations": write_jsonl(root / "conv.jsonl", _conversations(100, 2)),
        "preference": write_jsonl(root / "pairs.jsonl", copy_pairs(64, 3)),
        "prompt_only": write_jsonl(root / "prompts.jsonl", _prompts(32, 4)),
    }
    return {"root": root, "tok": tiny_tokenizer_dir, "files": files}


# Per stage: its data file and its own fields; distillation reads the sft stage's output as its teacher.
SETUPS = {
    "pretrain": ("text", {}),
    "midtrain": ("conversations", {}),  # rendered with the chat template, loss on every token
    "sft": ("conversations", {}),
    "distill": ("conversations", {"teacher": "@sft"}),
    "reasoning_distill": ("conversations", {"tag_loss_weight": 2.0, "tags": ["<think>", "</think>"]}),
    "dpo": ("preference", {}),
    "reward": ("preference", {}),
    "grpo": ("prompt_only", {"num_generations": 4, "max_completion_length": 8}),
    "rloo": ("prompt_only", {"num_generations": 4, "max_completion_length": 8}),
    "ppo": ("prompt_only", {"max_completion_length": 8}),
    "spo": ("prompt_only", {"max_completion_length": 8}),
}
RL = {"grpo", "rloo", "ppo", "spo"}


def _config(stage: str, inputs: dict) -> StageConfig:
    schema, algo = SETUPS[stage]
    algo = dict(algo)
    if algo.get("teacher") == "@sft":
        algo["teacher"] = str(inputs["root"] / "sft")
    if stage in RL:
        algo["rewards"] = [{"name": f"{__name__}:digit_share"}]
    return StageConfig.model_validate(
        {
            "stage": stage,
            "seed": 7,
            "output_dir": str(inputs["root"] / stage),
            "model": {"init": "tiny", "tokenizer": str(inputs["tok"]), "overrides": SMALL},
            "data": {"train": [str(inputs["files"][schema])], "max_length": 48},
            "train": {
                "max_steps": STEPS,
                "batch_size": 8,
                "lr": 1e-3,
                "warmup_steps": 0,
                "log_interval": 1,
                "eval_interval": 0,
            },
            "algo": algo,
        }
    )


def _trajectory(out: Path) -> dict[str, list[float]]:
    records = [r for r in read_metrics(out / "metrics.jsonl") if "step" in r]
    series: dict[str, dict[int, float]] = {}
    for record in records:
        for key in PINNED:
            if isinstance(record.get(key), int | float):
                series.setdefault(key, {})[record["step"]] = float(record[key])
    return {key: [by_step[s] for s in sorted(by_step)] for key, by_step in series.items()}


def _versions() -> dict[str, str]:
    import torch
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}


def test_every_registered_stage_has_a_golden_setup():
    assert set(SETUPS) == set(STAGES.names())


@pytest.fixture(scope="module")
def trajectories(inputs) -> dict[str, dict[str, list[float]]]:
    got = {}
    for stage in SETUPS:  # sft before distill: its output is distill's teacher
        cfg = _config(stage, inputs)
        run_stage(cfg, console=False)
        got[stage] = _trajectory(Path(cfg.output_dir))
    if UPDATE:
        GOLDEN.write_text(
            json.dumps({"versions": _versions(), "steps": STEPS, "stages": got}, indent=1) + "\n",
            encoding="utf-8",
        )
    return got


@pytest.mark.parametrize("stage", list(SETUPS))
def test_first_steps_match_the_golden_trajectory(stage, trajectories):
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    want, got = golden["stages"][stage], trajectories[stage]
    assert "train/loss" in want or "train/reward" in want  # the file pins something for every stage
    assert set(got) == set(want), f"{stage}: logged {sorted(got)}, golden {sorted(want)}"
    for key, values in want.items():
        assert len(got[key]) == len(values) == STEPS, (stage, key)
        assert got[key] == pytest.approx(values, rel=RTOL, abs=1e-7), (
            f"{stage} {key} moved from the golden trajectory (made with {golden['versions']}); "
            "if intended, regenerate: MINIGPT_UPDATE_GOLDEN=1 pytest tests/golden"
        )
