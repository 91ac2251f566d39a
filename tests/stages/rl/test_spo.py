"""SPO through the shared runner on the digit task of test_grpo: the mean reward rises with one sample per
prompt, the tracker's metrics are logged and its state lands in every checkpoint, an interrupted run resumes
to exactly the uninterrupted run (weights, tracker, sampler), and config mistakes are named."""

from __future__ import annotations

import math

import pytest
import torch
from support import (
    assert_logged_keys,
    assert_same_logged,
    assert_same_weights,
    reward_quarters,
    run_interrupted_then_resumed,
)
from test_ppo import onpolicy_cfg, run  # a sibling module: pytest puts tests/stages/rl on sys.path

from minigpt.errors import ConfigError, TrainingError
from minigpt.metrics import read_metrics
from minigpt.stages.rl.onpolicy.onpolicy_loop import ONPOLICY_STATE
from minigpt.stages.rl.spo_tracker import ValueTracker


def test_spo_reward_rises_and_tracks_prompts(tmp_path, tiny_tokenizer_dir):
    cfg = onpolicy_cfg(tmp_path, tiny_tokenizer_dir, "spo", "spo", algo={"init_samples": 4}, save_interval=10)
    summary = run(cfg)
    out = tmp_path / "spo"
    records = read_metrics(out / "metrics.jsonl")
    rewards, first, last = reward_quarters(records)
    # Stated margin: from ~0.05-0.1 at random init the last quarter beats the first by 0.15+ (measured with
    # the paper's defaults over seeds 1, 2, 3, 7, 42: gains 0.23-0.43; seed 42, the default: 0.099 -> 0.529).
    assert last > first + 0.15, rewards
    expected = {
        "train/reward",
        "train/reward_std",
        "train/reward/digit_reward",
        "train/avg_response_len",
        "train/generation_seconds",
        "train/update_seconds",
        "train/policy_loss",
        "train/spo/baseline",
        "train/spo/rho",
        "train/spo/drift",
        "eval/reward",
        "eval/reward/digit_reward",
    }
    keys = assert_logged_keys(records, expected)
    assert "train/kl" not in keys  # beta = 0: no reference model
    steps = [r for r in records if "train/spo/rho" in r]
    assert all(0.875 <= r["train/spo/rho"] <= 0.96 for r in steps)  # the adaptive factor stays clipped
    assert summary["global_step"] == 20
    # The tracker is in each checkpoint: every prompt drawn so far was initialised from samples.
    state = torch.load(out / "checkpoints" / "checkpoint-20" / ONPOLICY_STATE, weights_only=True)
    tracker = ValueTracker(len(state["tracker"]["alpha"]))
    tracker.load_state_dict(state["tracker"])
    assert 10 < int(tracker.seen.sum()) <= len(tracker)
    seen = tracker.seen
    assert (tracker.values()[seen] < 0.9).all() and (tracker.alpha[seen] + tracker.beta[seen] > 2).all()
    assert len(tracker.memory) == int(seen.sum())  # each seen prompt's last completion, for the next KL


@pytest.mark.slow
def test_spo_resume_equals_an_uninterrupted_run(tmp_path, tiny_tokenizer_dir):
    # Exercises everything that must survive a restart: prioritised draws, first-sight initial samples,
    # the KL-adaptive forgetting (remembered completions), two passes of two minibatches, gradient
    # accumulation and the KL penalty's reference model.
    algo = {"init_samples": 2, "beta": 0.01, "num_iterations": 2, "num_minibatches": 2}
    train = {"max_steps": 6, "save_interval": 2, "eval_interval": 0, "log_interval": 1}

    def cfg(name):
        return onpolicy_cfg(
            tmp_path, tiny_tokenizer_dir, "spo", name, algo=algo, batch_size=8, grad_accum=2, **train
        )

    full_dir, cut_dir, _ = run_interrupted_then_resumed(run, cfg, 3, names=("full", "cut"))
    # Measured: bit-identical on CPU; the tolerance only allows for a different BLAS.
    assert_same_weights(full_dir, cut_dir, atol=1e-6)
    states = [
        torch.load(tmp_path / n / "checkpoints" / "checkpoint-6" / ONPOLICY_STATE, weights_only=True)
        for n in ("full", "cut")
    ]
    assert torch.equal(states[0]["sampler_rng"], states[1]["sampler_rng"])
    for key, value in states[0]["tracker"].items():
        torch.testing.assert_close(states[1]["tracker"][key], value, atol=1e-6, rtol=0)
    assert_same_logged(
        full_dir, cut_dir, ["train/reward"], atol=1e-6, steps=range(1, 7), record_key="train/reward"
    )


def test_spo_fixed_forgetting_without_curriculum(tmp_path, tiny_tokenizer_dir):
    algo = {"rho": 0.9, "prioritized_sampling": False, "init_samples": 0, "prior": [1.0, 3.0]}
    cfg = onpolicy_cfg(tmp_path, tiny_tokenizer_dir, "spo", "fixed", algo=algo, max_steps=3, eval_interval=0)
    run(cfg)
    steps = [r for r in read_metrics(tmp_path / "fixed" / "metrics.jsonl") if "train/spo/rho" in r]
    assert steps and all(math.isclose(r["train/spo/rho"], 0.9) for r in steps)
    assert "train/spo/drift" not in set().union(*steps)  # no KL measured with a fixed rho


def test_spo_config_errors(tmp_path, tiny_tokenizer_dir):
    bad = [
        ({"rewards": []}, "spo needs algo.rewards"),
        ({"rho_min": 0.99, "rho_max": 0.9}, "rho_min 0.99 must not exceed rho_max 0.9"),
        ({"reward_range": [1, 0]}, "reward_range"),
        ({"ppo_epochs": 2}, "unknown key 'algo.ppo_epochs'"),
    ]
    for algo, message in bad:
        with pytest.raises(ConfigError, match=message):
            onpolicy_cfg(tmp_path, tiny_tokenizer_dir, "spo", "bad", algo=algo)


def test_resume_with_other_data_is_refused(tmp_path, tiny_tokenizer_dir):
    algo = {"init_samples": 0, "rho": 0.9}
    cfg = onpolicy_cfg(tmp_path, tiny_tokenizer_dir, "spo", "data", algo=algo, max_steps=2, save_interval=2)
    run(cfg)
    cfg.resume = True
    cfg.data.val_fraction = 0.25  # fewer training prompts than the checkpoint's tracker holds
    with pytest.raises(
        TrainingError, match=r"cannot restore .*onpolicy_state.pt: .*43 prompts, this dataset 36"
    ):
        run(cfg)
