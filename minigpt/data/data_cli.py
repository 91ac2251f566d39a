"""`minigpt data plan` and `minigpt data prepare`.

The main CLI wires these in with ``add_data_commands(data_subparsers)``; each sub-command sets ``func`` to
its handler, which returns an exit code. ``python -m minigpt.data.data_cli plan ...`` runs them stand-alone.
"""

from __future__ import annotations

import argparse
import sys

from minigpt.errors import MiniGPTError


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, help="mixture YAML (e.g. config/data/posttrain/sft/general.yaml)"
    )
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer folder or hub id (needed for token counts)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set budget='{samples: 200}' (repeatable)",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        default=None,
        help="read every hub source's offline_path sample (same as MINIGPT_OFFLINE=1)",
    )


def add_data_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `plan` and `prepare` to the sub-parsers of `minigpt data`."""
    plan = subparsers.add_parser("plan", help="show what a data mixture will contain (writes nothing)")
    _common(plan)
    plan.set_defaults(func=run_plan)
    prepare = subparsers.add_parser("prepare", help="write the mixture's train/val JSONL files and manifest")
    _common(prepare)
    prepare.add_argument("--output-dir", required=True, help="folder for <stage>_<name>_{train,val}.jsonl")
    prepare.add_argument(
        "--use-prepared", action="store_true", help="reuse existing output when its fingerprint matches"
    )
    prepare.set_defaults(func=run_prepare)


def run_plan(args: argparse.Namespace) -> int:
    from minigpt.data.prepare import plan_dataset

    plan = plan_dataset(args.config, tokenizer=args.tokenizer, overrides=args.overrides, offline=args.offline)
    print(plan.table())
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from minigpt.data.prepare import prepare_dataset

    prepared = prepare_dataset(
        args.config,
        args.output_dir,
        tokenizer=args.tokenizer,
        use_prepared=args.use_prepared,
        overrides=args.overrides,
        offline=args.offline,
    )
    print(prepared.summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minigpt data", description="Plan and prepare data mixtures.")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    from minigpt.secrets import redacted_console

    with redacted_console():
        try:
            return args.func(args)
        except MiniGPTError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
