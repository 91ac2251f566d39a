"""``minigpt export FOLDER --format hf``: the files of a stage folder that an upload should take, and nothing
else: config, generation config, safetensors weights (or a LoRA adapter), tokenizer files, chat template and
the model card. Prepared data, logs, metrics, checkpoints, ``stage.json``, the lock and staging leftovers stay
behind.

The copy is made in a hidden folder beside the output and renamed into place, so the output either does not
exist or is complete. An adapter folder (``lora.merge: false``) must name a base others can download: a base
that is a cached hub snapshot is named by its hub id and commit; a base that is only a local folder is
refused (the adapter could not be loaded anywhere else)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from minigpt.disk import normal_modes, writing
from minigpt.errors import ModelError

_CONFIG = ("config.json", "generation_config.json")
_WEIGHTS = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json")
_ADAPTER = ("adapter_config.json", "adapter_model.safetensors")
_TOKENIZER = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
_CARD = "README.md"


def _matching(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})


def _check_source(folder: Path, trust_remote_code: bool) -> bool:
    """Refuse a folder that would not load as a model; returns whether it ships its own code (allowed)."""
    from minigpt.lora import is_adapter_folder
    from minigpt.models.loading import ALLOW_ON_CLI, check_model_folder, remote_code

    if not folder.is_dir():
        raise ModelError(f"{folder}: no such stage folder")
    if is_adapter_folder(folder):
        if not (folder / "adapter_model.safetensors").is_file():
            raise ModelError(f"{folder}: the adapter folder has no adapter_model.safetensors")
    else:
        check_model_folder(folder)
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        raise ModelError(f"{folder}: no tokenizer files (tokenizer.json / tokenizer_config.json) to export")
    return remote_code(folder, trust_remote_code, ALLOW_ON_CLI)


def _check_target(folder: Path, target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ModelError(f"{target}: the output already exists and is not an empty folder; give a new one")
    if target.resolve().is_relative_to(folder.resolve()):
        raise ModelError(f"{target}: the output must be outside the stage folder {folder}")


def publishable_adapter_config(folder: Path) -> dict:
    """``adapter_config.json`` with a base model others can download (a hub id, and the commit when the
    base was a cached snapshot of it), or a ModelError saying why there is none."""
    from minigpt.models.model_origin import hub_snapshot

    path = folder / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable adapter config ({exc})") from None
    base = config.get("base_model_name_or_path") or ""
    if not base:
        raise ModelError(f"{path}: names no base model (base_model_name_or_path)")
    if Path(base).expanduser().exists():
        snapshot = hub_snapshot(Path(base))
        if snapshot is None:
            raise ModelError(
                f"{path}: the adapter's base model is the local folder {base}, which is not on the hub, so "
                "the exported adapter could not be loaded anywhere else. Upload that base first "
                f"(minigpt export {base} --format hf), set base_model_name_or_path here to its hub id, and "
                "export again; or train with lora.merge: true"
            )
        config["base_model_name_or_path"], config["revision"] = snapshot
    return config


def export_hf(
    checkpoint: Path, output: Path, dtype: str | None = None, trust_remote_code: bool = False
) -> Path:
    """Copy the publishable files of stage folder ``checkpoint`` into the new folder ``output``."""
    from minigpt.lora import is_adapter_folder
    from minigpt.model_card import build_model_card
    from minigpt.models.model_origin import is_stage_folder

    folder, target = Path(checkpoint), Path(output)
    ships_code = _check_source(folder, trust_remote_code)
    _check_target(folder, target)
    adapter = is_adapter_folder(folder)
    adapter_config = publishable_adapter_config(folder) if adapter else None
    files = _matching(folder, (_ADAPTER if adapter else _CONFIG + _WEIGHTS) + _TOKENIZER)
    if ships_code:  # trusted: the classes its auto_map names live in the folder's .py files
        files += _matching(folder, ("*.py",))
    with writing(target, "exporting the HF folder"):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            for path in files:
                shutil.copyfile(path, tmp / path.name)
            if adapter_config is not None:
                text = json.dumps(adapter_config, indent=2, sort_keys=True) + "\n"
                (tmp / "adapter_config.json").write_text(text, encoding="utf-8")
            if (folder / _CARD).is_file():
                shutil.copyfile(folder / _CARD, tmp / _CARD)
            elif is_stage_folder(folder):  # a stage trained before cards were written
                (tmp / _CARD).write_text(build_model_card(folder), encoding="utf-8")
            normal_modes(tmp)
            try:
                os.replace(tmp, target)  # replaces an empty folder, never a filled one
            except OSError as exc:
                raise ModelError(f"{target}: could not move the export into place ({exc})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
