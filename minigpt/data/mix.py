"""Mixing arithmetic: normalised weights, per-source quotas, validation splits and seeded draws.

Quotas are in the mixing unit (samples or tokens). Weight p_i (normalised) gives source i the share p_i of
the drawn total in that unit. A budget in the other unit is converted through each source's mean row length.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from minigpt.data.mixture_config import BudgetSpec


def normalise(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    return [w / total for w in weights]


def rng_for(seed: int, *parts: str) -> random.Random:
    # A string seed is hashed with SHA-512 by random.Random: stable across runs and PYTHONHASHSEED.
    return random.Random(":".join([str(seed), *parts]))


def largest_remainder(amounts: Sequence[float], total: int) -> list[int]:
    """Round amounts to integers that sum to ``total`` (sample budgets are met exactly)."""
    floors = [math.floor(a) for a in amounts]
    order = sorted(range(len(amounts)), key=lambda i: amounts[i] - floors[i], reverse=True)
    for i in order[: max(0, total - sum(floors))]:
        floors[i] += 1
    return floors


def quotas(
    shares: Sequence[float],
    unit: str,
    budget: BudgetSpec,
    rows: Sequence[int],
    tokens: Sequence[int | None],
) -> list[float]:
    """Amount of each source to draw, in ``unit``. ``rows``/``tokens``: what each training pool holds."""
    mean = [(t / r if (t is not None and r) else 0.0) for r, t in zip(rows, tokens, strict=True)]
    if budget.kind == "epochs":
        available = rows if unit == "samples" else tokens
        total = budget.amount * sum(a or 0 for a in available)
    elif budget.kind == unit:
        total = budget.amount
    elif unit == "tokens":  # budget in samples: total tokens T with sum_i p_i T / mean_i = samples
        total = budget.amount / sum(p / m for p, m in zip(shares, mean, strict=True) if m)
    else:  # unit samples, budget in tokens: total samples S with sum_i p_i S mean_i = tokens
        total = budget.amount / sum(p * m for p, m in zip(shares, mean, strict=True))
    amounts = [p * total for p in shares]
    if unit == "samples":
        return [float(n) for n in largest_remainder(amounts, round(total))]
    return amounts


def split_validation(
    keys: Sequence[bytes], count: int, rng: random.Random, sides: dict[bytes, bool]
) -> tuple[list[int], list[int]]:
    """Indices of validation and training rows. Rows with equal content keys go to the same side, here and
    in every other source (``sides``: key → is validation, shared across sources and updated), so no text
    is in both splits even when dedup is off. ``count`` is in rows (approximately when groups are larger
    than one row or a key's side was fixed by an earlier source)."""
    groups: dict[bytes, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    order = list(groups)
    rng.shuffle(order)
    taken = sum(len(groups[k]) for k in order if sides.get(k) is True)
    for key in order:
        if key not in sides:
            sides[key] = taken < count
            taken += len(groups[key]) if sides[key] else 0
    val = sorted(i for key in order if sides[key] for i in groups[key])
    chosen = set(val)
    return val, [i for i in range(len(keys)) if i not in chosen]


def validation_count(spec_fraction: float | None, spec_count: int | None, size: int) -> int:
    if spec_count is not None:
        return spec_count
    if spec_fraction:
        return round(spec_fraction * size)
    return 0


def draw(size: int, tokens: Sequence[int | None], quota: float, unit: str, rng: random.Random) -> list[int]:
    """Indices drawn from a pool of ``size`` rows: whole shuffled passes, then part of one more.

    Samples: exactly round(quota) rows. Tokens: rows are taken while the running total is below the quota
    (so it is overshot by less than one row).
    """
    picked: list[int] = []
    if size == 0 or quota <= 0:
        return picked
    if unit == "samples":
        full, rest = divmod(int(round(quota)), size)
        for _ in range(full):
            picked.extend(rng.sample(range(size), size))
        picked.extend(rng.sample(range(size), rest))
        return picked
    if not any(tokens):
        return picked  # nothing to count towards the quota (cannot happen for non-empty rows)
    total = 0
    while total < quota:
        for i in rng.sample(range(size), size):
            if total >= quota:
                break
            picked.append(i)
            total += tokens[i] or 0
    return picked
