"""Training stages. Importing this package registers every built-in stage in ``minigpt.registry.STAGES``."""

from minigpt.stages import midtrain, pretrain, sft  # noqa: F401
