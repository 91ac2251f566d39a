"""The ``algo:`` fields of the preference stages (dpo, reward). Torch-free: a config is validated without
importing TRL."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from minigpt.stages.stage_params import TRLParams

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


class DPOParams(TRLParams):
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


class RewardParams(TRLParams):
    center_rewards_coefficient: float | None = Field(None, ge=0.0)
    """Pull rewards towards mean zero (Eq. 2 of arXiv 2312.09244; 0.01 is typical). None: off."""
