"""The report card's evaluation part, for any registered task: the benchmark table (rows = stages,
columns = every evaluation's headline scores), its plot, and each evaluation's own section (the task's
renderer, or the generic one). Nothing here knows a task by name: the functions come from the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from minigpt.report.report_plots import draw_benchmarks

DASH = "—"


def _task(name: str) -> Any:
    from minigpt.registry import EVAL_TASKS

    return EVAL_TASKS.get(name) if name in EVAL_TASKS else None


def collect(evaluations: dict[str, dict[str, dict[str, Any]]]) -> dict[str, list[tuple[str, dict]]]:
    """``{stage: {label: result}}`` → ``{label: [(stage, result), ...]}``, labels in first-seen order,
    results of tasks not registered (any more) left out."""
    by_label: dict[str, list[tuple[str, dict]]] = {}
    for stage, results in evaluations.items():
        for label, result in results.items():
            if _task(result.get("task", "")) is not None:
                by_label.setdefault(label, []).append((stage, result))
    return by_label


def score_columns(
    stages: list[str], by_label: dict[str, list[tuple[str, dict]]]
) -> dict[str, list[float | None]]:
    """``{"<label>: <metric>": [score per stage, None where missing]}`` from each task's headline."""
    columns: dict[str, list[float | None]] = {}
    for label, results in by_label.items():
        headline = _task(results[0][1]["task"]).function("headline")
        for stage, result in results:
            for metric, value in headline(result).items():
                column = columns.setdefault(f"{label}: {metric}", [None] * len(stages))
                column[stages.index(stage)] = float(value)
    return columns


def benchmark_section(
    evaluations: dict[str, dict[str, dict[str, Any]]], plots_dir: Path, run_dir: Path, run_name: str
) -> list[str]:
    """``## Benchmarks``: one row per evaluated stage, one column per headline score, and the plot."""
    stages = [s for s, results in evaluations.items() if results]
    by_label = collect({s: evaluations[s] for s in stages})
    columns = score_columns(stages, by_label)
    drawn = draw_benchmarks(stages, columns, plots_dir, run_name)
    if not columns:
        what = "no stage has an evaluation result" if not by_label else "the evaluations have no scores"
        return ["## Benchmarks", "", f"No scores to compare: {what} (recipe `evaluation:`).", ""]
    header = ["stage", *columns]
    lines = [
        "## Benchmarks",
        "",
        "Each evaluation's headline scores after each stage (%, higher is better).",
        "",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, stage in enumerate(stages):
        cells = [f"{100 * v[i]:.1f}" if v[i] is not None else DASH for v in columns.values()]
        lines.append("| " + " | ".join([stage, *cells]) + " |")
    if drawn is not None:
        rel = drawn.relative_to(run_dir).as_posix()
        lines += ["", f"![Evaluation scores after each stage]({rel})"]
    return [*lines, ""]


def evaluation_sections(evaluations: dict[str, dict[str, dict[str, Any]]], trained: list[str]) -> list[str]:
    """One ``## Task evaluation: <title>`` section per evaluation, from its task's renderer."""
    lines: list[str] = []
    for label, results in collect(evaluations).items():
        task = _task(results[0][1]["task"])
        title = task.title if label == task.name else f"{task.title} ({label})"
        body = task.function("report")(results) if task.report else _generic(task, results)
        lines += [f"## Task evaluation: {title}", "", *body]
        missing = [s for s in trained if s not in {stage for stage, _ in results}]
        if missing:
            lines += [f"Not evaluated: {', '.join(missing)}.", ""]
    return lines


def _generic(task: Any, results: list[tuple[str, dict]]) -> list[str]:
    """The headline scores per stage, then each stage's result as the task describes it, folded."""
    headline, describe = task.function("headline"), task.function("describe")
    metrics = list(dict.fromkeys(m for _, r in results for m in headline(r)))
    lines = []
    if metrics:
        lines += ["| stage | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
        for stage, result in results:
            scores = headline(result)
            cells = [f"{100 * scores[m]:.1f}%" if m in scores else DASH for m in metrics]
            lines.append("| " + " | ".join([stage, *cells]) + " |")
    for stage, result in results:
        lines += ["", f"<details><summary>{stage}: details</summary>", "", describe(result), "</details>"]
    return [*lines, ""]
