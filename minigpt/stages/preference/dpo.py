"""Direct Preference Optimization on TRL's DPOTrainer, from the previous stage's model against a frozen copy.

TRL 1.16 offers one length limit (``max_length``, prompt + completion, cut from the end) and no
reference-free mode, so neither a prompt/completion split nor ``reference_free`` is a field here.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from trl import DPOConfig, DPOTrainer

from minigpt.errors import ConfigError
from minigpt.lora import is_peft, trains_adapter_only
from minigpt.stages.preference.preference_params import DPOParams
from minigpt.stages.preference.preference_stage import PreferenceStage
from minigpt.stages.trainer_hooks import hooked


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The reference policy: the model as it is before training, without gradients. Built explicitly because
    TRL would otherwise reload the model by its name, which fails for a preset (no name) and offline."""
    ref = copy.deepcopy(model)
    if is_peft(ref):  # a plain model for TRL (it patches the backbone's forward): the fresh adapter is zero
        ref = ref.merge_and_unload()
    ref.requires_grad_(False)
    return ref.eval()


class DPOStage(PreferenceStage):
    name = "dpo"
    config_class = DPOConfig
    # TRL logs rewards/* and logps/* as is (kept by the rename rules); its eval loss is a preference loss.
    metric_renames = {
        "eval_loss": "eval/preference_loss",
        "eval_rewards/accuracies": "eval/preference_accuracy",
        "eval_rewards/margins": "eval/preference_margin",
    }

    def build_trainer(self, args_kwargs: dict[str, Any], train_ds, eval_ds, callbacks: list) -> DPOTrainer:
        p: DPOParams = self.ctx.params
        args = self.config_class(
            # TRL declares the tokenized columns it needs; dropping the message lists keeps batches small.
            **{**args_kwargs, "remove_unused_columns": True},
            max_length=self.ctx.cfg.data.max_length,
            **p.trl_kwargs(),
        )
        # With precomputed log-probs TRL scores the data with the policy before its first step (the policy then
        # still is the reference, also on resume: checkpoint weights are loaded later), so no copy is needed.
        # With LoRA (a peft model) TRL keeps a frozen copy of the fresh adapter as the reference: B = 0, so it
        # is exactly the adapter-disabled base model, and no second model is held, unless the run trains the
        # base layers' biases too (lora.bias: all / lora_only), which that copy shares: then a frozen copy.
        if is_peft(self.ctx.model) and p.sync_ref_model:
            raise ConfigError(
                "algo.sync_ref_model does not work with lora (TRL 1.16 cannot sync a peft reference)"
            )
        trl_reference = p.precompute_ref_log_probs or trains_adapter_only(self.ctx.model)
        ref = None if trl_reference else frozen_copy(self.ctx.model)
        trainer = hooked(DPOTrainer)(
            model=self.ctx.model,
            ref_model=ref,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=self.ctx.tokenizer,
            callbacks=callbacks,
            minigpt_stage=self,
        )
        self.check_kept(trainer, len(train_ds))
        self._note_truncated(trainer)
        return trainer

    def _note_truncated(self, trainer: DPOTrainer) -> None:
        """TRL's collator cuts prompt + completion to max_length without a word; say how often it will."""
        data = trainer.train_dataset
        limit = self.ctx.cfg.data.max_length
        cut = sum(
            len(p) + max(len(c), len(r)) > limit
            for p, c, r in zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"], strict=True)
        )
        if cut:
            self.ctx.state.log.note(
                f"dpo: {cut} of {len(data)} training pairs will be truncated to data.max_length {limit}"
            )
