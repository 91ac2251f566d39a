"""Midtraining: pretraining continued from a checkpoint on another mixture; conversation rows are rendered
with the chat template (loss on every token), text rows are used as is."""

from minigpt.stages.lm.causal_lm import CausalLMStage


class MidtrainStage(CausalLMStage):
    name = "midtrain"
    schema = "text"
    default_packing = True
