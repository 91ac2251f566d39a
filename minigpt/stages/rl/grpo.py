"""GRPO (group relative policy optimization) on TRL's GRPOTrainer.

Each prompt is sampled ``num_generations`` times; a completion's advantage is its reward minus its group's
mean (scaled by the group's std unless ``scale_rewards: none``). Everything else (rewards, datasets, timing,
reference model) is in ``rl_common``.
"""

from __future__ import annotations

from trl import GRPOConfig, GRPOTrainer

from minigpt.stages.rl.trl_group_stage import RLStage, RLTrainerMixin
from minigpt.stages.trainer_hooks import hooked


class GRPOStage(RLStage):
    name = "grpo"
    # GRPOTrainer._generate returns (prompt_ids, completion_ids, tool_mask, completions, ...)
    trainer_class = hooked(GRPOTrainer, RLTrainerMixin, completions_index=3)
    config_class = GRPOConfig
