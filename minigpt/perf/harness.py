"""Run the selected workloads in one process and assemble the report (see benchmarks/README.md)."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from minigpt.perf.spec import WORKLOADS, parse_workloads, shape_for, shape_label


def _runners() -> dict[str, Callable]:
    from minigpt.perf.lm_workloads import run_pretrain, run_sft_packed
    from minigpt.perf.rl_workloads import run_decode, run_grpo_step

    return {
        "pretrain-26m": run_pretrain,
        "pretrain-100m": run_pretrain,
        "sft-packed": run_sft_packed,
        "grpo-step": run_grpo_step,
        "decode": run_decode,
    }


def _versions() -> dict[str, str]:
    import datasets
    import torch
    import transformers
    import trl

    from minigpt import __version__

    return {
        "minigpt": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "datasets": datasets.__version__,
        "cuda": str(torch.version.cuda),
    }


def run_bench(
    workloads: str | list[str] | None = None,
    size: str | None = None,
    steps: int | None = None,
    warmup: int | None = None,
    compile_project: bool = True,
    project_loss: str = "plain",
    work_dir: str | Path | None = None,
    command: str = "minigpt bench",
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the workloads; returns the report (``meta``, ``rows``, ``targets``) that ``--output`` writes."""
    # Every input is generated locally: nothing may reach for the hub, nor send TRL's telemetry ping. Set
    # before huggingface_hub is first imported, which reads these once.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch

    from minigpt.perf.context import BenchContext
    from minigpt.perf.measure import current_device
    from minigpt.perf.perf_table import build_report

    names = workloads if isinstance(workloads, list) else parse_workloads(workloads)
    device = current_device()
    size = size or ("real" if device.kind == "cuda" else "tiny")
    shapes = {name: shape_for(name, size, steps, warmup) for name in names}
    keep = work_dir is not None
    root = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="minigpt-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    ctx = BenchContext(
        device=device, work_dir=root, compile_project=compile_project, project_loss=project_loss, quiet=quiet
    )
    started = datetime.now(UTC)
    rows = []
    try:
        runners = _runners()
        for name in names:
            for row in runners[name](ctx, name, shapes[name]):
                row.shape = shape_label(name, shapes[name])
                rows.append(row)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    meta = {
        "date": started.isoformat(timespec="seconds"),
        "command": command,
        "size": size,
        "device": device.kind,
        "device_name": device.name,
        "peak_flops": device.peak_flops,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": _versions(),
        "workloads": names,
        "shapes": {
            name: {"type": type(s).__name__, "label": shape_label(name, s), **asdict(s)}
            for name, s in shapes.items()
        },
        "project_compile": compile_project and device.kind == "cuda",
        "project_loss": project_loss,
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
    }
    return build_report(rows, meta)


__all__ = ["WORKLOADS", "run_bench"]
