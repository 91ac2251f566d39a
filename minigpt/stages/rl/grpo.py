"""GRPO (group relative policy optimization) on TRL's GRPOTrainer.

Each prompt is sampled ``num_generations`` times; a completion's advantage is its reward minus its group's
mean (scaled by the group's std unless ``scale_rewards: none``). Everything else (rewards, datasets, timing,
reference model) is in ``rl_common``.
"""

from __future__ import annotations

from typing import Any

from trl import GRPOConfig, GRPOTrainer

from minigpt.stages.rl.trl_group_stage import RLStage, RLTrainerMixin
from minigpt.stages.trainer_hooks import MiniGPTTrainerMixin


class MiniGPTGRPOTrainer(MiniGPTTrainerMixin, RLTrainerMixin, GRPOTrainer):
    # GRPOTrainer._generate returns (prompt_ids, completion_ids, tool_mask, completions, ...)
    completions_index = 3


class GRPOStage(RLStage):
    name = "grpo"
    trainer_class = MiniGPTGRPOTrainer
    config_class = GRPOConfig

    def algo_kwargs(self) -> dict[str, Any]:
        p = self.ctx.params
        return {
            "loss_type": p.loss_type,
            "scale_rewards": p.scale_rewards,
            "multi_objective_aggregation": p.multi_objective_aggregation,
            "importance_sampling_level": p.importance_sampling_level,
        }
