"""The run report card: ``<run>/report.md`` and ``<run>/plots/*.png``, rebuilt from the logs alone.

Everything comes from files a run leaves behind (manifest.json, each stage's metrics.jsonl, stage.json,
config.yaml, the evaluation results, training log), so ``minigpt report RUN_DIR`` can redo it at any time, on any
machine. Everything copied from configs and logs is redacted, and the whole text once more at the end.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import statistics
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from minigpt.errors import MiniGPTError
from minigpt.report.report_benchmarks import benchmark_section, evaluation_sections
from minigpt.report.report_plots import TOPICS, StageSeries, draw_all, read_series
from minigpt.secrets import redact, redact_text
from minigpt.stage_files import read_json_mapping, read_yaml_mapping

DASH = "—"
VERSIONED = ("torch", "transformers", "trl", "datasets", "peft", "accelerate", "tokenizers")


class ReportError(MiniGPTError):
    """The folder given is not a run (or stage) folder."""


@dataclass
class Stage:
    name: str
    folder: Path
    kind: str = "train"
    record: dict[str, Any] = field(default_factory=dict)  # the manifest's entry
    summary: dict[str, Any] = field(default_factory=dict)  # stage.json
    config: dict[str, Any] = field(default_factory=dict)  # config.yaml, secret keys redacted
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)  # label → result
    plot: StageSeries | None = None

    @property
    def algo(self) -> str | None:
        if self.kind == "tokenizer":
            return "tokenizer"
        return self.summary.get("stage") or self.config.get("stage")


# ---------------------------------------------------------------- reading the run


def _redacted_yaml(path: Path) -> dict[str, Any]:
    return redact(read_yaml_mapping(path))


def _is_stage_folder(path: Path) -> bool:
    return path.name != "plots" and any(
        (path / f).exists() for f in ("stage.json", "metrics.jsonl", "tokenizer.json")
    )


def load_stages(run_dir: Path) -> tuple[str, list[Stage]]:
    """(run name, stages in pipeline order). Order: the manifest's, then stage folders it does not list.
    A single stage folder (``runs/x/sft``) is accepted as a one-stage run."""
    manifest = read_json_mapping(run_dir / "manifest.json")
    records: dict[str, Any] = manifest.get("stages") or {}
    if not records and ((run_dir / "stage.json").exists() or (run_dir / "metrics.jsonl").exists()):
        folders = {run_dir.name: run_dir}
    else:
        folders = {name: run_dir / name for name in records}
        extra = (p for p in sorted(run_dir.iterdir()) if p.is_dir() and p.name not in folders)
        folders.update({p.name: p for p in extra if _is_stage_folder(p)})
    stages = []
    for name, folder in folders.items():
        record = records.get(name, {})
        summary = read_json_mapping(folder / "stage.json")
        kind = record.get("kind") or (
            "train" if summary or (folder / "metrics.jsonl").exists() else "tokenizer"
        )
        stage = Stage(name, folder, kind, record, summary, _redacted_yaml(folder / "config.yaml"))
        if kind != "tokenizer":
            from minigpt.tasks.eval_runner import read_evaluations

            stage.evaluations = read_evaluations(folder)
        stages.append(stage)
    offset = 0
    for stage in stages:
        if stage.kind == "tokenizer":
            continue
        series = read_series(stage.folder / "metrics.jsonl")
        stage.plot = StageSeries(stage.name, stage.algo, offset, series)
        last = max((points[-1][0] for points in series.values()), default=0)
        offset += int(stage.summary.get("global_step") or last)
    return str(manifest.get("recipe") or run_dir.name), stages


# ---------------------------------------------------------------- formatting


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.{digits}g}"
    return str(value)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return DASH
    minutes, sec = divmod(float(seconds), 60)
    return f"{int(minutes)} min {sec:.0f} s" if minutes else f"{sec:.1f} s"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]


def _pairs(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in mapping.items())


# ---------------------------------------------------------------- sections


def stages_section(stages: list[Stage]) -> list[str]:
    header = ["#", "stage", "algorithm", "status", "wall time", "train time", "steps", "tokens"]
    header += ["train rows", "val rows", "parameters (total / trainable / active)"]
    rows = []
    for i, s in enumerate(stages, 1):
        p = s.summary.get("parameters") or {}
        params = " / ".join(_num(p.get(k)) for k in ("total", "trainable", "active")) if p else DASH
        tokens = s.summary.get("num_tokens")
        if not tokens and s.plot and s.plot.series.get("train/num_tokens"):
            tokens = int(s.plot.series["train/num_tokens"][-1][1])
        status = (
            s.record.get("status") or s.summary.get("status") or ("done" if s.kind == "tokenizer" else DASH)
        )
        rows.append(
            [str(i), s.name, s.algo or DASH, status, _duration(s.record.get("seconds"))]
            + [_duration(s.summary.get("train_seconds")), _num(s.summary.get("global_step")), _num(tokens)]
            + [_num(s.summary.get("train_rows")), _num(s.summary.get("val_rows")), params]
        )
    notes = ["", "Wall time includes loading, evaluation and export; train time is the trainer alone."]
    return ["## Stages", "", *_table(header, rows), *notes, ""]


# (metric key, column header, how a series is summarised). Final eval values come from stage.json first.
FINAL_COLUMNS = (
    ("train/loss", "last train loss", "last"),
    ("eval/loss", "eval loss", "last"),
    ("eval/ppl", "eval ppl", "last"),
    ("train/mean_token_accuracy", "token accuracy", "last"),
    ("eval/preference_accuracy", "eval pref. accuracy", "last"),
    ("eval/accuracy", "eval accuracy", "last"),  # reward-model stage (TRL's eval_accuracy)
    ("rewards/margins", "train margin", "last"),
    ("train/reward", "train reward", "last"),
    ("eval/reward", "eval reward", "last"),
    ("train/kl", "KL", "last"),
    ("train/tokens_per_second", "tokens/s (median)", "median"),
    ("train/mfu_percent", "MFU % (median)", "median"),
)


def final_metrics_section(stages: list[Stage]) -> list[str]:
    trained = [s for s in stages if s.plot is not None]
    values: dict[tuple[str, str], float] = {}
    for s in trained:
        final = s.summary.get("final_metrics") or {}
        for key, _, how in FINAL_COLUMNS:
            points = [v for _, v in (s.plot.series if s.plot else {}).get(key, [])]
            if key.startswith("eval/") and isinstance(final.get(key), int | float):
                values[(s.name, key)] = float(final[key])
            elif points:
                values[(s.name, key)] = points[-1] if how == "last" else statistics.median(points)
    columns = [(k, h) for k, h, _ in FINAL_COLUMNS if any((s.name, k) in values for s in trained)]
    if not trained or not columns:
        return ["## Final metrics", "", "No training stage logged metrics.", ""]
    rows = [[s.name, *(_num(values.get((s.name, k))) for k, _ in columns)] for s in trained]
    note = "Train loss is each stage's own objective: cross-entropy only for pretrain, midtrain and SFT."
    return ["## Final metrics", "", *_table(["stage", *(h for _, h in columns)], rows), "", note, ""]


def plots_section(drawn: dict[str, Path | None], run_dir: Path) -> list[str]:
    lines = ["## Plots", ""]
    for topic in TOPICS:
        path = drawn.get(topic.slug)
        if path is not None:
            lines += [f"### {topic.title}\n\n![{topic.title}]({path.relative_to(run_dir).as_posix()})\n"]
    skipped = [t for t in TOPICS if drawn.get(t.slug) is None]
    if skipped:
        lines += ["Figures not drawn, for lack of data:", ""]
        lines += [f"- {t.title} (`{t.slug}.png`): {t.absent}." for t in skipped]
        lines.append("")
    return lines


def config_section(stages: list[Stage]) -> list[str]:
    import yaml

    lines = ["## Configuration", ""]
    for s in stages:
        if not s.config:
            continue
        c, t = s.config, s.config.get("train") or {}
        model, data = c.get("model") or {}, c.get("data") or {}
        sources = data.get("data_config") or ", ".join(data.get("train") or []) or DASH
        summary = f"model `{model.get('init', DASH)}`, data `{sources}`, lr {t.get('lr', DASH)}, "
        summary += f"batch {t.get('batch_size', DASH)} × accum {t.get('grad_accum', 1)}, "
        summary += f"max_steps {t.get('max_steps', DASH)}, epochs {t.get('epochs', DASH)}, "
        summary += f"seed {c.get('seed', DASH)}"
        lines += [f"- **{s.name}** ({s.algo}): {summary}"]
        dump = yaml.safe_dump(c, sort_keys=False).rstrip()
        lines += ["", f"<details><summary>{s.name}: resolved config</summary>", "", "```yaml", dump, "```"]
        lines += ["</details>", ""]
    return lines + [""] if len(lines) > 2 else []


def _git_revision(repo: Path) -> str:
    def git(*args: str) -> str | None:
        # --no-optional-locks: reading must not refresh (write) the index of a repo someone is using.
        command = ["git", "--no-optional-locks", "-C", str(repo), *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if not head:
        return "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head[:12] + (" (with uncommitted changes)" if dirty else "")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment(stages: list[Stage]) -> list[tuple[str, str]]:
    """(name, value) rows: versions, devices, git revision, seeds."""
    import os

    rows = [("python", platform.python_version()), ("os", platform.platform())]
    for name in VERSIONED:
        try:
            rows.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            rows.append((name, "not installed"))
    rows.append(("CPU", f"{_cpu_name()} ({os.cpu_count()} logical cores)"))
    try:
        import torch

        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken CUDA setup must not stop the report
        gpus = []
    rows.append(("GPU", ", ".join(gpus) if gpus else "none"))
    devices = {}
    for s in stages:
        for log in sorted(s.folder.glob("*_training_logs_*.txt")):
            found = re.search(
                r"; device (\S+); (\d+) process", log.read_text(encoding="utf-8", errors="replace")
            )
            if found:
                devices[s.name] = f"{found.group(1)} × {found.group(2)}"
    if devices:
        rows.append(("training device (from logs)", _pairs(devices)))
    rows.append(("git revision", _git_revision(Path(__file__).resolve().parent.parent)))
    seeds = {s.name: s.config.get("seed") for s in stages if "seed" in s.config}
    if seeds:
        values = set(seeds.values())
        rows.append(("seed", f"{values.pop()} (every stage)" if len(values) == 1 else _pairs(seeds)))
    return rows


def warnings_section(stages: list[Stage]) -> list[str]:
    """``## Warnings``: every headline score a stage lost sharply against the stage it started from (its
    ``model.init``), so a collapsed stage cannot pass unnoticed; absent when there is none."""
    from minigpt.tasks.eval_drops import SHARP_DROP, sharp_drops

    by_folder = {os.path.realpath(s.folder): s for s in stages}
    found = []
    for stage in stages:
        init = (stage.config.get("model") or {}).get("init")
        start = by_folder.get(os.path.realpath(init)) if isinstance(init, str) else None
        if start is None or start is stage or not start.evaluations or not stage.evaluations:
            continue
        found += [
            f"- **{stage.name}** (from {start.name}): {d}"
            for d in sharp_drops(start.evaluations, stage.evaluations)
        ]
    if not found:
        return []
    intro = f"Evaluation scores that fell by {SHARP_DROP:.0%} or more (absolute) from the stage each stage started from."
    return ["## Warnings", "", intro, "", *found, ""]


# ---------------------------------------------------------------- entry points


def build_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.md`` and ``run_dir/plots/*.png`` from the run's logs; returns the report."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run folder")
    name, stages = load_stages(run_dir)
    if not stages:
        raise ReportError(f"{run_dir}: no stages found (no manifest.json and no stage folders)")
    drawn = draw_all([s.plot for s in stages if s.plot is not None], run_dir / "plots", name)
    built = datetime.now().isoformat(timespec="seconds")
    lines = [f"# Report: {name}", "", f"Run folder `{run_dir}`; built {built} from the run's logs.", ""]
    lines += stages_section(stages) + final_metrics_section(stages)
    evaluations = {s.name: s.evaluations for s in stages if s.kind != "tokenizer"}
    lines += warnings_section(stages)
    lines += benchmark_section(evaluations, run_dir / "plots", run_dir, name)
    lines += evaluation_sections(evaluations, [s.name for s in stages if s.kind != "tokenizer"])
    lines += plots_section(drawn, run_dir) + config_section(stages)
    lines += ["## Environment", "", "Of the machine that built this report, unless marked.", ""]
    lines += _table(["item", "value"], [[k, v] for k, v in environment(stages)]) + [""]
    path = run_dir / "report.md"
    path.write_text(redact_text("\n".join(lines)), encoding="utf-8")
    return path


def _cmd_report(args: argparse.Namespace) -> int:
    path = build_report(args.run_dir)
    print(f"report: {path}\nplots: {path.parent / 'plots'}")
    return 0


def register_report(sub: argparse._SubParsersAction) -> None:
    """Add ``minigpt report RUN_DIR`` to the CLI's sub-commands."""
    parser = sub.add_parser("report", help="rebuild report.md and its plots from a run folder's logs")
    parser.add_argument("run_dir", help="a run folder (runs/<name>) or a single stage folder")
    parser.set_defaults(func=_cmd_report)
