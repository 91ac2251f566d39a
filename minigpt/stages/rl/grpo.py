"""GRPO (group relative policy optimization) on TRL's GRPOTrainer.

Each prompt is sampled ``num_generations`` times; a completion's advantage is its reward minus its group's
mean (scaled by the group's std unless ``scale_rewards: none``). Everything else (rewards, datasets, timing,
reference model) is in ``rl_common``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator
from trl import GRPOConfig, GRPOTrainer

from minigpt.registry import STAGES
from minigpt.stages.rl.trl_rl import RLParams, RLStage, RLTrainerMixin
from minigpt.stages.trainer_hooks import MiniGPTTrainerMixin

# The loss types TRL 1.16's GRPOTrainer implements (trl/trainer/grpo_config.py, `loss_type`).
LossType = Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"]


class GRPOParams(RLParams):
    loss_type: LossType = "dapo"
    """How token losses are aggregated: dapo (TRL's default; active tokens in the accumulated batch), grpo
    (per sequence, length-biased), dr_grpo (a constant: max_completion_length), bnpo (active tokens in the
    local batch), cispo/sapo/vespo (other clipping/weighting schemes), luspo (needs sequence-level IS)."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Divide advantages by the std of the group, of the whole batch, or not at all (Dr. GRPO)."""
    multi_objective_aggregation: Literal["sum_then_normalize", "normalize_then_sum"] = "sum_then_normalize"
    """With several rewards: weight and sum then normalise (default), or normalise each first (GDPO)."""
    importance_sampling_level: Literal["token", "sequence"] = "token"
    """Policy ratio per token (GRPO) or per sequence (GSPO)."""

    @model_validator(mode="after")
    def _combination(self) -> GRPOParams:
        # Checked here so a bad pair fails when the config is read, not after the model is built.
        if self.loss_type == "luspo" and self.importance_sampling_level != "sequence":
            raise ValueError("loss_type 'luspo' needs importance_sampling_level: sequence")
        if self.loss_type == "vespo" and self.importance_sampling_level != "token":
            raise ValueError("loss_type 'vespo' needs importance_sampling_level: token")
        return self


class MiniGPTGRPOTrainer(MiniGPTTrainerMixin, RLTrainerMixin, GRPOTrainer):
    # GRPOTrainer._generate returns (prompt_ids, completion_ids, tool_mask, completions, ...)
    completions_index = 3


@STAGES.register("grpo")
class GRPOStage(RLStage):
    name = "grpo"
    Params = GRPOParams
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
