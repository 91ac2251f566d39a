"""Tensor helpers of the hand-written on-policy loop (``minigpt.stages.rl.onpolicy.onpolicy_loop``): padding, per-token
log-probabilities, masked statistics, GAE and the clipped PPO losses.

Kept free of any trainer state so each piece can be checked against hand-computed values. Conventions: a
completion tensor is ``[n, L]``, right-padded, with a 0/1 ``mask`` (1 for every generated token up to and
including the end-of-sequence token); prompts are ``[n, P]``, left-padded, so every completion starts at
column ``P`` of the concatenated sequence.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pad_left(seqs: list[list[int]], pad: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """``[n, max_len]`` ids padded on the left with ``pad`` and their 0/1 attention mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        if seq:
            ids[i, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[i, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


def pad_right(rows: list[Tensor], value: float | int) -> Tensor:
    """Stack 2-D tensors of equal height but different widths, padding on the right."""
    width = max(r.shape[1] for r in rows)
    return torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1]), value=value) for r in rows])


def pad_left_2d(rows: list[Tensor], value: float | int) -> Tensor:
    """Stack 2-D tensors of equal height but different widths, padding on the left."""
    width = max(r.shape[1] for r in rows)
    return torch.cat([torch.nn.functional.pad(r, (width - r.shape[1], 0), value=value) for r in rows])


def completion_mask(completion_ids: Tensor, eos_id: int) -> Tensor:
    """1 for each token up to and including the first end-of-sequence token, 0 after it."""
    is_eos = (completion_ids == eos_id).long()
    before = torch.cumsum(is_eos, dim=1) - is_eos  # number of eos strictly before each position
    return (before == 0).long()


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions that skip left padding: what ``generate`` uses, so scoring matches sampling."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def token_logps(logits: Tensor, targets: Tensor, temperature: float = 1.0) -> Tensor:
    """log p(target) under ``softmax(logits / temperature)``; ``logits[:, t]`` predicts ``targets[:, t]``.

    Sampling divided the logits by the temperature, so the behaviour policy whose ratio PPO takes is the
    tempered one; every log-prob of the loop (old, new, reference) goes through here for that reason.
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    picked = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: Tensor, mask: Tensor) -> Tensor:
    """Population variance of the masked entries."""
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x − mean) / std over the masked entries (mean kept when ``shift_mean`` is false); 0 outside."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation per token (Schulman et al. 2016) over right-padded completions.

    ``delta_t = r_t + γ·V_{t+1} − V_t`` with ``V`` = 0 after the last valid token, and
    ``A_t = delta_t + γλ·A_{t+1}``; returns ``(advantages, returns = advantages + values)``, 0 where masked.
    """
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    width = rewards.shape[1]
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(width)):
        next_value = values[:, t + 1] if t + 1 < width else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last valid token of each row (0 for an empty row)."""
    return (mask.sum(dim=1) - 1).clamp(min=0).long()


def clipped_policy_losses(
    logps: Tensor, old_logps: Tensor, advantages: Tensor, eps_low: float, eps_high: float
) -> tuple[Tensor, Tensor, Tensor]:
    """PPO's clipped surrogate per token: ``max(−A·ratio, −A·clip(ratio, 1−ε_low, 1+ε_high))``.

    Returns (losses, clipped (1 where the clipped branch was taken), approx KL ``(ratio−1) − log ratio``,
    the non-negative k3 estimate of KL(old ‖ new) per token).
    """
    log_ratio = logps - old_logps
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    losses = torch.maximum(unclipped, clipped)
    was_clipped = (clipped > unclipped).float()
    approx_kl = (ratio - 1.0) - log_ratio
    return losses, was_clipped, approx_kl


def clipped_value_losses(values: Tensor, old_values: Tensor, returns: Tensor, clip: float | None) -> Tensor:
    """0.5·max((V − R)², (V_clipped − R)²) per token, ``V_clipped`` kept within ``clip`` of the rollout's
    values (no clipping when ``clip`` is None)."""
    plain = (values - returns) ** 2
    if clip is None:
        return 0.5 * plain
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * torch.maximum(plain, (clipped_values - returns) ** 2)


def kl_k3(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(π ‖ π_ref) from samples of π: ``exp(ref − logp) − (ref − logp) − 1`` ≥ 0."""
    diff = ref_logps - logps
    return torch.exp(diff) - diff - 1.0


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 − Var(R − V) / Var(R) over valid tokens: 1 is a perfect critic, ≤ 0 one no better than a constant."""
    var_returns = masked_var(returns, mask)
    return 1.0 - masked_var(returns - values, mask) / var_returns.clamp(min=1e-8)
