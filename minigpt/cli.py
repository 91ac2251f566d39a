"""The ``minigpt`` command. Sub-commands map onto the modules; errors of the project's own types are printed
as one clear message (no traceback) and exit with status 2."""

from __future__ import annotations

import argparse
import os
import sys

from minigpt import __version__
from minigpt.chat import register_chat
from minigpt.cli_commands import register_eval, register_run, register_task_commands
from minigpt.cli_options import add_overrides
from minigpt.errors import MiniGPTError
from minigpt.export.command import register_export
from minigpt.perf.perf_cli import register_bench
from minigpt.report.report_card import register_report
from minigpt.serving.serve_command import register_serve

EXIT_USER_ERROR = 2


def _cmd_train(args: argparse.Namespace) -> int:
    from minigpt.runner import run_stage
    from minigpt.stages.stage_config import load_stage_config

    overrides = list(args.overrides)
    if args.stage:
        overrides.insert(0, f"stage={args.stage}")
    cfg = load_stage_config(args.config, overrides)
    if args.resume:
        cfg.resume = True
    summary = run_stage(cfg, overwrite=args.overwrite)
    from minigpt.distributed import is_main_process

    if is_main_process():  # one line, not one per process
        print(f"done: {summary['output_dir']} (step {summary['global_step']}, {summary['train_seconds']} s)")
    return 0


def _cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from minigpt.models.tokenizer_cli import train_from_args

    out = train_from_args(args)
    print(f"tokenizer saved to {out}")
    return 0


def _cmd_stages(args: argparse.Namespace) -> int:
    from minigpt.registry import EVAL_TASKS, PRESETS, STAGES

    print("stages: " + ", ".join(STAGES.names()))
    print("presets: " + ", ".join(PRESETS.names()))
    print("evaluation tasks: " + ", ".join(EVAL_TASKS.names()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minigpt", description="Train small language models end to end.")
    parser.add_argument("--version", action="version", version=f"minigpt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="run one training stage from its config")
    train.add_argument("stage", nargs="?", help="stage name (overrides the config's 'stage')")
    train.add_argument("--config", required=True, help="stage config YAML")
    train.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    train.add_argument("--overwrite", action="store_true", help="discard an earlier run in output_dir")
    add_overrides(train)
    train.set_defaults(func=_cmd_train)

    tok = sub.add_parser("tokenizer", help="tokenizer tools")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", required=True, metavar="COMMAND")
    tok_train = tok_sub.add_parser("train", help="train a byte-level BPE tokenizer with the chat template")
    from minigpt.models.tokenizer_cli import add_arguments as add_tok_args

    add_tok_args(tok_train)
    tok_train.set_defaults(func=_cmd_tokenizer_train)

    data = sub.add_parser("data", help="plan and prepare dataset mixtures")
    from minigpt.data.data_cli import add_data_commands

    add_data_commands(data.add_subparsers(dest="data_command", required=True, metavar="COMMAND"))

    # Sub-commands defined next to the modules they drive (each imports its heavy libraries when it runs).
    for register in (
        register_run,
        register_eval,
        register_task_commands,
        register_report,
        register_chat,
        register_export,
        register_serve,
        register_bench,
    ):
        register(sub)

    info = sub.add_parser("list", help="list registered stages, model presets and evaluation tasks")
    info.set_defaults(func=_cmd_stages)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # no calls home unless the user wants them
    parser = build_parser()
    args = parser.parse_args(argv)
    from minigpt.secrets import redacted_console

    with redacted_console():  # what any command prints, its error line included
        try:
            code = int(args.func(args) or 0)
        except MiniGPTError as exc:
            print(f"error: {exc}", file=sys.stderr)
            shutdown(wait=False)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            shutdown(wait=False)
            return 130
        shutdown()
    return code


def shutdown(wait: bool = True) -> None:
    """Close a process group the command opened (several processes); commands that never imported torch
    (``--help``, ``data plan``) do not pay for importing it here."""
    if "torch.distributed" in sys.modules:
        from minigpt.distributed import shutdown as close_process_group

        close_process_group(wait)


if __name__ == "__main__":
    sys.exit(main())
