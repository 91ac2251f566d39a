"""The ``algo:`` fields of the RL stages: sampling (every RL stage), the TRL group stages (grpo, rloo) and the
on-policy loop's stages (ppo, spo). Torch-free: a config is validated without importing torch or TRL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from minigpt.rewards import RewardSpec
from minigpt.stages.stage_params import TRLParams
from minigpt.typed_config import Strict

if TYPE_CHECKING:
    from minigpt.stages.rl.spo_tracker import TrackerConfig


class SamplingParams(Strict):
    """``algo:`` fields every RL stage shares (grpo and rloo on TRL, ppo and spo on the on-policy loop)."""

    rewards: list[RewardSpec] = []
    """Reward functions: ``[{name, weight, args, label}]``; a bare name means weight 1, no args."""
    max_prompt_length: int | None = Field(None, gt=0)
    """Prompts longer than this many tokens (chat template included) are dropped, or refused when
    ``data.overlong: error``. None: no limit."""
    max_completion_length: int = Field(256, gt=0)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    """0: no top-k filtering."""
    beta: float = Field(0.0, ge=0)
    """KL coefficient against the initial policy; 0 loads no reference model (and logs no ``train/kl``)."""
    epsilon: float = Field(0.2, gt=0)
    """Clip range of the policy ratio (lower side; also the upper one unless ``epsilon_high``)."""
    epsilon_high: float | None = Field(None, gt=0)
    cache_implementation: Literal["dynamic", "static"] = "dynamic"
    """KV cache of rollout generation. ``dynamic``: transformers' default, grown token by token. ``static``:
    preallocated for ``batch × (prompt + max_completion_length)``; on a GPU transformers then compiles the
    decoding step (torch.compile with CUDA graphs; the first generation pays the compile); on a CPU it runs
    uncompiled, no faster than dynamic (measured: equal to 8% slower). With ``max_prompt_length`` set the
    cache is sized ``max_prompt_length + max_completion_length`` from the first step, so prompts of any width
    reuse one compiled step; without it the cache grows to the longest prompt seen, each growth costing a
    recompile. Every distinct generation batch size (evaluation, a last partial batch) compiles once."""
    compile_generation: bool = True
    """With ``cache_implementation: static``, let transformers compile the decoding step on a GPU (TRL turns
    that off by default; this turns it back on); false keeps the static cache uncompiled."""

    @field_validator("rewards", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _compile_needs_static(self) -> SamplingParams:
        # transformers compiles only static caches: the flag would silently do nothing.
        if not self.compile_generation and self.cache_implementation != "static":
            raise ValueError("compile_generation: false only applies to cache_implementation: static")
        return self


class RLParams(SamplingParams, TRLParams):
    """``algo:`` fields of the group-sampling stages on TRL (grpo, rloo); each is a GRPOConfig/RLOOConfig field of
    the same name, except the ones the stage handles (the rewards become reward functions and weights; the
    cache goes to TRL's ``cache_implementation`` and ``generation_kwargs``; compiling is set on the built
    trainer; prompts are cut to ``max_prompt_length`` when the dataset is built)."""

    not_trl: ClassVar[frozenset[str]] = frozenset(
        {"rewards", "max_prompt_length", "cache_implementation", "compile_generation"}
    )

    rewards: list[RewardSpec] = Field(min_length=1)
    """Reward functions: ``[{name, weight, args, label}]``; a bare name means weight 1, no args."""
    num_generations: int = Field(8, ge=2)
    """Completions sampled per prompt (the group)."""
    num_generations_eval: int | None = Field(None, ge=1)
    """Completions per held-out prompt at evaluation; default ``num_generations``."""
    num_iterations: int = Field(1, ge=1)
    """Optimisation passes over each generated batch (μ)."""
    mask_truncated_completions: bool = False
    """Leave completions cut at ``max_completion_length`` out of the loss."""


# The loss types TRL 1.16's GRPOTrainer implements (trl/trainer/grpo_config.py, `loss_type`).
GRPOLossType = Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"]


class GRPOParams(RLParams):
    loss_type: GRPOLossType = "dapo"
    """How token losses are aggregated: dapo (TRL's default; active tokens in the accumulated batch), grpo
    (per sequence, length-biased), dr_grpo (a constant: max_completion_length), bnpo (active tokens in the
    local batch), cispo/sapo/vespo (other clipping/weighting schemes), luspo (needs sequence-level IS)."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Divide advantages by the std of the group, of the whole batch, or not at all (Dr. GRPO)."""
    multi_objective_aggregation: Literal["sum_then_normalize", "normalize_then_sum"] = "sum_then_normalize"
    """With several rewards: weight and sum then normalise (default), or normalise each first (GDPO)."""
    importance_sampling_level: Literal["token", "sequence"] = "token"
    """Policy ratio per token (GRPO) or per sequence (GSPO)."""

    @model_validator(mode="after")
    def _combination(self) -> GRPOParams:
        # Checked here so a bad pair fails when the config is read, not after the model is built.
        if self.loss_type == "luspo" and self.importance_sampling_level != "sequence":
            raise ValueError("loss_type 'luspo' needs importance_sampling_level: sequence")
        if self.loss_type == "vespo" and self.importance_sampling_level != "token":
            raise ValueError("loss_type 'vespo' needs importance_sampling_level: token")
        return self


class RLOOParams(RLParams):
    normalize_advantages: bool = False
    """Standardise advantages over each generation batch (mean 0, std 1)."""
    reward_clip_range: tuple[float, float] | None = None
    """Clip the summed reward to [min, max] before the baseline."""

    @model_validator(mode="after")
    def _clip_order(self) -> RLOOParams:
        if self.reward_clip_range is not None and self.reward_clip_range[0] >= self.reward_clip_range[1]:
            raise ValueError(f"reward_clip_range {list(self.reward_clip_range)}: min must be below max")
        return self


class OnPolicyParams(SamplingParams):
    """``algo:`` fields shared by ``ppo`` and ``spo``."""

    num_minibatches: int = Field(1, ge=1)
    """Minibatches (optimizer steps) per pass over a rollout of ``batch_size × grad_accum`` samples."""
    eval_sampling: bool = False
    """Sample at evaluation with the training temperature/top-p/top-k (seeded); default greedy."""


class PPOParams(OnPolicyParams):
    """``algo:`` fields of ``ppo`` (besides the shared ones: rewards, sampling, epsilon, num_minibatches)."""

    beta: float = Field(0.05, ge=0)
    """KL penalty per token in the reward (``−beta·(log π_old − log π_ref)``); 0 loads no reference."""
    reward_model: str | None = None
    """A folder written by the ``reward`` stage (AutoModelForSequenceClassification, one output): its logit
    on prompt + completion (rendered with the chat template) is a reward labelled ``reward_model``."""
    reward_model_weight: float = 1.0
    critic_init: str | None = None
    """Initialise the critic from a reward-model folder (its body and score head); default: the policy's
    body with a zero value head."""
    critic_lr: float | None = Field(None, gt=0)
    """The critic's learning rate (same schedule shape as the actor's); default ``train.lr``."""
    critic_max_grad_norm: float | None = Field(None, ge=0)
    """Gradient clipping of the critic; default ``train.max_grad_norm`` (0: none)."""
    ppo_epochs: int = Field(4, ge=1)
    """Passes over each rollout."""
    gamma: float = Field(1.0, ge=0, le=1)
    """Discount per token."""
    lam: float = Field(0.95, ge=0, le=1)
    """GAE λ."""
    vf_coef: float = Field(0.1, gt=0)
    """Weight of the value loss (in ``train/loss``; it scales the critic's gradients)."""
    cliprange_value: float | None = Field(0.2, gt=0)
    """Keep new values within this distance of the rollout's values in the loss; None: no clipping."""
    whiten_advantages: bool = True
    """Standardise advantages over the rollout's tokens."""
    target_kl: float | None = Field(None, gt=0)
    """Stop this rollout's remaining passes once a minibatch's approximate KL (k3, per token) exceeds it."""

    @model_validator(mode="after")
    def _reward_source(self) -> PPOParams:
        if not self.rewards and self.reward_model is None:
            raise ValueError(
                "ppo needs a reward: give algo.rewards (reward functions) and/or algo.reward_model "
                "(a folder written by the reward stage)"
            )
        return self


class SPOParams(OnPolicyParams):
    """``algo:`` fields of ``spo`` (besides the shared ones: rewards, sampling, beta, epsilon, num_minibatches)."""

    num_iterations: int = Field(1, ge=1)
    """Passes over each rollout (1: a plain policy-gradient step; more reuse it with the clipped ratio)."""
    epsilon_high: float | None = Field(0.28, gt=0)
    """Upper clip of the policy ratio: the paper's runs use Clip-Higher, 0.2 below and 0.28 above."""
    rho_min: float = Field(0.875, gt=0, le=1)
    rho_max: float = Field(0.96, gt=0, le=1)
    d_half: float = Field(0.06, gt=0)
    """Drift D since a prompt's last visit (per token, as ``drift_estimator`` measures it) that halves the
    weight of its past observations."""
    drift_estimator: Literal["abs_log_ratio", "k3"] = "abs_log_ratio"
    """How D is measured on the prompt's last completion: the mean ``|Δ log π|`` per token (the authors'
    recipe, what ``d_half`` 0.06 was set against) or the k3 estimate of KL(π_last ‖ π_now) (much smaller for
    the same drift: lower ``d_half`` with it)."""
    rho: float | None = Field(None, gt=0, le=1)
    """A fixed forgetting factor instead of the KL-adaptive one (saves the extra forward pass)."""
    init_samples: int = Field(8, ge=0)
    """Completions sampled (once) to initialise a prompt at first sight, the paper's n0; 0: start from
    ``prior`` instead (cheaper, but a prior far from the true success rate biases the first advantages)."""
    init_strength: float | None = Field(None, gt=0)
    """Pseudo-count N0 of that initialisation; default ``1 / (1 − rho_min)`` as in the paper."""
    prior: tuple[float, float] = (1.0, 1.0)
    """Beta(α0, β0) of a prompt not yet initialised from samples."""
    prioritized_sampling: bool = True
    """Draw prompts ∝ ``sqrt(v̂(1 − v̂)) / N_eff^sampling_gamma + sampling_epsilon``; false: the usual
    shuffled epochs."""
    sampling_epsilon: float = Field(0.05, ge=0)
    sampling_gamma: float = Field(0.0, ge=0, le=1)
    """Down-weights prompts whose tracker already rests on many observations (N_eff = α + β)."""
    reward_range: tuple[float, float] = (0.0, 1.0)
    """The weighted reward's [worst, best]: mapped to [0, 1] (and clipped) for the tracker and advantage."""
    center_advantages: bool = True
    """Subtract the batch mean before dividing by the batch standard deviation, as the paper does; false
    only divides."""

    @model_validator(mode="after")
    def _consistent(self) -> SPOParams:
        if not self.rewards:
            raise ValueError("spo needs algo.rewards (at least one reward function)")
        if self.rho_min > self.rho_max:
            raise ValueError(f"rho_min {self.rho_min} must not exceed rho_max {self.rho_max}")
        if self.reward_range[0] >= self.reward_range[1]:
            raise ValueError(
                f"reward_range {list(self.reward_range)}: the first value must be below the second"
            )
        if min(self.prior) <= 0:
            raise ValueError(f"prior {list(self.prior)}: both pseudo-counts must be positive")
        return self

    def tracker_config(self) -> TrackerConfig:
        from minigpt.stages.rl.spo_tracker import TrackerConfig  # torch: only when the stage runs

        return TrackerConfig(
            rho_min=self.rho_min,
            rho_max=self.rho_max,
            d_half=self.d_half,
            rho=self.rho,
            prior_alpha=self.prior[0],
            prior_beta=self.prior[1],
            init_strength=self.init_strength,
            sampling_epsilon=self.sampling_epsilon,
            sampling_gamma=self.sampling_gamma,
        )
