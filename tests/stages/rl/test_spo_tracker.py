"""SPO's value tracker against values computed by hand from the paper's equations (arXiv 2509.13232):
initialisation α0 = N0·v̂0, β0 = N0·(1 − v̂0) with N0 = 1/(1 − ρ_min); the discounted Beta update and its
adaptive-EMA form; ρ = clip(2^(−D/D_half), ρ_min, ρ_max) and the drift D; the batch standardisation
(A − μ_B)/σ_B; reward mapping; sampling weights sqrt(v̂(1 − v̂))/N_eff^γ + ε and seeded draws (with a
statistical tolerance); and the checkpoint round trip."""

from __future__ import annotations

import math

import pytest
import torch

from minigpt.stages.rl.spo_tracker import (
    TrackerConfig,
    ValueTracker,
    normalise_advantages,
    policy_drift,
    to_unit_interval,
)


def test_prior_and_initialisation_from_samples():
    tracker = ValueTracker(3, TrackerConfig(prior_alpha=1.0, prior_beta=3.0))
    torch.testing.assert_close(tracker.values(), torch.full((3,), 0.25, dtype=torch.float64))
    assert not tracker.seen.any()
    # N0 = 1 / (1 - rho_min) = 1 / 0.125 = 8: v0 = 0.25 -> alpha = 2, beta = 6
    tracker.initialise(torch.tensor([1]), torch.tensor([0.25]))
    assert tracker.alpha[1].item() == pytest.approx(2.0) and tracker.beta[1].item() == pytest.approx(6.0)
    assert tracker.seen.tolist() == [False, True, False]
    strong = ValueTracker(1, TrackerConfig(init_strength=4.0))
    strong.initialise(torch.tensor([0]), torch.tensor([0.5]))
    assert (strong.alpha.item(), strong.beta.item()) == (2.0, 2.0)


def test_one_update_with_a_fixed_forgetting_factor():
    tracker = ValueTracker(2, TrackerConfig(rho=0.5))
    tracker.initialise(torch.tensor([0, 1]), torch.tensor([0.25, 0.5]))  # (2, 6) and (4, 4)
    rho = tracker.forgetting(torch.tensor([3.0, 0.0]))  # a fixed rho ignores the KL
    torch.testing.assert_close(rho, torch.tensor([0.5, 0.5], dtype=torch.float64))
    tracker.update(torch.tensor([0, 1]), torch.tensor([1.0, 0.3]), rho)
    # prompt 0: alpha = .5*2 + 1 = 2, beta = .5*6 + 0 = 3 -> v = 0.4
    # prompt 1: alpha = .5*4 + .3 = 2.3, beta = .5*4 + .7 = 2.7 -> v = 0.46
    torch.testing.assert_close(tracker.alpha, torch.tensor([2.0, 2.3], dtype=torch.float64))
    torch.testing.assert_close(tracker.beta, torch.tensor([3.0, 2.7], dtype=torch.float64))
    torch.testing.assert_close(tracker.values(), torch.tensor([0.4, 0.46], dtype=torch.float64))
    # The paper's adaptive-EMA reading of the same step: v <- v + (r - v) / (rho * N_eff + 1), N_eff = 8.
    eta = 1 / (0.5 * 8 + 1)
    expected = torch.tensor([0.25 + eta * (1.0 - 0.25), 0.5 + eta * (0.3 - 0.5)], dtype=torch.float64)
    torch.testing.assert_close(tracker.values(), expected)


def test_kl_adaptive_forgetting_and_its_clipping():
    tracker = ValueTracker(1, TrackerConfig(rho_min=0.5, rho_max=0.95, d_half=0.1))
    kl = torch.tensor([0.0, 0.1, 0.2, 0.1 * math.log2(1 / 0.8), 5.0, -1.0])
    rho = tracker.forgetting(kl)
    # 2^(-D/D_half): 1 -> clipped to 0.95; 0.5; 0.25 -> clipped to 0.5; exactly 0.8; tiny -> 0.5; a negative
    # estimate counts as no change (0.95).
    torch.testing.assert_close(rho, torch.tensor([0.95, 0.5, 0.5, 0.8, 0.5, 0.95], dtype=torch.float64))
    defaults = ValueTracker(1).forgetting(torch.tensor([0.0, 0.06, 1.0]))
    torch.testing.assert_close(defaults, torch.tensor([0.96, 0.875, 0.875], dtype=torch.float64))
    # The paper's setting (D_half 0.06, rho in [0.875, 0.96]): D = 0.06 * log2(1/0.9) is unclipped 0.9.
    torch.testing.assert_close(
        ValueTracker(1).forgetting(torch.tensor([0.06 * math.log2(1 / 0.9)], dtype=torch.float64)),
        torch.tensor([0.9], dtype=torch.float64),
    )
    # Repeated updates with reward 1: the posterior mean approaches 1 at the forgetting rate.
    tracker.update(torch.tensor([0, 0]), torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.5]))
    # (1, 1) -> (1.5, 0.5) -> (1.75, 0.25): v = 0.875
    assert tracker.values().item() == pytest.approx(0.875)


def test_policy_drift_between_visits():
    before = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, 0.0]])
    now = torch.tensor([[-1.2, -1.9, -9.0], [-0.3, -0.9, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])  # the first sequence has two tokens
    # Mean |log-ratio| over valid tokens: (0.2 + 0.1) / 2 and (0 + 0.2 + 0) / 3.
    torch.testing.assert_close(
        policy_drift(before, now, mask), torch.tensor([0.15, 0.2 / 3], dtype=torch.float64), atol=1e-7, rtol=0
    )
    # k3 of KL(before || now) per token: e^d - d - 1 with d = now - before.
    k3 = [(math.exp(-0.2) + 0.2 - 1 + math.exp(0.1) - 0.1 - 1) / 2, (math.exp(-0.2) + 0.2 - 1) / 3]
    torch.testing.assert_close(
        policy_drift(before, now, mask, "k3"), torch.tensor(k3, dtype=torch.float64), atol=1e-7, rtol=0
    )
    with pytest.raises(ValueError, match="unknown drift estimator"):
        policy_drift(before, now, mask, "k2")


def test_advantages_are_normalised_across_the_batch():
    adv = torch.tensor([1.0, -1.0, 3.0])
    std = math.sqrt(((1 - 1) ** 2 + (-1 - 1) ** 2 + (3 - 1) ** 2) / 3)  # population std about the mean 1
    # The paper's (A - mu_B) / sigma_B by default; dividing only on request.
    torch.testing.assert_close(normalise_advantages(adv), (adv - 1.0) / std)
    torch.testing.assert_close(normalise_advantages(adv, center=False), adv / std)
    torch.testing.assert_close(normalise_advantages(torch.tensor([0.3, 0.3])), torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(
        normalise_advantages(torch.tensor([0.3, 0.3]), center=False), torch.tensor([0.3, 0.3])
    )
    torch.testing.assert_close(normalise_advantages(torch.tensor([0.3])), torch.tensor([0.0]))


def test_rewards_are_mapped_to_the_unit_interval():
    rewards = torch.tensor([-1.0, 0.0, 1.0, 3.0, float("nan")])
    torch.testing.assert_close(
        to_unit_interval(rewards, -1.0, 1.0), torch.tensor([0.0, 0.5, 1.0, 1.0, 0.0], dtype=torch.float64)
    )


def test_prioritised_sampling_weights_and_draws():
    tracker = ValueTracker(4, TrackerConfig(sampling_epsilon=0.05))
    tracker.alpha = torch.tensor([1.0, 1.0, 0.0, 5.0], dtype=torch.float64)
    tracker.beta = torch.tensor([1.0, 9.0, 5.0, 0.0], dtype=torch.float64)  # v = 0.5, 0.1, 0, 1
    torch.testing.assert_close(tracker.weights(), torch.tensor([0.55, 0.35, 0.05, 0.05], dtype=torch.float64))
    # With gamma = 1 the spread is divided by N_eff = alpha + beta (2, 10, 5, 5): 0.5/2, 0.3/10, 0, 0.
    tracker.config = TrackerConfig(sampling_epsilon=0.05, sampling_gamma=1.0)
    torch.testing.assert_close(tracker.weights(), torch.tensor([0.3, 0.08, 0.05, 0.05], dtype=torch.float64))

    # Five uncertain prompts (v = 0.5, weight 0.55) and five solved ones (v ~ 0, weight ~ 0.05).
    tracker = ValueTracker(10)
    tracker.alpha[5:], tracker.beta[5:] = 1e-9, 10.0
    draws = [tracker.draw(1, g) for g in [torch.Generator().manual_seed(0)] for _ in range(2000)]
    share = sum(int(d) < 5 for d in draws) / len(draws)
    expected = 5 * 0.55 / (5 * 0.55 + 5 * (0.05 + math.sqrt(1e-10)))  # 0.9167
    # Binomial sd over 2000 draws is 0.0062: 5 sd of tolerance.
    assert abs(share - expected) < 0.031, share
    # Deterministic under the seed; without replacement within a draw.
    a = tracker.draw(6, torch.Generator().manual_seed(3))
    b = tracker.draw(6, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and len(set(a.tolist())) == 6
    assert len(tracker.draw(25, torch.Generator().manual_seed(3))) == 25  # more than the prompts: replaced


def test_state_round_trip():
    tracker = ValueTracker(5)
    tracker.initialise(torch.tensor([0, 3]), torch.tensor([0.2, 0.9]))
    tracker.update(torch.tensor([3]), torch.tensor([0.4]), torch.tensor([0.9]))
    tracker.remember([3, 0], [[5, 6, 2], [7]], [[-0.5, -1.0, -0.1], [-2.0]])
    copy = ValueTracker(5)
    copy.load_state_dict(tracker.state_dict())
    assert torch.equal(copy.alpha, tracker.alpha) and torch.equal(copy.beta, tracker.beta)
    assert torch.equal(copy.seen, tracker.seen)
    assert copy.memory[3][0] == [5, 6, 2] and copy.memory[0] == ([7], [-2.0])
    assert copy.memory[3][1] == pytest.approx([-0.5, -1.0, -0.1])
    with pytest.raises(ValueError, match="5 prompts, this dataset 4"):
        ValueTracker(4).load_state_dict(tracker.state_dict())
