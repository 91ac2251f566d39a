"""Pretraining: next-token prediction on text packed to ``data.max_length``."""

from minigpt.registry import STAGES
from minigpt.stages.lm.causal_lm import CausalLMStage


@STAGES.register("pretrain")
class PretrainStage(CausalLMStage):
    name = "pretrain"
    schema = "text"
    default_packing = True
