"""The report card built from a fake run folder: tables, plots (valid, non-blank PNGs), skipped topics,
environment, redaction, and the ``minigpt report`` command."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from minigpt.report.report_card import build_report, read_series, register_report
from minigpt.tasks.tictactoe import MinimaxAgent, MixedAgent, RandomAgent, evaluate_player

SECRET = "hf_abcdefghijklmnopqrstuvwx"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metrics(stage: str, steps: int) -> list[dict]:
    """Synthetic log records shaped like each stage's real ones (docs/design.md §5 names)."""
    rows = []
    for step in range(1, steps + 1):
        decay = math.exp(-step / steps)
        row = {
            "step": step,
            "time": 1000.0 + step,
            "train/loss": 0.5 + 2 * decay,
            "train/learning_rate": 1e-3 * min(1.0, step / 3) * decay,
            "train/tokens_per_second": 4000.0 + 50 * (step % 4),
            "train/num_tokens": 512 * step,
            "train/global_step": step,
        }
        if stage == "dpo":
            row |= {"rewards/margins": 0.1 * step, "rewards/accuracies": min(1.0, 0.5 + 0.05 * step)}
        if stage == "grpo":
            row |= {"train/reward": 1 - decay, "train/reward_std": 0.2, "train/kl": 0.01 * step}
        rows.append(row)
        if step % 4 == 0:  # evaluation records
            if stage == "sft":
                rows.append({"step": step, "time": 1000.0 + step, "eval/loss": 0.8 + decay, "eval/ppl": 2.0})
            if stage == "dpo":
                rows.append({"step": step, "eval/preference_accuracy": 0.6, "eval/preference_loss": 0.6})
            if stage == "grpo":
                rows.append({"step": step, "eval/reward": 0.9 - decay})
    return rows


def _write_stage(run: Path, name: str, steps: int, agent, extra_config: dict | None = None) -> None:
    import yaml

    folder = run / name
    folder.mkdir(parents=True)
    records = _metrics(name, steps)
    if name == "sft":
        # A resume: the steps after a checkpoint at 4 are logged twice, the second time with new values.
        records += [{"step": s, "train/loss": 0.123} for s in range(5, steps + 1)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {
        "status": "done",
        "stage": name,
        "output_dir": str(folder),
        "parameters": {"total": 123_456, "trainable": 123_456, "active": 123_456},
        "global_step": steps,
        "num_tokens": 512 * steps,
        "train_seconds": 12.5,
        "final_metrics": {"train_loss": 1.0, "eval/loss": 0.87} if name == "sft" else {"train_loss": 1.0},
        "task_eval": {},
        "train_rows": 1000,
        "val_rows": 50,
    }
    (folder / "stage.json").write_text(json.dumps(summary))
    config = {"stage": name, "output_dir": str(folder), "seed": 7, "model": {"init": "tiny"}}
    config |= {"data": {"train": ["data.jsonl"]}, "train": {"lr": 1e-3, "batch_size": 8, "max_steps": steps}}
    config |= extra_config or {}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / f"{name}_training_logs_20250101_000000.txt").write_text(
        f"{name} started\nmodel tiny: 1 parameters; device cpu; 1 process(es)\ntoken {SECRET}\n"
    )
    result = evaluate_player(agent, games_per_opponent=6, seed=1)
    (folder / "task_eval.json").write_text(json.dumps(result))  # the older file, without "task"
    if name in GSM8K:
        n, correct = GSM8K[name]
        gsm8k = {"task": "gsm8k", "n": n, "correct": correct, "exact_match": correct / n, "no_number": 0}
        (folder / "eval_gsm8k.json").write_text(json.dumps(gsm8k | {"failure_examples": []}))
    samples = [{"prompt": "Say hi.", "completion": f"hi from {name}\nbye"}]
    (folder / "eval_samples.json").write_text(json.dumps({"task": "samples", "samples": samples}))


# Exact matches (rows, correct) of two stages; grpo has no GSM8K result.
GSM8K = {"sft": (8, 3), "dpo": (8, 4)}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_TOKEN", SECRET)  # set while the report is built, as in a real session
    run = tmp_path_factory.mktemp("runs") / "ttt"
    (run / "tokenizer").mkdir(parents=True)
    (run / "tokenizer" / "tokenizer.json").write_text("{}")
    # The secret sits in a config key that is not secret-looking and in a string the report copies.
    _write_stage(run, "sft", 12, RandomAgent(seed=3), {"model": {"init": f"org/{SECRET}"}, "note": SECRET})
    _write_stage(run, "dpo", 8, MixedAgent(epsilon=0.3, seed=3))
    _write_stage(run, "grpo", 10, MinimaxAgent(seed=3))
    stages = {
        name: {"key": "k", "status": "done", "kind": kind, "started": 0.0, "finished": 9.0, "seconds": 9.0}
        for name, kind in (("tokenizer", "tokenizer"), ("sft", "train"), ("dpo", "train"), ("grpo", "train"))
    }
    (run / "manifest.json").write_text(json.dumps({"recipe": "ttt", "stages": stages}))
    build_report(run)
    yield run
    mp.undo()


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_stage_table_lists_every_stage_in_order(run_dir):
    text = (run_dir / "report.md").read_text()
    table = _section(text, "## Stages")
    rows = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[1] for row in rows] == ["tokenizer", "sft", "dpo", "grpo"]
    assert "123,456 / 123,456 / 123,456" in rows[1] and "| 12 | 6,144 |" in rows[1]
    assert "## Final metrics" in text


def test_task_table_one_row_per_stage_and_minimax_unbeatable(run_dir):
    table = _section((run_dir / "report.md").read_text(), "## Task evaluation")
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines() if line.startswith("| ")}
    assert {"sft", "dpo", "grpo"} <= set(rows)
    assert rows["grpo"].endswith("| **yes** |") and "100.0%" in rows["grpo"]
    assert rows["sft"].endswith("| no |")


def test_environment_section(run_dir):
    env = _section((run_dir / "report.md").read_text(), "## Environment")
    for item in ("python", "torch", "transformers", "trl", "datasets", "peft", "CPU", "GPU", "git revision"):
        assert f"| {item} |" in env
    assert "| seed | 7 (every stage) |" in env
    assert "sft: cpu × 1" in env


def test_one_valid_png_per_topic(run_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image

    expected = {"loss_train", "loss_eval", "objective", "reward", "kl", "dpo_margins", "dpo_accuracy"}
    expected |= {"throughput", "learning_rate", "benchmarks"}
    assert {p.stem for p in (run_dir / "plots").glob("*.png")} == expected
    for stem in expected:
        path = run_dir / "plots" / f"{stem}.png"
        assert path.stat().st_size > 1000
        assert path.read_bytes()[:8] == PNG_MAGIC
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.std() > 0
        assert f"(plots/{stem}.png)" in (run_dir / "report.md").read_text()


def test_missing_topic_is_not_drawn_and_is_reported(run_dir):
    assert not (run_dir / "plots" / "mfu.png").exists()
    plots = _section((run_dir / "report.md").read_text(), "## Plots")
    assert "Figures not drawn, for lack of data:" in plots
    assert "(`mfu.png`): no stage logged train/mfu_percent" in plots


def test_secret_is_redacted(run_dir):
    text = (run_dir / "report.md").read_text()
    assert SECRET not in text
    assert "org/***" in text  # the config was copied, redacted


def test_resumed_steps_keep_the_last_record(run_dir):
    series = read_series(run_dir / "sft" / "metrics.jsonl")
    steps = [s for s, _ in series["train/loss"]]
    assert steps == sorted(set(steps)) == list(range(1, 13))
    assert dict(series["train/loss"])[5] == 0.123 and dict(series["train/loss"])[4] != 0.123


def test_report_command_rebuilds(run_dir, capsys):
    (run_dir / "report.md").unlink()
    parser = argparse.ArgumentParser()
    register_report(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(run_dir)])
    assert args.func(args) == 0
    assert (run_dir / "report.md").exists() and "report:" in capsys.readouterr().out


def test_not_a_run_folder_is_a_clear_error(tmp_path):
    from minigpt.report.report_card import ReportError

    with pytest.raises(ReportError, match="no stages found"):
        build_report(tmp_path)
    with pytest.raises(ReportError, match="no such run folder"):
        build_report(tmp_path / "missing")


def test_through_the_cli(run_dir, tmp_path, monkeypatch, capsys):
    from minigpt.cli import main

    assert main(["report", str(run_dir)]) == 0
    assert main(["report", str(tmp_path)]) == 2  # a clear one-line error, no traceback
    assert "no stages found" in capsys.readouterr().err


def _table_rows(section: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_benchmark_table_has_every_headline_score_per_stage(run_dir):
    from minigpt.tasks.tictactoe import MixedAgent, RandomAgent, evaluate_player

    section = _section((run_dir / "report.md").read_text(), "## Benchmarks")
    header = next(line for line in section.splitlines() if line.startswith("| stage"))
    columns = [c.strip() for c in header.strip("|").split("|")][1:]
    assert columns == [
        "tictactoe: optimal moves",
        "tictactoe: outcome-keeping",
        "tictactoe: wins vs random",
        "gsm8k: exact match",
    ]
    rows = _table_rows(section)
    assert list(rows) == ["sft", "dpo", "grpo"]
    # By hand: the same agents and seeds as the fake run; wins vs random pooled over both seats.
    for stage, agent in (("sft", RandomAgent(seed=3)), ("dpo", MixedAgent(epsilon=0.3, seed=3))):
        r = evaluate_player(agent, games_per_opponent=6, seed=1)
        wins = r["games"]["random"]["X"]["win"]["count"] + r["games"]["random"]["O"]["win"]["count"]
        expected = [r["optimal_moves"]["optimal"]["rate"], r["optimal_moves"]["outcome_preserving"]["rate"]]
        expected += [wins / 12]
        assert rows[stage][:3] == [f"{100 * v:.1f}" for v in expected]
    assert rows["grpo"][:2] == ["100.0", "100.0"]  # minimax plays only optimal moves
    assert [rows[s][3] for s in ("sft", "dpo", "grpo")] == ["37.5", "50.0", "—"]  # 3/8, 4/8, not evaluated
    assert "![Evaluation scores after each stage](plots/benchmarks.png)" in section


def test_generic_section_and_samples_side_by_side(run_dir):
    text = (run_dir / "report.md").read_text()
    gsm8k = _section(text, "## Task evaluation: GSM8K")
    assert _table_rows(gsm8k) == {"sft": ["37.5%"], "dpo": ["50.0%"]}
    assert "Exact match: 3 of 8 (37.5%)" in gsm8k and "Not evaluated: grpo." in gsm8k
    samples = _section(text, "## Task evaluation: samples")
    assert "**Prompt:** Say hi." in samples
    assert _table_rows(samples) == {s: [f"hi from {s} ⏎ bye"] for s in ("sft", "dpo", "grpo")}


def test_old_and_new_result_files_are_read(run_dir):
    from minigpt.tasks.eval_runner import read_evaluations

    found = read_evaluations(run_dir / "sft")
    assert set(found) == {"tictactoe", "gsm8k", "samples"}
    assert found["tictactoe"]["task"] == "tictactoe" and "games" in found["tictactoe"]
    assert read_evaluations(run_dir / "grpo").keys() == {"tictactoe", "samples"}
