"""The report's metric series and figures: one PNG per topic (loss, reward, KL, DPO, throughput, MFU,
learning rate), a line per stage, stages laid end to end on one global-step axis so a pipeline reads left to
right.

Kept apart from :mod:`minigpt.report.report_card` (tables, environment, markdown) so each stays small: this module reads
each stage's metrics.jsonl into series and draws them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Stages whose ``train/loss`` is a language-model cross-entropy. The others log their own objective under the
# same name (DPO: preference loss, RL: policy loss), which must not share an axis with cross-entropy.
LM_ALGOS = {"pretrain", "midtrain", "sft"}

X_LABEL = "global step (optimizer steps; stages laid end to end)"


@dataclass
class StageSeries:
    """What a figure needs from one stage: its name, algorithm, step offset and metric series."""

    name: str
    algo: str | None
    offset: int
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def is_lm(self) -> bool:
        # An unknown algorithm is treated as language modelling: the common case for user stages.
        return self.algo is None or self.algo in LM_ALGOS


@dataclass(frozen=True)
class Line:
    key: str
    label: str  # appended to the stage name in the legend ("train", "eval")
    style: str = "-"
    marker: str = (
        "o"  # a second line of the same stage (eval, critic) gets another marker, told apart in print
    )
    lm_only: bool | None = None  # True: LM stages only; False: non-LM stages only; None: every stage


@dataclass(frozen=True)
class Topic:
    slug: str
    title: str
    ylabel: str
    lines: tuple[Line, ...]
    absent: str  # why the figure may have no data, said in the report when it is skipped
    ylim: tuple[float, float] | None = None


TOPICS: tuple[Topic, ...] = (
    Topic(
        "loss_train",
        "Training loss (language modelling)",
        "cross-entropy (nats / token)",
        (Line("train/loss", "train", lm_only=True),),
        "no pretrain / midtrain / SFT stage logged train/loss",
    ),
    Topic(
        "loss_eval",
        "Held-out loss",
        "cross-entropy (nats / token)",
        (Line("eval/loss", "eval", "--", "s"),),
        "no stage logged eval/loss (no validation rows, or eval_interval off)",
    ),
    Topic(
        "objective",
        "Training objective of preference / RL / reward stages",
        "loss (each stage's own objective; DPO in nats)",
        (
            Line("train/loss", "loss", lm_only=False),
            Line("train/actor_loss", "actor loss"),
            Line("train/critic_loss", "critic loss", ":", "^"),
        ),
        "no preference, reward-model or RL stage in this run",
    ),
    Topic(
        "reward",
        "Reward (RL stages)",
        "mean reward per completion (reward units)",
        (Line("train/reward", "train"), Line("eval/reward", "eval", "--", "s")),
        "no RL stage logged train/reward or eval/reward",
    ),
    Topic(
        "kl",
        "KL divergence to the reference policy (RL stages)",
        "KL (nats / token)",
        (Line("train/kl", "KL"), Line("train/kl_ref", "KL to reference", "--", "s")),
        "no RL stage logged train/kl (GRPO logs it only when beta > 0)",
    ),
    Topic(
        "dpo_margins",
        "DPO reward margin (chosen − rejected)",
        "implicit reward margin (β · nats)",
        (Line("rewards/margins", "train"), Line("eval/preference_margin", "eval", "--", "s")),
        "no DPO stage logged rewards/margins",
    ),
    Topic(
        "dpo_accuracy",
        "DPO preference accuracy",
        "accuracy (fraction of pairs, chosen ranked first)",
        (Line("rewards/accuracies", "train"), Line("eval/preference_accuracy", "eval", "--", "s")),
        "no DPO stage logged rewards/accuracies or eval/preference_accuracy",
        ylim=(-0.02, 1.02),
    ),
    Topic(
        "task_eval",
        "Task evaluation during training (the recipe's evaluation with during_training)",
        "rate over the fixed subset (fraction of positions)",
        (
            Line("eval/task/optimal_rate", "optimal"),
            Line("eval/task/illegal_rate", "illegal", "--", "s"),
            Line("eval/task/parse_error_rate", "unparseable", ":", "^"),
        ),
        "no stage ran a task evaluation during training (evaluation[].during_training and train.eval_interval)",
        ylim=(-0.02, 1.02),
    ),
    Topic(
        "throughput",
        "Training throughput",
        "tokens / second",
        (Line("train/tokens_per_second", "tokens/s"),),
        "no stage logged train/tokens_per_second",
    ),
    Topic(
        "mfu",
        "Model FLOPs utilisation",
        "MFU (% of peak dense bf16 FLOP/s)",
        (Line("train/mfu_percent", "MFU"),),
        "no stage logged train/mfu_percent (measured on GPU only, never on CPU)",
    ),
    Topic(
        "learning_rate",
        "Learning rate schedule",
        "learning rate (per optimizer step)",
        (
            Line("train/learning_rate", "lr"),
            Line("train/actor_lr", "actor lr", "--", "s"),
            Line("train/critic_lr", "critic lr", ":", "^"),
        ),
        "no stage logged train/learning_rate",
    ),
)


def read_series(path: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl → ``{key: [(step, value), ...]}`` sorted by step. A resumed stage may log a step twice:
    the later record wins, per (step, key). Non-numeric values are skipped; "nan"/"inf" become floats."""
    from minigpt.metrics import read_metrics

    latest: dict[str, dict[int, float]] = {}
    for record in read_metrics(path):
        step = record.get("step")
        if not isinstance(step, int):
            continue
        for key, value in record.items():
            if key in ("step", "time") or isinstance(value, bool):
                continue
            if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf"):
                value = float(value)
            if isinstance(value, int | float):
                latest.setdefault(key, {})[step] = float(value)
    return {key: sorted(points.items()) for key, points in latest.items()}


def _curves(
    topic: Topic, stages: Sequence[StageSeries]
) -> list[tuple[int, str, Line, list[tuple[int, float]]]]:
    """(stage index, stage name, line spec, points on the global step axis) for every non-empty line."""
    out = []
    for index, stage in enumerate(stages):
        for line in topic.lines:
            if line.lm_only is not None and line.lm_only != stage.is_lm:
                continue
            points = stage.series.get(line.key) or []
            if points:
                out.append((index, stage.name, line, [(stage.offset + s, v) for s, v in points]))
    return out


def draw_topic(topic: Topic, stages: Sequence[StageSeries], out_dir: Path, run_name: str) -> Path | None:
    """Draw one topic's figure to ``out_dir/<slug>.png``; None (and no file) when no stage has its data."""
    curves = _curves(topic, stages)
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines; must precede pyplot
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    colors = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    try:
        # One colour per stage (its position in the pipeline), so every figure uses the same colours.
        for index, name, line, points in curves:
            xs, ys = zip(*points, strict=True)
            ax.plot(
                xs,
                ys,
                line.style,
                color=colors[index % len(colors)],
                marker=line.marker,
                # Every point marked when few (an eval every N steps must be visible), ~25 markers when many.
                markevery=max(1, len(points) // 25),
                markersize=3.5,
                linewidth=1.6,
                label=f"{name} ({line.label})",
            )
        ax.set_title(f"{topic.title} — run {run_name}")
        ax.set_xlabel(X_LABEL)
        ax.set_ylabel(topic.ylabel)
        if topic.ylim:
            ax.set_ylim(*topic.ylim)
        formatter = ScalarFormatter(useMathText=True)
        formatter.set_powerlimits((-3, 4))  # learning rates and tokens/s get a ×10^n label, not 0.000
        ax.yaxis.set_major_formatter(formatter)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8, handlelength=3.5)
        fig.tight_layout()
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{topic.slug}.png"
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def draw_all(stages: Sequence[StageSeries], out_dir: Path, run_name: str) -> dict[str, Path | None]:
    """Every topic, in :data:`TOPICS` order: slug → PNG path, or None where the topic had no data.

    PNGs of earlier builds are removed first so a figure whose data disappeared does not linger."""
    for slug in (t.slug for t in TOPICS):
        (out_dir / f"{slug}.png").unlink(missing_ok=True)
    return {topic.slug: draw_topic(topic, stages, out_dir, run_name) for topic in TOPICS}


BENCHMARKS_SLUG = "benchmarks"


def draw_benchmarks(
    stages: Sequence[str], columns: dict[str, list[float | None]], out_dir: Path, run_name: str
) -> Path | None:
    """The evaluation scores after each stage (``columns``: label → one score per stage, None where not
    evaluated) as one line per score, stages in pipeline order, to ``out_dir/benchmarks.png``; None (and
    no file) when there is no score. A PNG of an earlier build is removed first."""
    path = out_dir / f"{BENCHMARKS_SLUG}.png"
    path.unlink(missing_ok=True)
    if not stages or not any(v is not None for values in columns.values() for v in values):
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines; must precede pyplot
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("tab10").colors
    markers = "osD^v<>ph*"
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    try:
        for index, (label, values) in enumerate(columns.items()):
            if all(v is None for v in values):
                continue
            # NaN breaks the line: a stage not evaluated is a gap, not a straight line across it.
            ys = [math.nan if v is None else v for v in values]
            ax.plot(
                range(len(values)),
                ys,
                "-",
                color=colors[index % len(colors)],
                # Colours repeat after ten scores; markers tell those apart in print too.
                marker=markers[(index // len(colors) + index) % len(markers)],
                markersize=5,
                linewidth=1.6,
                label=label,
            )
        ax.set_title(f"Evaluation scores after each stage — run {run_name}")
        ax.set_xlabel("stage (pipeline order)")
        ax.set_ylabel("score (fraction; higher is better)")
        ax.set_xticks(range(len(stages)), list(stages))
        ax.set_xlim(-0.3, len(stages) - 0.7)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8, handlelength=3.5)
        fig.tight_layout()
        out_dir.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
