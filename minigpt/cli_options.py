"""Options several sub-commands share."""

from __future__ import annotations

import argparse


def add_overrides(
    parser: argparse.ArgumentParser, what: str = "config", example: str = "train.lr=1e-3"
) -> None:
    """The ``--set key.sub=value`` option every config-driven command takes."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.SUB=VALUE",
        help=f"override a {what} field (repeatable), e.g. --set {example}",
    )


def add_trust_remote_code(parser: argparse.ArgumentParser) -> None:
    """The ``--trust-remote-code`` switch of the commands that load a model folder (off: such a folder is
    refused, never asked about)."""
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run Python code the model folder ships (config.json auto_map); only for folders you trust",
    )
