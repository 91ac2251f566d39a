"""RLOO through the shared runner: the mean reward rises on the digit task of test_grpo, with a KL penalty
(beta > 0), which exercises the offline reference model (a preset has no folder to reload it from)."""

from __future__ import annotations

import pytest
from support import (
    assert_logged_keys,
    assert_same_logged,
    assert_same_weights,
    reward_quarters,
    run_interrupted_then_resumed,
)
from test_grpo import rl_cfg, run  # a sibling module: pytest puts tests/stages/rl on sys.path

from minigpt.metrics import read_metrics


@pytest.mark.slow
def test_rloo_reward_rises_with_kl(tmp_path, tiny_tokenizer_dir):
    cfg = rl_cfg(
        tmp_path,
        tiny_tokenizer_dir,
        "rloo",
        "rloo",
        algo={"beta": 0.01, "normalize_advantages": True},
        max_steps=24,
        eval_interval=12,
    )
    summary = run(cfg)
    out = tmp_path / "rloo"
    records = read_metrics(out / "metrics.jsonl")
    rewards, first, last = reward_quarters(records)
    # Stated margin: from ~0.05 at random init, the last quarter beats the first by 0.15+ (measured 0.07 → 0.41).
    assert last > first + 0.15, rewards
    expected = {
        "train/reward",
        "train/reward_std",
        "train/reward/digit_reward",
        "train/kl",
        "train/avg_response_len",
        "train/generation_seconds",
        "train/update_seconds",
        "eval/reward",
    }
    assert_logged_keys(records, expected)
    assert all(
        r["train/kl"] >= -1.0 for r in records if "train/kl" in r
    )  # first-order estimate: can dip below 0
    assert summary["global_step"] == 24
    assert not (out / ".reference").exists()  # the temporary reference copy is removed once loaded


@pytest.mark.slow
def test_rloo_resume_matches_uninterrupted_run(tmp_path, tiny_tokenizer_dir):
    common = {"max_steps": 6, "save_interval": 3, "eval_interval": 0, "log_interval": 1}
    algo = {"beta": 0.01, "normalize_advantages": True}  # beta > 0: the reference is rebuilt on resume too
    # Restarts from checkpoint-3: sampling must continue from the saved RNG state.
    full, part, summary = run_interrupted_then_resumed(
        run, lambda name: rl_cfg(tmp_path, tiny_tokenizer_dir, "rloo", name, algo=algo, **common), 4
    )
    assert summary["global_step"] == 6
    # Stated tolerance: identical up to float32 rounding (1e-6 absolute); measured max difference 0.0.
    assert_same_weights(full, part, atol=1e-6)
    # train/loss is ~1e-8 here (normalized advantages average to zero), so the reward and the KL to the
    # reference, which both depend on every sampled completion, are compared too.
    # Stated tolerance: measured max difference 0.0 (loss, reward and KL); tolerance 1e-6.
    assert_same_logged(full, part, ("train/loss", "train/reward", "train/kl"), atol=1e-6, steps=range(1, 7))


def test_rloo_config_takes_the_static_cache(tmp_path):
    """The shared algo.cache_implementation reaches RLOOConfig as TRL's cache_implementation plus the fixed
    cache length in generation_kwargs; the dynamic default leaves TRL's own defaults (None) untouched."""
    from trl import RLOOConfig

    from minigpt.stages.rl.rl_params import RLOOParams
    from minigpt.stages.rl.trl_group_stage import trl_kwargs

    def config(**algo):
        params = RLOOParams(rewards=["length"], max_completion_length=16, **algo)
        return RLOOConfig(output_dir=str(tmp_path), use_cpu=True, **trl_kwargs(params, [1.0]))

    static = config(cache_implementation="static", max_prompt_length=40)
    assert static.cache_implementation == "static" and static.generation_kwargs == {"max_cache_len": 56}
    assert config(cache_implementation="static").generation_kwargs is None  # no prompt limit: cache grows
    plain = config()
    assert plain.cache_implementation is None and plain.generation_kwargs is None
