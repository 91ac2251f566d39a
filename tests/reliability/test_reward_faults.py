"""Failed rewards in the RL stages: a reward function that raises, or returns NaN/inf/None, a non-number or
the wrong number of values, stops the step with one line naming the reward (its label) and the step, before
anything is updated, with the newest checkpoint intact; with ``train.max_bad_steps: N`` up to N such steps
are skipped (weights untouched, counted as ``train/skipped_steps``), then it stops. Checked on TRL's trainer
(grpo) and on the project's own on-policy loop (ppo, spo): both call rewards through ``NamedReward``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from support import SMALL, digit_prompts, write_jsonl
from transformers import TrainerCallback

from minigpt.cli import main
from minigpt.errors import TrainingError
from minigpt.metrics import read_metrics
from minigpt.rewards import NamedReward, RewardFault
from minigpt.runner import run_stage
from minigpt.stages.stage_config import StageConfig

from .helpers import write_yaml

N = 8  # completions per reward call in every run below (and in the unit checks)

# kind → what the reward returns for N completions, and the message it must give.
KINDS = {
    "nan_all": (lambda n: [math.nan] * n, f"returned nan for {N} of {N} completions"),
    "nan_some": (lambda n: [math.nan] * 3 + [0.5] * (n - 3), f"returned nan for 3 of {N} completions"),
    "inf": (
        lambda n: [math.inf, -math.inf] + [0.5] * (n - 2),
        f"returned inf, -inf for 2 of {N} completions",
    ),
    "none": (lambda n: [None, 1.0] * (n // 2), f"returned None for {N // 2} of {N} completions"),
    "string": (lambda n: ["good"] * n, f"returned a str ('good') for {N} of {N} completions"),
    "wrong_count": (lambda n: [0.5] * (n - 1), f"returned {N - 1} values for {N} completions"),
    "raises": (None, "raised KeyError: 'answer'"),
}


def faulty(completions, trainer_state, kind: str, steps: list[int], sizes: list[int] | None = None, **kwargs):
    """A reward that fails as ``kind`` at the given (1-based) optimizer steps, there only in calls scoring
    one of ``sizes`` completions when given (evaluation, SPO's first-sight samples), and is fine otherwise."""
    at = trainer_state.global_step + 1 in steps
    if not at or (sizes and len(completions) not in sizes):
        return [float(len(c[-1]["content"]) % 3) / 2 for c in completions]
    make = KINDS[kind][0]
    if make is None:
        raise KeyError("answer")
    return make(len(completions))


def _cfg_dict(
    tmp_path: Path, tok: Path, stage: str, kind: str, steps: list[int], algo: dict | None = None, **train
) -> dict:
    data = write_jsonl(tmp_path / "prompts.jsonl", digit_prompts(16))
    args = {"kind": kind, "steps": steps, **(algo or {}).pop("reward_args", {})}
    algo = {
        "rewards": [{"name": f"{__name__}:faulty", "args": args}],
        "max_completion_length": 4,
        **(algo or {}),
    }
    if stage == "grpo":
        algo["num_generations"] = 4  # batch_size 8: two prompts, four completions each
    base = {"max_steps": 1, "batch_size": N, "lr": 1e-2, "log_interval": 1, "warmup_steps": 0}
    return {
        "stage": stage,
        "output_dir": str(tmp_path / "out"),
        "model": {"init": "tiny", "tokenizer": str(tok), "overrides": SMALL},
        "data": {"train": [str(data)], "max_length": 64},
        "train": {**base, **train},
        "algo": algo,
    }


def _cfg(*args, **kw) -> StageConfig:
    return StageConfig.model_validate(_cfg_dict(*args, **kw))


def _run(cfg: StageConfig, **kw):
    return run_stage(cfg, console=False, **kw)


class Snapshots(TrainerCallback):
    """A copy of one policy weight after every optimizer step."""

    def __init__(self):
        self.after: dict[int, torch.Tensor] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.after[state.global_step] = model.model.layers[0].mlp.up_proj.weight.detach().clone()


# ---------------------------------------------------------------- the check itself


@pytest.mark.parametrize("kind", list(KINDS))
def test_named_reward_names_the_fault_or_records_it_when_skipping(kind: str) -> None:
    reward = NamedReward(faulty, {"kind": kind, "steps": [1]}, "solver")
    state = type("State", (), {"global_step": 0})()
    completions = [[{"role": "assistant", "content": "x"}]] * N
    with pytest.raises(RewardFault) as info:
        reward(completions=completions, trainer_state=state)
    assert str(info.value) == f"reward 'solver' {KINDS[kind][1]}"
    reward.skip_faults = True  # train.max_bad_steps > 0: every process goes on, the trainer skips the step
    values = reward(completions=completions, trainer_state=state)
    assert len(values) == N and all(math.isnan(v) for v in values)
    assert [str(f) for f in reward.faults] == [f"reward 'solver' {KINDS[kind][1]}"]
    state.global_step = 1  # a healthy step: plain floats, nothing recorded
    assert reward(completions=completions, trainer_state=state) == [0.5] * N
    assert len(reward.faults) == 1


def test_numbers_of_any_type_are_accepted_as_floats() -> None:
    reward = NamedReward(lambda completions, **kw: [1, True, torch.tensor(0.25), 2.5], {}, "mixed")
    assert reward(completions=[None] * 4) == [1.0, 1.0, 0.25, 2.5]
    for value, shown in [(None, "NoneType"), (0.5, "float"), ("0.5", "str")]:
        with pytest.raises(RewardFault, match=rf"^reward 'one' returned {shown}, not a list of 4 numbers$"):
            NamedReward(lambda completions, v=value, **kw: v, {}, "one")(completions=[None] * 4)


# ---------------------------------------------------------------- stop (train.max_bad_steps: 0)


@pytest.mark.parametrize("stage", ["grpo", "ppo"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_failed_reward_stops_the_first_step_naming_reward_and_step(
    tmp_path: Path, tiny_tokenizer_dir: Path, stage: str, kind: str
) -> None:
    cfg = _cfg(tmp_path, tiny_tokenizer_dir, stage, kind, steps=[1])
    with pytest.raises(TrainingError) as info:
        _run(cfg)
    assert str(info.value) == (
        f"reward 'faulty' {KINDS[kind][1]} at step 1: training stopped (1 bad step(s), train.max_bad_steps "
        "is 0); no checkpoint had been saved. Fix the reward function, or raise train.max_bad_steps to skip "
        "such steps, then resume."
    )
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.parametrize("stage", ["grpo", "spo"])
def test_a_failed_reward_keeps_the_newest_checkpoint_and_exits_2(
    tmp_path: Path, tiny_tokenizer_dir: Path, capsys, stage: str
) -> None:
    cfg = _cfg_dict(tmp_path, tiny_tokenizer_dir, stage, "nan_some", steps=[3], max_steps=4, save_interval=2)
    config = write_yaml(tmp_path / "stage.yaml", cfg)
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # beside the progress bar
    out = tmp_path / "out"
    ckpts = out / "checkpoints"
    assert errors == [
        f"error: reward 'faulty' returned nan for 3 of {N} completions at step 3: training stopped (1 bad "
        f"step(s), train.max_bad_steps is 0); the newest checkpoint ({ckpts / 'checkpoint-2'}) is intact. "
        "Fix the reward function, or raise train.max_bad_steps to skip such steps, then resume."
    ]
    assert sorted(p.name for p in ckpts.glob("checkpoint-*")) == ["checkpoint-2"]  # (TRL adds a README)
    assert not (out / "model.safetensors").exists() and not (out / "stage.json").exists()
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r] == [1, 2]


# ---------------------------------------------------------------- skip (train.max_bad_steps: N)


@pytest.mark.parametrize("stage", ["grpo", "ppo", "spo"])
def test_max_bad_steps_skips_a_failed_reward_step_without_touching_the_weights(
    tmp_path: Path, tiny_tokenizer_dir: Path, stage: str
) -> None:
    cfg = _cfg(
        tmp_path,
        tiny_tokenizer_dir,
        stage,
        "raises",
        steps=[2],
        max_steps=3,
        max_bad_steps=1,
        save_interval=3,
    )
    snaps = Snapshots()
    assert _run(cfg, callbacks=[snaps])["global_step"] == 3
    out = tmp_path / "out"
    assert torch.equal(snaps.after[1], snaps.after[2]), "the skipped step changed the weights"
    assert not torch.equal(snaps.after[2], snaps.after[3])
    records = [r for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r]
    assert [r["train/skipped_steps"] for r in records] == [0, 1, 1]
    assert all(math.isfinite(r["train/loss"]) for r in records)
    log = next(out.glob(f"{stage}_training_logs_*.txt")).read_text()
    assert (
        "step 2: reward 'faulty' raised KeyError: 'answer'; optimizer step skipped (1 of train.max_bad_steps 1)"
        in log
    )
    state = json.loads((out / "checkpoints" / "checkpoint-3" / "minigpt_state.json").read_text())
    assert state == {"skipped_steps": 1}


def test_failed_rewards_share_the_budget_of_non_finite_steps(
    tmp_path: Path, tiny_tokenizer_dir: Path
) -> None:
    cfg = _cfg(tmp_path, tiny_tokenizer_dir, "grpo", "inf", steps=[1, 3], max_steps=4, max_bad_steps=1)
    with pytest.raises(TrainingError) as info:
        _run(cfg)
    assert str(info.value).startswith(
        f"reward 'faulty' returned inf, -inf for 2 of {N} completions at step 3: training stopped (2 bad "
        "step(s), train.max_bad_steps is 1); no checkpoint had been saved."
    )


def test_spo_skips_a_step_whose_first_sight_samples_fail_leaving_the_tracker_as_it_was(
    tmp_path: Path, tiny_tokenizer_dir: Path
) -> None:
    # Fresh prompts are scored with init_samples extra completions while the update is prepared (8 new
    # prompts x 3 = 24 completions at step 2): only those fail, after the rollout itself scored fine.
    algo = {"init_samples": 3, "prioritized_sampling": False, "reward_args": {"sizes": [24]}}
    cfg = _cfg(
        tmp_path,
        tiny_tokenizer_dir,
        "spo",
        "nan_all",
        [2],
        algo,
        max_steps=2,
        max_bad_steps=1,
        save_interval=1,
    )
    snaps = Snapshots()
    _run(cfg, callbacks=[snaps])
    assert torch.equal(snaps.after[1], snaps.after[2])
    out = tmp_path / "out"
    log = next(out.glob("spo_training_logs_*.txt")).read_text()
    assert "step 2: reward 'faulty' returned nan for 24 of 24 completions; optimizer step skipped" in log
    ckpts = out / "checkpoints"
    before, after = (
        torch.load(ckpts / f"checkpoint-{k}" / "onpolicy_state.pt", weights_only=True)["tracker"]
        for k in (1, 2)
    )
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before), "the tracker learned a skipped step"


def _eval_cfg(tmp_path: Path, tok: Path, stage: str, **train) -> StageConfig:
    tmp_path.mkdir()
    data = _cfg_dict(tmp_path, tok, stage, "nan_all", [2], {"reward_args": {"sizes": [4]}}, **train)
    data["data"]["validation"] = [str(write_jsonl(tmp_path / "val.jsonl", digit_prompts(4)))]
    data["train"].update(max_steps=2, eval_interval=1, eval_batch_size=4, eval_batches=1)
    return StageConfig.model_validate(data)


@pytest.mark.parametrize("stage", ["grpo", "ppo"])
def test_a_reward_failing_at_evaluation_stops_or_is_noted(
    tmp_path: Path, tiny_tokenizer_dir: Path, stage: str
):
    # The evaluation after step 1 scores 4 completions (trainer_state.global_step + 1 is then 2).
    with pytest.raises(TrainingError) as info:
        _run(_eval_cfg(tmp_path / "stop", tiny_tokenizer_dir, stage))
    assert str(info.value) == (
        "reward 'faulty' returned nan for 4 of 4 completions at the evaluation after step 1: training stopped; "
        "no checkpoint had been saved. Fix the reward function, or raise train.max_bad_steps to go on without "
        "such values, then resume."
    )
    # With a budget the evaluation goes on (there is no step to skip) and the log says what is missing.
    assert _run(_eval_cfg(tmp_path / "go", tiny_tokenizer_dir, stage, max_bad_steps=1))["global_step"] == 2
    out = tmp_path / "go" / "out"
    log = next(out.glob(f"{stage}_training_logs_*.txt")).read_text()
    assert (
        "evaluation after step 1: reward 'faulty' returned nan for 4 of 4 completions; this evaluation's "
        "reward metrics are incomplete" in log
    )
    records = [r for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r]
    assert [r["train/skipped_steps"] for r in records] == [0, 0]
