"""RLOO (REINFORCE leave-one-out) on TRL's RLOOTrainer.

Each prompt is sampled ``num_generations`` times; a completion's advantage is its reward minus the mean
reward of the other completions of its prompt. With ``beta > 0`` the KL to the initial policy is subtracted
from the reward (TRL's RLOO), not added to the loss. Everything else is in ``rl_common``.
"""

from __future__ import annotations

from trl import RLOOConfig, RLOOTrainer

from minigpt.stages.rl.trl_group_stage import RLStage, RLTrainerMixin
from minigpt.stages.trainer_hooks import hooked


class RLOOStage(RLStage):
    name = "rloo"
    # RLOOTrainer._generate returns (prompt_ids, completion_ids, completions)
    trainer_class = hooked(RLOOTrainer, RLTrainerMixin, completions_index=2)
    config_class = RLOOConfig
