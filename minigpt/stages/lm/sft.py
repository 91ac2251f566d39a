"""Supervised fine-tuning on conversations; the loss covers assistant tokens only."""

from minigpt.stages.lm.causal_lm import CausalLMStage


class SFTStage(CausalLMStage):
    name = "sft"
    schema = "conversations"
    default_packing = False
    track_accuracy = True
