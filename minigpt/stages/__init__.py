"""Training stages. Importing this package registers every built-in stage in ``minigpt.registry.STAGES``."""

from minigpt.stages import dpo, grpo, midtrain, pretrain, reward, rloo, sft  # noqa: F401
