"""The ``minigpt bench`` sub-command (registered in ``minigpt.cli_commands``)."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from minigpt.perf.spec import SIZES, WORKLOADS

CPU_THREADS = 1
"""torch threads on a machine without CUDA unless ``--threads`` says otherwise. With torch's default (one
per core) on a shared machine, every small op's OpenMP barrier waits for whichever thread the OS has
descheduled: on 2 cores with another job running, single rows of the tiny GRPO and decode workloads ran 2-10×
slower at random (benchmarks/RESULTS.md, "GRPO step on CPU: where the time went"), one thread did not."""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _command_line(args: argparse.Namespace) -> str:
    """The command as a user would retype it (recorded in the JSON and RESULTS.md)."""
    parts = ["minigpt", "bench"]
    for flag, value in (
        ("--size", args.size),
        ("--workloads", args.workloads),
        ("--steps", args.steps),
        ("--warmup", args.warmup),
        ("--output", args.output),
    ):
        if value is not None:
            parts += [flag, str(value)]
    if args.no_compile:
        parts.append("--no-compile")
    if args.loss != "plain":
        parts += ["--loss", args.loss]
    if args.threads:
        parts += ["--threads", str(args.threads)]
    return shlex.join(parts)


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from minigpt.perf.harness import run_bench

    threads = args.threads or (None if torch.cuda.is_available() else CPU_THREADS)
    if threads:
        torch.set_num_threads(threads)
    report = run_bench(
        workloads=args.workloads,
        size=args.size,
        steps=args.steps,
        warmup=args.warmup,
        compile_project=not args.no_compile,
        project_loss=args.loss,
        work_dir=args.work_dir,
        command=_command_line(args),
        quiet=args.quiet,
    )
    from minigpt.perf.perf_table import format_table  # after run_bench: it sets the offline environment

    print(format_table(report), flush=True)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"written: {out}")
    failed = [f"{r['workload']}/{r['implementation']}" for r in report["rows"] if r["error"]]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def register_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench",
        help="throughput, MFU and memory of the project's stages against TRL and a plain loop",
        description="Benchmark the project's training paths against baselines on the same model and data. "
        "Default size: real on a GPU, tiny on CPU (a smoke run, not a performance figure).",
    )
    bench.add_argument(
        "--size", choices=SIZES, help="real (docs/design.md §7 shapes) or tiny (default: by device)"
    )
    bench.add_argument(
        "--workloads", metavar="A,B", help=f"comma-separated subset of: {', '.join(WORKLOADS)} (default: all)"
    )
    bench.add_argument("--steps", type=_positive, help="timed steps per workload (default: by size)")
    bench.add_argument("--warmup", type=_non_negative, help="untimed warm-up steps (default: by size)")
    bench.add_argument("--output", metavar="JSON", help="also write the full report as JSON")
    bench.add_argument(
        "--no-compile", action="store_true", help="run the project's LM stages without train.compile on GPU"
    )
    bench.add_argument(
        "--loss",
        choices=("plain", "chunked"),
        default="plain",
        help="train.loss of the project's LM stages (chunked: fused head + cross-entropy)",
    )
    bench.add_argument(
        "--work-dir", help="keep the generated data and run folders here (default: a temp dir)"
    )
    bench.add_argument(
        "--threads",
        type=_positive,
        help=f"torch CPU threads (default without CUDA: {CPU_THREADS}, steady on a shared machine; "
        "with CUDA: torch's default)",
    )
    bench.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    bench.set_defaults(func=_cmd_bench)
