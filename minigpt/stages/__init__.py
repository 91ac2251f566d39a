"""Training stages, grouped by family: ``lm`` (pretrain, midtrain, sft, distillation), ``preference`` (dpo,
reward) and ``rl`` (grpo, rloo on TRL; ppo, spo on the hand-written on-policy loop in ``rl/onpolicy``).
Importing this package registers every built-in stage in ``minigpt.registry.STAGES``."""

from minigpt.stages.lm import distill, midtrain, pretrain, sft  # noqa: F401
from minigpt.stages.preference import dpo, reward  # noqa: F401
from minigpt.stages.rl import grpo, ppo, rloo, spo  # noqa: F401
