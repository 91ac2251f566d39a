"""Reward model on TRL's RewardTrainer: the previous stage's network with a one-output scoring head, trained so
that chosen answers score above rejected ones (Bradley-Terry loss). The saved folder loads with
``AutoModelForSequenceClassification.from_pretrained`` (what PPO uses)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel, set_seed
from trl import RewardConfig, RewardTrainer

from minigpt.errors import ModelError
from minigpt.stages.preference.preference_params import RewardParams
from minigpt.stages.preference.preference_stage import PreferenceStage
from minigpt.stages.trainer_hooks import hooked


def sequence_classifier(lm: PreTrainedModel, pad_token_id: int) -> PreTrainedModel:
    """A one-output classifier sharing the causal LM's backbone weights; the score head is new.

    Built from the runner's already loaded model rather than from ``model.init``, so a preset (random init), a
    folder, ``model.overrides`` and a resized embedding all work the same way.
    """
    config = copy.deepcopy(lm.config)
    config.num_labels = 1
    config.pad_token_id = pad_token_id  # the head scores the last non-padding token of each sequence
    config.architectures = None
    try:
        model = AutoModelForSequenceClassification.from_config(
            config, dtype=lm.dtype, attn_implementation=lm.config._attn_implementation
        )
    except ValueError as exc:
        raise ModelError(
            f"{config.model_type} has no sequence-classification model in transformers: {exc}"
        ) from exc
    backbone = getattr(model, model.base_model_prefix)
    backbone.load_state_dict(getattr(lm, lm.base_model_prefix).state_dict())
    return model.to(lm.device)


class RewardStage(PreferenceStage):
    config_class = RewardConfig
    name = "reward"
    eval_loss_is_token_nll = False  # a pairwise ranking loss: exp() of it is no perplexity

    def prepare_model(self, model: PreTrainedModel) -> PreTrainedModel:
        """The classifier replaces the causal LM as the stage's model (before a LoRA adapter would wrap it)."""
        tokenizer = self.ctx.tokenizer
        if tokenizer.pad_token is None:  # the head finds each sequence's end by its padding
            tokenizer.pad_token = tokenizer.eos_token
        set_seed(self.ctx.cfg.seed)  # the new head's initial weights depend only on the seed
        return sequence_classifier(model, tokenizer.pad_token_id)

    def build_trainer(self, args_kwargs: dict[str, Any], train_ds, eval_ds, callbacks: list) -> RewardTrainer:
        p: RewardParams = self.ctx.params
        tokenizer = self.ctx.tokenizer
        model = self.ctx.model
        args = self.config_class(
            # TRL declares the tokenized columns it needs; dropping the message lists keeps batches small.
            **{**args_kwargs, "remove_unused_columns": True},
            max_length=self.ctx.cfg.data.max_length,
            **p.trl_kwargs(),
        )
        trainer = hooked(RewardTrainer)(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tokenizer,
            callbacks=callbacks,
            minigpt_stage=self,
        )
        self.check_kept(trainer, len(train_ds))
        return trainer


@torch.no_grad()
def score(model: PreTrainedModel, tokenizer, conversations: list[list[dict[str, str]]]) -> torch.Tensor:
    """Rewards of whole conversations (prompt + answer), one float each: what PPO or an evaluation calls."""
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    return model(**batch).logits.squeeze(-1).float()
