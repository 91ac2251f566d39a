"""``minigpt export CHECKPOINT --format FORMAT``: a stage folder into a file another runtime loads.

Each format is one entry of :data:`FORMATS` (its writer is imported only when chosen, so ``--help`` stays
light); adding one is one entry and one writer function."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from minigpt.errors import ModelError


@dataclass(frozen=True)
class ExportFormat:
    help: str
    writer: str
    """``module:function`` taking (checkpoint, output, dtype, trust_remote_code) and returning the path."""
    dtypes: tuple[str, ...]
    """The weight types it writes, the default first; empty: it copies the weights as saved (no --dtype)."""
    default_output: Callable[[Path, str | None], Path]
    """Where the export goes without ``--output``, from the checkpoint folder and the dtype."""

    def load_writer(self) -> Callable[..., Path]:
        module, function = self.writer.split(":")
        return getattr(importlib.import_module(module), function)


FORMATS: dict[str, ExportFormat] = {
    "gguf": ExportFormat(
        help="one .gguf file for llama.cpp / ollama (needs: pip install 'minigpt[gguf]')",
        writer="minigpt.export.gguf_writer:export_gguf",
        dtypes=("f16", "f32"),
        # Beside the stage folder, not in it: the folder stays the plain HF folder training wrote.
        default_output=lambda checkpoint, dtype: checkpoint.parent / f"{checkpoint.name}-{dtype}.gguf",
    ),
    "hf": ExportFormat(
        help="a clean Hugging Face folder to upload: weights, config, tokenizer, model card only",
        writer="minigpt.export.hf_folder:export_hf",
        dtypes=(),
        default_output=lambda checkpoint, dtype: checkpoint.parent / f"{checkpoint.name}-hf",
    ),
}


def export_checkpoint(
    checkpoint: str | Path,
    fmt: str,
    output: str | Path | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
) -> Path:
    if fmt not in FORMATS:
        raise ModelError(f"export format '{fmt}' is not known (choose from {', '.join(sorted(FORMATS))})")
    spec = FORMATS[fmt]
    if not spec.dtypes:
        if dtype:
            raise ModelError(f"--dtype {dtype}: the {fmt} export copies the weights as saved; leave it out")
    else:
        dtype = dtype or spec.dtypes[0]
        if dtype not in spec.dtypes:
            raise ModelError(f"--dtype {dtype}: the {fmt} export writes {' or '.join(spec.dtypes)}")
    folder = Path(checkpoint).expanduser()
    target = Path(output).expanduser() if output else spec.default_output(folder.resolve(), dtype)
    return spec.load_writer()(folder, target, dtype, trust_remote_code)


def _cmd_export(args: argparse.Namespace) -> int:
    out = export_checkpoint(args.checkpoint, args.format, args.output, args.dtype, args.trust_remote_code)
    print(f"written: {out}")
    return 0


def register_export(sub: argparse._SubParsersAction) -> None:
    """Add ``minigpt export`` to the CLI's sub-commands."""
    from minigpt.cli_options import add_trust_remote_code

    formats = "; ".join(f"{name}: {spec.help}" for name, spec in sorted(FORMATS.items()))
    export = sub.add_parser(
        "export",
        help="a stage folder for another runtime (GGUF for llama.cpp) or for upload (a clean HF folder)",
    )
    export.add_argument("checkpoint", help="a stage output folder (HF model folder, e.g. runs/x/sft)")
    export.add_argument("--format", required=True, choices=sorted(FORMATS), help=formats)
    dtypes = sorted({dtype for spec in FORMATS.values() for dtype in spec.dtypes})
    export.add_argument(
        "--dtype", choices=dtypes, help="weight type (gguf; default f16); hf copies the weights as saved"
    )
    export.add_argument(
        "--output",
        help="output path (default beside the folder: CHECKPOINT-<dtype>.gguf for gguf, CHECKPOINT-hf "
        "for hf, which must not exist or be empty)",
    )
    add_trust_remote_code(export)
    export.set_defaults(func=_cmd_export)
