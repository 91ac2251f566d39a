"""Training stages, grouped by family: ``lm`` (pretrain, midtrain, sft, distillation), ``preference`` (dpo,
reward) and ``rl`` (grpo, rloo on TRL; ppo, spo on the hand-written on-policy loop in ``rl/onpolicy``).
``catalog`` registers them in ``minigpt.registry.STAGES`` without importing them (torch-free)."""
