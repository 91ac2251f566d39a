"""A stage whose evaluation collapses against its start is named: on the console when the recipe evaluates
it, and under "Warnings" in the report card (issue: a DPO step making every answer unparseable passed
silently)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_report_card import _write_stage  # a sibling module: pytest puts tests/report on sys.path

from minigpt.pipeline import collapse_warnings
from minigpt.report.report_card import build_report
from minigpt.tasks.eval_drops import SHARP_DROP, headline_scores, sharp_drops
from minigpt.tasks.tictactoe.arena import MinimaxAgent, RandomAgent


def _ttt(optimal: float) -> dict:
    return {"task": "tictactoe", "optimal_moves": {"optimal": {"rate": optimal}}}


def test_a_fall_of_the_threshold_or_more_is_named_and_a_smaller_one_is_not():
    assert SHARP_DROP == 0.2
    start = {"tictactoe": _ttt(0.9)}
    assert sharp_drops(start, {"tictactoe": _ttt(0.7)}) == [
        "tictactoe: optimal moves fell from 90.0% to 70.0%"
    ]
    assert sharp_drops(start, {"tictactoe": _ttt(0.75)}) == []
    assert sharp_drops(start, {"tictactoe": _ttt(1.0)}) == []  # a rise
    assert sharp_drops({}, {"tictactoe": _ttt(0.0)}) == []  # the start was not evaluated
    assert headline_scores({"x": {"task": "no-such-task"}}) == {}


def test_the_recipe_prints_a_warning_naming_stage_start_and_score(tmp_path: Path, capsys):
    start = tmp_path / "sft"
    start.mkdir()
    (start / "task_eval.json").write_text(json.dumps(_ttt(0.95)))
    assert collapse_warnings("dpo", start, {"tictactoe": _ttt(0.0)}) == [
        "tictactoe: optimal moves fell from 95.0% to 0.0%"
    ]
    assert capsys.readouterr().err == (
        "warning: stage dpo: tictactoe: optimal moves fell from 95.0% to 0.0% (its start: sft); see the report\n"
    )
    assert collapse_warnings("sft", tmp_path / "preset-has-no-folder", {"tictactoe": _ttt(0.0)}) == []


@pytest.fixture()
def collapsed_run(tmp_path: Path) -> Path:
    run = tmp_path / "ttt"
    _write_stage(run, "sft", 4, MinimaxAgent(seed=3))  # perfect
    _write_stage(run, "dpo", 4, RandomAgent(seed=3), {"model": {"init": str(run / "sft")}})  # collapsed
    _write_stage(run, "grpo", 4, MinimaxAgent(seed=3), {"model": {"init": str(run / "dpo")}})  # recovered
    return run


def test_the_report_lists_the_collapsed_stage_only(collapsed_run: Path):
    text = build_report(collapsed_run).read_text()
    section = text.split("## Warnings", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("- ")]
    assert lines and all(line.startswith("- **dpo** (from sft): tictactoe: ") for line in lines), lines
    assert any("optimal moves fell from 100.0% to" in line for line in lines)
    assert "**grpo**" not in section


def test_no_warnings_section_without_a_drop(run_dir_without_drop: Path):
    assert "## Warnings" not in build_report(run_dir_without_drop).read_text()


@pytest.fixture()
def run_dir_without_drop(tmp_path: Path) -> Path:
    run = tmp_path / "ok"
    _write_stage(run, "sft", 4, RandomAgent(seed=3))
    _write_stage(run, "dpo", 4, MinimaxAgent(seed=3), {"model": {"init": str(run / "sft")}})
    return run


def test_results_measured_differently_are_not_compared():
    start = {"tictactoe": {**_ttt(0.9), "settings": {"positions": 500}}}
    now = {"tictactoe": {**_ttt(0.1), "settings": {"positions": None}}}
    assert sharp_drops(start, now) == []
    now["tictactoe"]["settings"] = {"positions": 500}
    assert len(sharp_drops(start, now)) == 1
