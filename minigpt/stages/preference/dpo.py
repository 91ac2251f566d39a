"""Direct Preference Optimization on TRL's DPOTrainer, from the previous stage's model against a frozen copy.

TRL 1.16 offers one length limit (``max_length``, prompt + completion, cut from the end) and no
reference-free mode, so neither a prompt/completion split nor ``reference_free`` is a field here.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from trl import DPOConfig, DPOTrainer

from minigpt.errors import ConfigError
from minigpt.lora import is_peft, trains_adapter_only
from minigpt.registry import STAGES
from minigpt.stages.preference.preference_stage import PreferenceStage
from minigpt.stages.trainer_hooks import MiniGPTTrainerMixin
from minigpt.typed_config import Strict

# The loss variants of trl/trainer/dpo_config.py (1.16); several may be combined with ``loss_weights``.
LossType = Literal[
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
]
FDivergence = Literal["reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"]
# TRL rejects the other losses with a non-default f-divergence (they have no valid generalization).
_F_DIVERGENCE_LOSSES = {"sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft"}


class DPOParams(Strict):
    beta: float = Field(0.1, gt=0)
    """Strength of the pull towards the reference model (IPO: its τ)."""
    loss_type: list[LossType] = ["sigmoid"]
    """One loss or several (summed with ``loss_weights``); a single name is accepted."""
    loss_weights: list[float] | None = None
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    """Robust DPO: probability a label is flipped; EXO (``exo_pair``, needs > 0): its ε; also used by aot."""
    f_divergence_type: FDivergence = "reverse_kl"
    ld_alpha: float | None = Field(None, ge=0.0, le=1.0)
    """LD-DPO weight of the tokens past the shorter completion (None: plain DPO)."""
    use_weighting: bool = False
    """WPO weighting of pairs by the policy's length-normalized probability."""
    precompute_ref_log_probs: bool = False
    """Score the data with the reference once before training; no reference model is kept in memory."""
    sync_ref_model: bool = False
    """TR-DPO: mix the policy into the reference every ``ref_model_sync_steps`` steps."""
    ref_model_sync_steps: int = Field(512, gt=0)
    ref_model_mixup_alpha: float = Field(0.6, ge=0.0, le=1.0)

    @field_validator("loss_type", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> DPOParams:
        # Caught here so a bad config fails at load time with its file and line, not minutes into a run.
        if not self.loss_type:
            raise ValueError("loss_type: give at least one loss")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(
                f"loss_weights has {len(self.loss_weights)} values for {len(self.loss_type)} losses"
            )
        if "exo_pair" in self.loss_type and self.label_smoothing == 0.0:
            raise ValueError("loss_type exo_pair needs label_smoothing > 0 (the EXO paper suggests 1e-3)")
        if self.f_divergence_type != "reverse_kl" and not set(self.loss_type) <= _F_DIVERGENCE_LOSSES:
            raise ValueError(
                f"f_divergence_type {self.f_divergence_type} works only with the losses "
                f"{sorted(_F_DIVERGENCE_LOSSES)}"
            )
        if self.use_weighting and {"aot", "aot_unpaired"} & set(self.loss_type):
            raise ValueError("use_weighting does not work with the aot losses (they sort the pairs)")
        if self.sync_ref_model and self.precompute_ref_log_probs:
            raise ValueError("sync_ref_model changes the reference, so its log-probs cannot be precomputed")
        return self


class MiniGPTDPOTrainer(MiniGPTTrainerMixin, DPOTrainer):
    """TRL's DPOTrainer with the shared token counting and metric hooks."""


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The reference policy: the model as it is before training, without gradients. Built explicitly because
    TRL would otherwise reload the model by its name, which fails for a preset (no name) and offline."""
    ref = copy.deepcopy(model)
    if is_peft(ref):  # a plain model for TRL (it patches the backbone's forward): the fresh adapter is zero
        ref = ref.merge_and_unload()
    ref.requires_grad_(False)
    return ref.eval()


@STAGES.register("dpo")
class DPOStage(PreferenceStage):
    name = "dpo"
    Params = DPOParams
    # TRL logs rewards/* and logps/* as is (kept by the rename rules); its eval loss is a preference loss.
    metric_renames = {
        "eval_loss": "eval/preference_loss",
        "eval_rewards/accuracies": "eval/preference_accuracy",
        "eval_rewards/margins": "eval/preference_margin",
    }

    def build_trainer(self, args_kwargs: dict[str, Any], train_ds, eval_ds, callbacks: list) -> DPOTrainer:
        p: DPOParams = self.ctx.params
        args = DPOConfig(
            # TRL declares the tokenized columns it needs; dropping the message lists keeps batches small.
            **{**args_kwargs, "remove_unused_columns": True},
            max_length=self.ctx.cfg.data.max_length,
            beta=p.beta,
            loss_type=list(p.loss_type),
            loss_weights=p.loss_weights,
            label_smoothing=p.label_smoothing,
            f_divergence_type=p.f_divergence_type,
            ld_alpha=p.ld_alpha,
            use_weighting=p.use_weighting,
            precompute_ref_log_probs=p.precompute_ref_log_probs,
            sync_ref_model=p.sync_ref_model,
            ref_model_sync_steps=p.ref_model_sync_steps,
            ref_model_mixup_alpha=p.ref_model_mixup_alpha,
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
        trainer = MiniGPTDPOTrainer(
            model=self.ctx.model,
            ref_model=ref,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=self.ctx.tokenizer,
            callbacks=callbacks,
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
