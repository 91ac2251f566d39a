"""SPO's persistent per-prompt value tracker (Single-stream Policy Optimization, Xu & Ding, arXiv 2509.13232).

What the paper specifies (its method section: KL-adaptive value tracker, global advantage normalisation,
prioritised sampling; Algorithm 1), as implemented here:

- Each prompt ``x`` keeps a Beta(α, β) posterior of its success probability; the baseline is its mean
  ``v̂ = α / (α + β)``. Observing a reward ``r ∈ [0, 1]``: ``α ← ρ·α + r``, ``β ← ρ·β + (1 − r)``, so old
  observations fade at rate ρ. Equivalently ``v̂ ← v̂ + η(r − v̂)`` with ``η = 1 / (ρ·N_eff + 1)`` and
  ``N_eff = α + β`` (the effective sample size).
- ``ρ = 2^(−D / D_half)`` clipped to ``[ρ_min, ρ_max]``, D the KL divergence between the current policy and
  the one that last acted on the prompt (a policy that moved by ``D_half`` halves the weight of the past).
  Defaults ``D_half = 0.06``, ``ρ_min = 0.875``, ``ρ_max = 0.96`` (memories of 8 and 25 visits), the values
  of the authors' released recipe (verl-recipe ``spo``).
- A new prompt is initialised from ``n0`` samples with mean ``v̂0`` as ``α = N0·v̂0``, ``β = N0·(1 − v̂0)``,
  ``N0 = 1 / (1 − ρ_min)``: the effective sample size the tracker settles at under the strongest forgetting,
  so the first observations after it do not jerk the estimate about.
- The raw advantage ``r − v̂`` uses v̂ from *before* the observation (independent of the action: unbiased);
  the batch's advantages are then standardised, mean subtracted and divided by the standard deviation.
- Prompts are drawn ∝ ``sqrt(v̂(1 − v̂)) / N_eff^γ + ε`` (Bernoulli standard deviation: prompts solved about
  half the time teach most; ``γ ∈ [0, 1]`` favours prompts whose estimate rests on few observations; ε keeps
  every prompt reachable). ``ε = 0.05``; the released recipe uses ``γ = 0``, our default.

How D is measured here (see :func:`policy_drift`): the tracker remembers the prompt's last completion and its
per-token log-probs under the policy that sampled it; at the next visit the current policy scores that same
completion. Without initial samples a prompt starts from a Beta prior (default Beta(1, 1):
``v̂ = 0.5``, the highest sampling weight, so unseen prompts come early).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class TrackerConfig:
    rho_min: float = 0.875
    rho_max: float = 0.96
    d_half: float = 0.06
    rho: float | None = None
    """A fixed forgetting factor instead of the KL-adaptive one."""
    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    init_strength: float | None = None
    """N0, the pseudo-count of an initialisation from samples; default ``1 / (1 − rho_min)``."""
    sampling_epsilon: float = 0.05
    sampling_gamma: float = 0.0
    """γ of the sampling weight's ``N_eff^γ`` divisor (0: the Bernoulli standard deviation alone)."""

    @property
    def n0(self) -> float:
        return self.init_strength if self.init_strength is not None else 1.0 / (1.0 - self.rho_min)


class ValueTracker:
    """Beta posteriors for ``n`` prompts (keyed by dataset position), plus each prompt's last completion."""

    def __init__(self, n: int, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self.alpha = torch.full((n,), self.config.prior_alpha, dtype=torch.float64)
        self.beta = torch.full((n,), self.config.prior_beta, dtype=torch.float64)
        self.seen = torch.zeros(n, dtype=torch.bool)
        self.memory: dict[int, tuple[list[int], list[float]]] = {}
        """prompt → (its last completion's token ids, their log-probs under the policy that sampled them)."""

    def __len__(self) -> int:
        return len(self.alpha)

    def values(self, index: Tensor | None = None) -> Tensor:
        """v̂ = α / (α + β) (all prompts, or those at ``index``)."""
        alpha, beta = (self.alpha, self.beta) if index is None else (self.alpha[index], self.beta[index])
        return alpha / (alpha + beta)

    def initialise(self, index: Tensor, mean_rewards: Tensor) -> None:
        """First sight from samples: ``α = N0·v̂0``, ``β = N0·(1 − v̂0)``."""
        v0 = mean_rewards.to(torch.float64).clamp(0.0, 1.0)
        self.alpha[index] = self.config.n0 * v0
        self.beta[index] = self.config.n0 * (1.0 - v0)
        self.seen[index] = True

    def forgetting(self, kl: Tensor) -> Tensor:
        """ρ per prompt: ``clip(2^(−D / D_half), ρ_min, ρ_max)``, or the fixed ``rho``."""
        kl = kl.to(torch.float64)
        if self.config.rho is not None:
            return torch.full_like(kl, self.config.rho)
        rho = torch.pow(2.0, -kl.clamp(min=0.0) / self.config.d_half)
        return rho.clamp(self.config.rho_min, self.config.rho_max)

    def update(self, index: Tensor, rewards: Tensor, rho: Tensor) -> None:
        """``α ← ρα + r``, ``β ← ρβ + (1 − r)`` for each observation, in order (a prompt may repeat)."""
        rewards, rho = rewards.to(torch.float64), rho.to(torch.float64)
        for i, r, f in zip(index.tolist(), rewards.tolist(), rho.tolist(), strict=True):
            self.alpha[i] = f * self.alpha[i] + r
            self.beta[i] = f * self.beta[i] + (1.0 - r)
            self.seen[i] = True

    def remember(self, index: list[int], ids: list[list[int]], logps: list[list[float]]) -> None:
        for i, seq, lp in zip(index, ids, logps, strict=True):
            self.memory[int(i)] = (list(seq), list(lp))

    def weights(self) -> Tensor:
        """Prioritised sampling weights ``sqrt(v̂(1 − v̂)) / N_eff^γ + ε`` (not normalised)."""
        v = self.values()
        spread = torch.sqrt((v * (1.0 - v)).clamp(min=0.0))
        if self.config.sampling_gamma:
            spread = spread / (self.alpha + self.beta).pow(self.config.sampling_gamma)
        return spread + self.config.sampling_epsilon

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` prompt positions drawn ∝ weights, without replacement unless ``n`` exceeds the prompts."""
        return torch.multinomial(self.weights().float(), n, replacement=n > len(self), generator=generator)

    # ------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict[str, Any]:
        """Tensors only (loadable with ``torch.load(weights_only=True)``); memories flattened."""
        keys = sorted(self.memory)
        lengths = [len(self.memory[k][0]) for k in keys]
        return {
            "alpha": self.alpha.clone(),
            "beta": self.beta.clone(),
            "seen": self.seen.clone(),
            "memory_index": torch.tensor(keys, dtype=torch.long),
            "memory_lengths": torch.tensor(lengths, dtype=torch.long),
            "memory_ids": torch.tensor([t for k in keys for t in self.memory[k][0]], dtype=torch.long),
            "memory_logps": torch.tensor([x for k in keys for x in self.memory[k][1]], dtype=torch.float32),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["alpha"].shape != self.alpha.shape:
            raise ValueError(
                f"the checkpoint's tracker has {len(state['alpha'])} prompts, this dataset {len(self)}"
            )
        self.alpha, self.beta, self.seen = (
            state["alpha"].clone(),
            state["beta"].clone(),
            state["seen"].clone(),
        )
        ids, logps = state["memory_ids"].tolist(), state["memory_logps"].tolist()
        self.memory, start = {}, 0
        for key, length in zip(state["memory_index"].tolist(), state["memory_lengths"].tolist(), strict=True):
            self.memory[key] = (ids[start : start + length], logps[start : start + length])
            start += length


def normalise_advantages(advantages: Tensor, center: bool = True, eps: float = 1e-6) -> Tensor:
    """SPO's global normalisation ``(A − μ_B) / σ_B`` over the whole batch (σ the population standard
    deviation); ``center=False`` only divides. A batch of one (or of equal values) is only centred/kept,
    since there is no spread to divide by."""
    advantages = advantages.to(torch.float64)
    std = advantages.std(unbiased=False) if len(advantages) > 1 else torch.zeros((), dtype=torch.float64)
    if center:
        advantages = advantages - advantages.mean()
    return (advantages / std.clamp(min=eps) if std > eps else advantages).float()


def policy_drift(before: Tensor, now: Tensor, mask: Tensor, estimator: str = "abs_log_ratio") -> Tensor:
    """D per sequence: the mean over its valid tokens (``mask``) of a per-token divergence between the policy
    that sampled it (log-probs ``before``) and the current one (``now``).

    ``abs_log_ratio``: ``|log π_before − log π_now|``, how the authors' released recipe measures the drift
    that ``D_half = 0.06`` was set against. ``k3``: ``exp(now − before) − (now − before) − 1``, the unbiased,
    non-negative estimate of KL(π_before ‖ π_now) from samples of π_before; for small changes it is about half
    the squared log-ratio, far below the first, so with it ``D_half`` must be much smaller.
    """
    diff = now.to(torch.float64) - before.to(torch.float64)
    if estimator == "abs_log_ratio":
        per_token = diff.abs()
    elif estimator == "k3":
        per_token = torch.exp(diff) - diff - 1.0
    else:
        raise ValueError(f"unknown drift estimator {estimator!r} (abs_log_ratio, k3)")
    mask = mask.to(torch.float64)
    return (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def to_unit_interval(rewards: Tensor, low: float, high: float) -> Tensor:
    """Rewards mapped linearly from ``[low, high]`` to [0, 1] and clipped there (NaN → 0): the tracker's
    Beta update needs a success probability."""
    scaled = (rewards.to(torch.float64) - low) / (high - low)
    return torch.nan_to_num(scaled, nan=0.0).clamp(0.0, 1.0)
