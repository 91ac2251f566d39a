"""Collapses are named, never passed over: when a stage's evaluation scores fall sharply below those of the
stage it started from (e.g. a DPO step that makes every tic-tac-toe answer unparseable), the recipe says so on
the console and the report card lists it under "Warnings".

A score is a task's headline score (in [0, 1], higher is better: ``headline`` in ``eval_catalog``); a fall of
``SHARP_DROP`` or more (absolute, e.g. 92% → 71%) counts. Scores of the start that the stage was not
evaluated on, or the other way round, are not compared.
"""

from __future__ import annotations

from typing import Any

SHARP_DROP = 0.2


def headline_scores(evaluations: dict[str, dict[str, Any]]) -> dict[str, float]:
    """``{"<label>: <metric>": score}`` of one folder's evaluations (``read_evaluations``' shape)."""
    from minigpt.registry import EVAL_TASKS

    scores: dict[str, float] = {}
    for label, result in evaluations.items():
        task = result.get("task")
        if task not in EVAL_TASKS:
            continue
        for metric, value in EVAL_TASKS.get(task).function("headline")(result).items():
            if isinstance(value, int | float):
                scores[f"{label}: {metric}"] = float(value)
    return scores


def sharp_drops(
    start: dict[str, dict[str, Any]], now: dict[str, dict[str, Any]], threshold: float = SHARP_DROP
) -> list[str]:
    """One line per headline score that fell by ``threshold`` or more from ``start`` to ``now``; only results
    measured the same way are compared (a start evaluated with other ``settings``, e.g. another subset of
    positions, is not)."""
    same = {
        label
        for label in now
        if label in start and start[label].get("settings") == now[label].get("settings")
    }
    start = {label: start[label] for label in same}
    before, after = headline_scores(start), headline_scores(now)
    return [
        f"{key} fell from {before[key]:.1%} to {value:.1%}"
        for key, value in after.items()
        if key in before and before[key] - value >= threshold
    ]
