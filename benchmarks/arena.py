"""The arena's table and plot from finished runs of recipes/tictactoe-arena.yaml (one run folder per seed).

    python benchmarks/arena.py RUN [RUN ...] [--plot docs/img/arena.png]

Per branch (dpo, grpo, rloo, ppo, spo), over the runs given (seeds): the full check after the stage (optimal
moves, exhaustive losses as X / O, illegal and unparseable answers), its training seconds, the completions
it sampled, and the share of the start's non-optimal positions it removed: mean, with min–max when there are
several runs. The plot draws ``eval/task/optimal_rate`` (the fixed subset, during training) against
completions sampled and against seconds, one line per branch (mean, min–max band).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

BRANCHES = ("dpo", "grpo", "rloo", "ppo", "spo")
START = "sft"
TOTAL = 4520
_NO_CHECK = {"X": {"losses": float("nan")}, "O": {"losses": float("nan")}}  # evaluated without exhaustive


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _non_optimal(stage_dir: Path) -> int:
    opt = _json(stage_dir / "task_eval.json")["optimal_moves"]
    return opt["n"] - round(opt["optimal"]["rate"] * opt["n"])


def completions(stage_dir: Path) -> int:
    """Completions the stage sampled: RL stages' samples (``eval/task/samples`` at the end); DPO's are the
    answers its on-policy generator asked for (positions × rounds), read from the prepared mixture."""
    if stage_dir.name == "dpo":
        cfg = _json(next((stage_dir / "data").glob("*_manifest.json")))["config"]
        args = cfg["sources"][0]["generator_args"]
        rounds = args.get("samples", 4) + (1 if args.get("greedy", True) else 0)
        return TOTAL * rounds
    return int(curve(stage_dir)[-1]["samples"])


def curve(stage_dir: Path) -> list[dict[str, float]]:
    """The stage's task evaluations: step, optimal rate, samples and seconds since the stage's first one."""
    rows = []
    for line in (stage_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "eval/task/optimal_rate" in record:
            rows.append(record)
    t0 = rows[0]["time"] if rows else 0.0
    return [
        {
            "step": r["step"],
            "optimal": r["eval/task/optimal_rate"],
            "samples": r["eval/task/samples"],
            "seconds": r["time"] - t0,
        }
        for r in rows
    ]


def branch_row(run: Path, branch: str) -> dict[str, float]:
    stage = run / branch
    result = _json(stage / "task_eval.json")
    opt, ex = result["optimal_moves"], result.get("exhaustive") or _NO_CHECK
    start = _non_optimal(run / START)
    left = _non_optimal(stage)
    return {
        "optimal": opt["optimal"]["rate"],
        "losses_X": ex["X"]["losses"],
        "losses_O": ex["O"]["losses"],
        "invalid": opt["illegal"]["count"] + opt["parse_error"]["count"],
        "seconds": _json(stage / "stage.json")["train_seconds"],
        "completions": completions(stage),
        "removed": (start - left) / start if start else 0.0,
    }


def _cell(values: list[float], fmt: str) -> str:
    mean = sum(values) / len(values)
    text = format(mean, fmt)
    if len(values) > 1:
        text += f" ({format(min(values), fmt)}–{format(max(values), fmt)})"
    return text


def table(runs: list[Path]) -> str:
    lines = [
        "| branch | optimal moves | non-optimal removed | exhaustive losses X / O | illegal + unparseable | "
        "seconds | completions |",
        "|---|---|---|---|---|---|---|",
    ]
    start = [_json(r / START / "task_eval.json")["optimal_moves"]["optimal"]["rate"] for r in runs]
    start_ex = [_json(r / START / "task_eval.json").get("exhaustive") or _NO_CHECK for r in runs]
    lines.append(
        f"| {START} (start) | {_cell([100 * v for v in start], '.1f')}% | — | "
        f"{_cell([e['X']['losses'] for e in start_ex], '.0f')} / {_cell([e['O']['losses'] for e in start_ex], '.0f')}"
        " | — | — | — |"
    )
    for branch in BRANCHES:
        rows = [branch_row(r, branch) for r in runs if (r / branch / "stage.json").exists()]
        if not rows:
            continue

        def col(key: str, rows: list[dict[str, float]] = rows) -> list[float]:
            return [row[key] for row in rows]

        lines.append(
            f"| {branch} | {_cell([100 * v for v in col('optimal')], '.1f')}% | "
            f"{_cell([100 * v for v in col('removed')], '.0f')}% | {_cell(col('losses_X'), '.0f')} / "
            f"{_cell(col('losses_O'), '.0f')} | {_cell(col('invalid'), '.0f')} | {_cell(col('seconds'), '.0f')} | "
            f"{_cell(col('completions'), ',.0f')} |"
        )
    return "\n".join(lines) + "\n"


def plot(runs: list[Path], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110, sharey=True)
    for index, branch in enumerate(BRANCHES):
        curves = [curve(r / branch) for r in runs if (r / branch / "metrics.jsonl").exists()]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        for ax, key in zip(axes, ("samples", "seconds"), strict=True):
            xs = [sum(c[i][key] for c in curves) / len(curves) for i in range(n)]
            ys = [[c[i]["optimal"] for c in curves] for i in range(n)]
            color = plt.get_cmap("tab10").colors[index]
            ax.plot(xs, [sum(y) / len(y) for y in ys], "-o", color=color, label=branch, markersize=3)
            if len(curves) > 1:
                ax.fill_between(xs, [min(y) for y in ys], [max(y) for y in ys], color=color, alpha=0.15)
    axes[0].set_xlabel("completions sampled (RL; DPO: training pairs seen)")
    axes[1].set_xlabel("seconds since the branch started (evaluations included)")
    axes[0].set_ylabel("optimal-move rate on the fixed subset")
    axes[0].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"Arena: eval/task/optimal_rate during training ({len(runs)} run(s))")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of recipes/tictactoe-arena.yaml")
    parser.add_argument("--plot", type=Path, help="write the plot here (PNG)")
    args = parser.parse_args(argv)
    print(table(args.runs), end="")
    if args.plot:
        plot(args.runs, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
