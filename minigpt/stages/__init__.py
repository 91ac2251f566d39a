"""Training stages. Importing this package registers every built-in stage in ``minigpt.registry.STAGES``."""

from minigpt.stages import distill, dpo, grpo, midtrain, ppo, pretrain, reward, rloo, sft, spo  # noqa: F401
