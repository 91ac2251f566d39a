"""SPO — Single-stream Policy Optimization (Xu & Ding, arXiv 2509.13232), on the hand-written on-policy loop
(``minigpt.stages.rl.onpolicy.onpolicy_loop``; TRL's GRPO/RLOO need at least two samples per prompt, SPO takes one).

One completion per prompt, no groups. The baseline is a persistent per-prompt value tracker
(``minigpt.stages.rl.spo_tracker``, which lists the paper's equations): a Beta posterior of the prompt's success
probability whose past is forgotten faster when the policy has moved further (KL-adaptive ρ). A sample's
advantage is its reward minus the tracker's estimate *before* this observation, standardised over the whole
batch (mean subtracted, divided by the standard deviation); the loss is PPO's clipped policy gradient on
every token with that advantage (token mean; plus ``beta``·KL to the initial policy when asked; the paper
uses none). Prompts are drawn with priority ``sqrt(v̂(1 − v̂)) / N_eff^γ + ε``: those the policy solves about
half the time (most to learn) come most often. Defaults follow the paper and the authors' released recipe:
ρ in [0.875, 0.96], ``D_half`` 0.06 on the recipe's drift measure, n0 = 8 initial samples, ε = 0.05, γ = 0,
clip range 0.2 / 0.28 (Clip-Higher), no KL penalty.

Not MiniMind's "SPO": MiniMind's trainer of that name keeps a single global moving-average baseline of the
reward for all prompts. Here every prompt has its own Bayesian tracker with KL-adaptive forgetting, the
advantage is normalised across the batch, and the prompt curriculum reads the tracker.

Rewards outside [0, 1] are mapped to [0, 1] through ``algo.reward_range`` and clipped there before they reach
the tracker and the advantage (the Beta update needs a probability); ``train/reward`` logs the raw value.
The paper initialises every prompt offline before training; here a prompt is initialised at first sight
from ``init_samples`` completions of the current policy, so prompts never drawn cost nothing.
The prioritised draw happens inside the training step (not in the DataLoader, which prefetches a batch ahead
of the tracker's updates) from a generator seeded with ``seed``; the tracker and that generator's state are
saved in every checkpoint, so a resumed run draws the same prompts as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from minigpt.stages.rl.onpolicy.onpolicy_loop import OnPolicyTrainer
from minigpt.stages.rl.onpolicy.onpolicy_ops import clipped_policy_losses, kl_k3, pad_right
from minigpt.stages.rl.onpolicy.onpolicy_stage import OnPolicyStage
from minigpt.stages.rl.onpolicy.rollout import INDEX_COLUMN, Rollout, sequence_logps
from minigpt.stages.rl.spo_tracker import (
    ValueTracker,
    normalise_advantages,
    policy_drift,
    to_unit_interval,
)
from minigpt.stages.trainer_hooks import hooked


@dataclass
class _Observation:
    """One process's samples of a step, as the tracker needs them (gathered across processes)."""

    index: list[int]
    rewards: Tensor
    """In [0, 1] (``algo.reward_range`` mapped and clipped)."""
    kl: Tensor
    """KL since each prompt's last visit (0 for a first visit or with a fixed ``rho``)."""
    revisited: list[bool]
    new: list[int]
    """Prompts seen for the first time, with ``initial`` their mean initial-sample rewards (or None)."""
    initial: Tensor | None
    ids: list[list[int]]
    logps: list[list[float]]


class SPOAlgorithm(OnPolicyTrainer):
    """SPO on the shared loop (see the module docstring)."""

    def __init__(self, *, tracker: ValueTracker, **kwargs: Any):
        super().__init__(**kwargs)
        self.tracker = tracker
        self.update_epochs = self.params.num_iterations
        self.sampler_rng = torch.Generator().manual_seed(self.args.seed)
        self._drawn: list[int] = []
        self._draw_step = -1

    def _gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order (the tracker must stay identical on all of them)."""
        if self.accelerator.num_processes == 1:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def select_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.params.prioritized_sampling:
            return rows
        if self._draw_step != self.state.global_step:  # one draw per optimizer step, for every process
            per_process = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
            drawn = self.tracker.draw(per_process * self.accelerator.num_processes, self.sampler_rng)
            rank = self.accelerator.process_index
            self._drawn = drawn[rank * per_process : (rank + 1) * per_process].tolist()
            self._draw_step = self.state.global_step
        take, self._drawn = self._drawn[: len(rows)], self._drawn[len(rows) :]
        return [self.train_dataset[i] for i in take]

    def _rewards01(self, rollout: Rollout) -> Tensor:
        low, high = self.params.reward_range
        return to_unit_interval(rollout.sample["rewards"].cpu(), low, high)

    def _initial_values(self, rows: list[dict[str, Any]]) -> Tensor:
        """Mean [0, 1] reward of ``init_samples`` fresh completions per prompt (first sight)."""
        k = self.params.init_samples
        repeated = [row for row in rows for _ in range(k)]
        rollout = self.make_rollout(repeated, train=False)
        self.count_tokens(rollout)
        return self._rewards01(rollout).view(len(rows), k).mean(1)

    def _kl_since_last_visit(self, rollout: Rollout, index: list[int]) -> Tensor:
        """Per sample: the drift D between the policy that last sampled the prompt and the current one, on the
        prompt's remembered completion (0 if none)."""
        kl = torch.zeros(len(index), dtype=torch.float64)
        have = [i for i, key in enumerate(index) if key in self.tracker.memory]
        if not have:
            return kl
        device = rollout.prompt_ids.device
        memories = [self.tracker.memory[index[i]] for i in have]
        ids = pad_right([torch.tensor([m[0]], dtype=torch.long) for m in memories], self.pad_id).to(device)
        before = pad_right([torch.tensor([m[1]], dtype=torch.float32) for m in memories], 0.0).to(device)
        mask = pad_right([torch.ones(1, len(m[0]), dtype=torch.long) for m in memories], 0).to(device)
        sel = torch.tensor(have, device=device)
        past = Rollout(
            [rollout.rows[i] for i in have],
            rollout.prompt_ids[sel],
            rollout.prompt_mask[sel],
            ids,
            mask,
            self.pad_id,
        )
        policy = self.accelerator.unwrap_model(self.model)
        with torch.no_grad(), self.compute_loss_context_manager():
            now = sequence_logps(
                policy,
                past,
                self.params.temperature,
                self._keep_logits,
                self.args.per_device_train_batch_size,
            )
        kl[have] = policy_drift(before, now, mask, self.params.drift_estimator).cpu()
        return kl

    def _observe(self, rollout: Rollout) -> _Observation:
        """What this process saw this step (before the tracker learns from it)."""
        index = [int(row[INDEX_COLUMN]) for row in rollout.rows]
        new = [i for i, key in enumerate(index) if not bool(self.tracker.seen[key])]
        initial = None
        if new and self.params.init_samples:
            initial = self._initial_values([rollout.rows[i] for i in new])
        adaptive = self.params.rho is None
        kl = (
            self._kl_since_last_visit(rollout, index)
            if adaptive
            else torch.zeros(len(index), dtype=torch.float64)
        )
        mask = rollout.completion_mask
        lengths = mask.sum(1).tolist()
        return _Observation(
            index=index,
            rewards=self._rewards01(rollout),
            kl=kl,
            revisited=[key in self.tracker.memory for key in index],
            new=[index[i] for i in new],
            initial=initial,
            ids=[row[:n].tolist() for row, n in zip(rollout.completion_ids, lengths, strict=True)],
            logps=[row[:n].tolist() for row, n in zip(rollout.token["old_logps"], lengths, strict=True)],
        )

    @torch.no_grad()
    def prepare_update(self, rollout: Rollout) -> None:
        """Advantages from the tracker, then the tracker learns this step's rewards. With several processes
        every one applies everybody's observations in rank order, so the trackers stay identical."""
        everyone = self._gather(self._observe(rollout))
        if self.reward_faulted():  # a first-sight sample's reward failed: skip the step, tracker untouched
            return
        tracker = self.tracker
        for obs in everyone:  # first sight: initialise from the extra samples
            if obs.initial is not None:
                tracker.initialise(torch.tensor(obs.new), obs.initial)
        # Baselines before this step's observations; normalised over the whole (all-process) batch.
        baselines = [tracker.values(torch.tensor(obs.index)) for obs in everyone]
        raw = torch.cat([obs.rewards - b for obs, b in zip(everyone, baselines, strict=True)])
        advantages = normalise_advantages(raw, self.params.center_advantages)
        rank = self.accelerator.process_index if len(everyone) > 1 else 0
        start = sum(len(obs.index) for obs in everyone[:rank])
        mine = advantages[start : start + len(rollout)]
        rhos = []
        for obs in everyone:
            rho = tracker.forgetting(obs.kl)
            tracker.update(torch.tensor(obs.index), obs.rewards, rho)
            tracker.remember(obs.index, obs.ids, obs.logps)
            rhos.append(rho)
        mask = rollout.completion_mask
        rollout.token["advantages"] = mine.to(mask.device)[:, None] * mask
        state = self.minigpt_state
        state.accumulate("train/spo/baseline", float(torch.cat(baselines).mean()))
        state.accumulate("train/spo/rho", float(torch.cat(rhos).mean()))
        kl = torch.cat([obs.kl[torch.tensor(obs.revisited, dtype=torch.bool)] for obs in everyone])
        if len(kl):
            state.accumulate("train/spo/drift", float(kl.mean()))

    def minibatch_loss(self, model, chunk: Rollout, n_tokens: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        p, mask, tok = self.params, chunk.completion_mask.float(), chunk.token
        logps = sequence_logps(model, chunk, p.temperature, self._keep_logits)
        losses, clipped, approx_kl = clipped_policy_losses(
            logps, tok["old_logps"], tok["advantages"], p.epsilon, p.epsilon_high or p.epsilon
        )
        loss = (losses * mask).sum() / n_tokens
        stats = {
            "policy_loss": loss.detach(),
            "clipfrac": (clipped * mask).sum() / n_tokens,
            "approx_kl": (approx_kl * mask).sum() / n_tokens,
        }
        if "ref_logps" in tok:
            kl = (kl_k3(logps, tok["ref_logps"]) * mask).sum() / n_tokens
            loss = loss + p.beta * kl
        return loss, stats

    def algo_state(self) -> dict[str, Any]:
        return {"tracker": self.tracker.state_dict(), "sampler_rng": self.sampler_rng.get_state()}

    def load_algo_state(self, state: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state["tracker"])
        self.sampler_rng.set_state(state["sampler_rng"])


class SPOStage(OnPolicyStage):
    name = "spo"
    trainer_class = hooked(SPOAlgorithm)

    def trainer_kwargs(self, train_ds) -> dict[str, Any]:
        return {"tracker": ValueTracker(len(train_ds), self.ctx.params.tracker_config())}
