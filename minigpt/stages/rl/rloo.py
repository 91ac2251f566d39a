"""RLOO (REINFORCE leave-one-out) on TRL's RLOOTrainer.

Each prompt is sampled ``num_generations`` times; a completion's advantage is its reward minus the mean
reward of the other completions of its prompt. With ``beta > 0`` the KL to the initial policy is subtracted
from the reward (TRL's RLOO), not added to the loss. Everything else is in ``rl_common``.
"""

from __future__ import annotations

from typing import Any

from pydantic import model_validator
from trl import RLOOConfig, RLOOTrainer

from minigpt.registry import STAGES
from minigpt.stages.rl.trl_rl import RLParams, RLStage, RLTrainerMixin
from minigpt.stages.trainer_hooks import MiniGPTTrainerMixin


class RLOOParams(RLParams):
    normalize_advantages: bool = False
    """Standardise advantages over each generation batch (mean 0, std 1)."""
    reward_clip_range: tuple[float, float] | None = None
    """Clip the summed reward to [min, max] before the baseline."""

    @model_validator(mode="after")
    def _clip_order(self) -> RLOOParams:
        if self.reward_clip_range is not None and self.reward_clip_range[0] >= self.reward_clip_range[1]:
            raise ValueError(f"reward_clip_range {list(self.reward_clip_range)}: min must be below max")
        return self


class MiniGPTRLOOTrainer(MiniGPTTrainerMixin, RLTrainerMixin, RLOOTrainer):
    completions_index = 2  # RLOOTrainer._generate returns (prompt_ids, completion_ids, completions)


@STAGES.register("rloo")
class RLOOStage(RLStage):
    name = "rloo"
    Params = RLOOParams
    trainer_class = MiniGPTRLOOTrainer
    config_class = RLOOConfig

    def algo_kwargs(self) -> dict[str, Any]:
        p = self.ctx.params
        return {"normalize_advantages": p.normalize_advantages, "reward_clip_range": p.reward_clip_range}
