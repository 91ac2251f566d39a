"""The stage side of the hand-written on-policy loop (``ppo``, ``spo``): prompt datasets, reward wiring, the
frozen reference model and the trainer; the loop itself is ``minigpt.stages.rl.onpolicy.onpolicy_loop``.

Batch semantics (unlike grpo/rloo, one completion per prompt): ``train.batch_size`` counts prompts (=
completions) per device and micro-step; one optimizer step's rollout is ``batch_size × grad_accum`` of them
per device.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from datasets import Dataset
from transformers import TrainingArguments

from minigpt.data.training.prompt_rows import prompt_dataset
from minigpt.errors import DataError
from minigpt.lora import trains_adapter_only
from minigpt.rewards import NamedReward, build_rewards
from minigpt.stages.rl.onpolicy.rollout import INDEX_COLUMN
from minigpt.stages.rl.reward_wiring import check_reward_columns, describe_rewards
from minigpt.stages.rl.step_timing import StepTimer
from minigpt.stages.stage import Stage


class OnPolicyStage(Stage):
    """Base of ``ppo`` and ``spo``: subclasses set ``trainer_class`` and ``Params`` and may pass more trainer
    arguments from :meth:`trainer_kwargs`."""

    schema = "prompt_only"
    eval_loss_is_token_nll = False  # there is no eval/loss: evaluation scores samples
    trainer_class: ClassVar[type]

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        cfg, p = self.ctx.cfg, self.ctx.params
        train_src, val_src = self.ctx.data_sources
        args = (self.ctx.tokenizer, p.max_prompt_length, cfg.data.overlong, self.ctx.state.log.note)
        train = prompt_dataset(self.ctx.train_rows, train_src, *args)
        if INDEX_COLUMN in train.column_names:
            raise DataError(f"column '{INDEX_COLUMN}' is reserved by the trainer; rename it", file=train_src)
        # Each prompt's position in the dataset: its key in SPO's value tracker (stable across resume).
        train = train.add_column(INDEX_COLUMN, list(range(len(train))))
        val = prompt_dataset(self.ctx.val_rows, val_src, *args) if self.ctx.val_rows else None
        return train, val

    def count_batch(self, inputs: Any) -> tuple[int, int]:
        # A micro-batch is prompt rows; prompt + completion tokens are counted after sampling, by the trainer.
        return 0, 0

    def reward_functions(self, train_ds: Dataset) -> tuple[list[NamedReward], list[float]]:
        p = self.ctx.params
        funcs, weights = build_rewards(p.rewards) if p.rewards else ([], [])
        check_reward_columns(funcs, train_ds.column_names)
        return funcs, weights

    def reference_model(self) -> Any:
        """The initial policy for the KL term; None when ``beta`` is 0. Without LoRA, a frozen copy made in
        memory before any checkpoint is loaded, so a resumed run keeps the original reference. With LoRA, no
        second model: the policy itself with its adapter disabled (:class:`AdapterDisabledReference`)."""
        if self.ctx.params.beta == 0.0:
            return None
        model = self.ctx.model
        if trains_adapter_only(model):
            return AdapterDisabledReference(model)
        return copy.deepcopy(model)

    def trainer_kwargs(self, train_ds: Dataset) -> dict[str, Any]:
        """The algorithm's own trainer arguments (PPO: critic and reward model; SPO: the tracker)."""
        return {}

    def build_trainer(
        self, args_kwargs: dict[str, Any], train_ds: Dataset, eval_ds: Dataset | None, callbacks: list
    ) -> Any:
        tokenizer = self.ctx.tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        funcs, weights = self.reward_functions(train_ds)
        extra = self.trainer_kwargs(train_ds)
        if funcs:
            self.ctx.state.log.note(describe_rewards(funcs, weights))
        timer = StepTimer(self.ctx.state)
        return self.trainer_class(
            model=self.ctx.model,
            args=TrainingArguments(**args_kwargs),
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tokenizer,
            callbacks=[*callbacks, timer],
            params=self.ctx.params,
            reward_funcs=funcs,
            reward_weights=weights,
            ref_model=self.reference_model(),
            timer=timer,
            minigpt_stage=self,
            minigpt_rewards=funcs,
            **extra,
        )


class AdapterDisabledReference:
    """The reference policy of a LoRA run without a second copy of the model: the policy's own forward with
    its adapter disabled (peft's ``disable_adapter``), in eval mode and without gradients, as TRL's DPO/GRPO
    do for an adapter they create themselves. ``sequence_logps`` calls it like a model.

    It is exactly the initial policy: the runner wraps the stage's starting model with a fresh adapter whose
    B = 0, and training changes only adapter weights (``trains_adapter_only``). ``modules_to_save`` copies are
    bypassed too: disabled, peft runs the original modules. On resume the Trainer loads only the adapter
    (and those copies) from the checkpoint and leaves the base weights untouched, so this is still the
    policy the run started from, not the one it resumed from."""

    def __init__(self, policy: torch.nn.Module):
        self.policy = policy

    def __call__(self, **inputs: Any) -> Any:
        was_training = self.policy.training
        self.policy.eval()  # dropout off, as for a frozen copy
        try:
            with torch.no_grad(), self.policy.disable_adapter():
                return self.policy(**inputs)
        finally:
            self.policy.train(was_training)
