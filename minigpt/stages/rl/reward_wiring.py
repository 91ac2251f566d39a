"""Reward functions as the RL stages use them: checks against the dataset's columns, the log line naming them,
and the metric names of each reward (shared by the TRL stages and the on-policy loop)."""

from __future__ import annotations

from minigpt.errors import ConfigError
from minigpt.rewards import NamedReward


def check_reward_columns(funcs: list[NamedReward], columns: list[str]) -> None:
    """A reward's fixed ``args`` must not share a name with a dataset column (the column would win)."""
    for fn in funcs:
        clash = sorted(set(fn.args) & set(columns))
        if clash:
            raise ConfigError(
                f"algo.rewards '{fn.__name__}': args.{clash[0]} is also a dataset column "
                "(the column would silently win): rename one of them"
            )


def describe_rewards(funcs: list[NamedReward], weights: list[float]) -> str:
    """The log line naming the rewards in use and their weights."""
    return "rewards: " + ", ".join(f"{fn.__name__} × {w:g}" for fn, w in zip(funcs, weights, strict=True))


def reward_metric_renames(labels: list[str]) -> dict[str, str]:
    """TRL's per-reward keys → ours: ``rewards/<l>/mean`` → ``train/reward/<l>`` (std likewise)."""
    out: dict[str, str] = {}
    for label in labels:
        out[f"rewards/{label}/mean"] = f"train/reward/{label}"
        out[f"rewards/{label}/std"] = f"train/reward_std/{label}"
        out[f"eval_rewards/{label}/mean"] = f"eval/reward/{label}"
        out[f"eval_rewards/{label}/std"] = f"eval/reward_std/{label}"
    return out
