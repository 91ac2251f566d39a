"""Pretraining: next-token prediction on text packed to ``data.max_length``."""

from minigpt.stages.lm.causal_lm import CausalLMStage


class PretrainStage(CausalLMStage):
    name = "pretrain"
    schema = "text"
    default_packing = True
