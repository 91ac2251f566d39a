"""The built-in stages: each name maps to its implementation, imported on first use (torch, transformers,
TRL), and to its ``algo:`` fields, which are torch-free so that a config or a whole recipe is validated (and
``minigpt list`` / ``minigpt run --dry-run`` answer) without importing the training stack.

Adding a stage: its module in the family folder, its Params class in the family's ``*_params`` module, and one
``_stage(...)`` line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from minigpt.registry import STAGES, import_object
from minigpt.stages.lm.lm_params import DistillParams, ReasoningParams
from minigpt.stages.preference.preference_params import DPOParams, RewardParams
from minigpt.stages.rl.rl_params import GRPOParams, PPOParams, RLOOParams, SPOParams
from minigpt.stages.stage_params import NoParams
from minigpt.typed_config import Strict


@dataclass(frozen=True)
class StageSpec:
    name: str
    implementation: str
    """``module:Class`` of the Stage subclass."""
    params: type[Strict]
    """The stage's ``algo:`` fields."""
    generates_text: bool = True
    """Whether the trained model answers prompts, so a task can evaluate it during training (not the reward
    model, a classifier)."""

    def load(self) -> Any:
        """The Stage class (imports its module: torch and the trainer libraries)."""
        return import_object(self.implementation, "stage")


def _stage(name: str, implementation: str, params: type[Strict] = NoParams, **more: Any) -> None:
    STAGES.register(name)(StageSpec(name, implementation, params, **more))


_stage("pretrain", "minigpt.stages.lm.pretrain:PretrainStage")
_stage("midtrain", "minigpt.stages.lm.midtrain:MidtrainStage")
_stage("sft", "minigpt.stages.lm.sft:SFTStage")
_stage("distill", "minigpt.stages.lm.distill:DistillStage", DistillParams)
_stage("reasoning_distill", "minigpt.stages.lm.distill:ReasoningDistillStage", ReasoningParams)
_stage("dpo", "minigpt.stages.preference.dpo:DPOStage", DPOParams)
_stage("reward", "minigpt.stages.preference.reward:RewardStage", RewardParams, generates_text=False)
_stage("grpo", "minigpt.stages.rl.grpo:GRPOStage", GRPOParams)
_stage("rloo", "minigpt.stages.rl.rloo:RLOOStage", RLOOParams)
_stage("ppo", "minigpt.stages.rl.ppo:PPOStage", PPOParams)
_stage("spo", "minigpt.stages.rl.spo:SPOStage", SPOParams)
