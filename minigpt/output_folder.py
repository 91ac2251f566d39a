"""A stage's output folder around a run: refuse to write over a run unless asked, move an old run aside and
put it back if the new one is refused, clear what killed runs left, and tell a finished stage from one to
train (docs/reliability.md). The runner (minigpt.runner) calls these under the folder's lock (output_lock)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from minigpt.checkpoints import DONE_FILE, clear_leftovers, read_done
from minigpt.disk import writing
from minigpt.errors import TrainingError
from minigpt.output_lock import LOCK_FILE
from minigpt.stages.stage_config import StageConfig
from minigpt.typed_config import validate

RUN_MARKERS = ("metrics.jsonl", "checkpoints", DONE_FILE)
"""Files whose presence means the folder holds a run (started or finished)."""
ASIDE_PREFIX = ".replaced-"


def prepare_output_dir(output_dir: Path, resume: bool, overwrite: bool) -> Path | None:
    """Refuse to write over a finished or started run unless asked; with ``overwrite``, move the old run
    aside (``<output_dir>/.replaced-<pid>``) rather than delete it: it is deleted only once the new run has
    checked all its inputs and starts training, and put back if the new run is refused before that."""
    existing = [m for m in RUN_MARKERS if (output_dir / m).exists()]
    if not existing or resume:
        return None
    if not overwrite:
        raise TrainingError(
            f"{output_dir} already holds a run ({', '.join(existing)}). Use --resume to continue it, "
            "--overwrite to start again, or another output_dir."
        )
    aside = output_dir / f"{ASIDE_PREFIX}{os.getpid()}"
    with writing(output_dir, "moving the previous run aside"):
        aside.mkdir()
        for child in list(output_dir.iterdir()):
            if child.name not in (LOCK_FILE, aside.name):
                os.replace(child, aside / child.name)
    return aside


def restore_aside(output_dir: Path, aside: Path) -> None:
    """Put a run moved aside back in place of whatever a refused (or killed) attempt wrote."""
    for child in list(output_dir.iterdir()):
        if child.name != aside.name:
            _remove_entry(child)
    for child in list(aside.iterdir()):
        os.replace(child, output_dir / child.name)
    aside.rmdir()


def recover_aside(output_dir: Path) -> Path | None:
    """A run killed between moving the old run aside and starting to train left it in ``.replaced-*``: it
    is put back before anything else looks at the folder (we hold the lock, so its owner is gone)."""
    found = sorted(output_dir.glob(f"{ASIDE_PREFIX}*")) if output_dir.is_dir() else []
    for aside in found:
        restore_aside(output_dir, aside)
    return found[-1] if found else None


def same_config(output_dir: Path, cfg: StageConfig) -> bool:
    """The finished run in ``output_dir`` was trained with this config (``resume`` aside): a resume with a
    changed config (more steps, other data) is a request to train on, and goes through the trainer."""
    import yaml

    from minigpt.errors import MiniGPTError
    from minigpt.secrets import redact

    try:
        saved = yaml.safe_load((output_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    if not isinstance(saved, dict):
        return False
    # Compared as validated configs without their defaults: a snapshot written by an earlier version (its
    # algo as the user wrote it, fewer fields) is the same config when it validates to the same values.
    try:
        saved_cfg = validate(StageConfig, saved, str(output_dir / "config.yaml"))
    except (MiniGPTError, ValueError):
        return False

    def comparable(config: StageConfig) -> dict[str, Any]:
        dump = redact(config.model_dump(mode="json", exclude_defaults=True))
        dump.pop("resume", None)
        return dump

    return comparable(saved_cfg) == comparable(cfg)


def finished_summary(output_dir: Path, cfg: StageConfig, console: bool) -> dict[str, Any] | None:
    """Under the lock: clear what killed runs left behind, and for a resume of a stage that already
    finished (``stage.json`` present) its summary, so that a finished stage is never trained again."""
    recovered = recover_aside(output_dir)
    cleared = clear_leftovers(output_dir)
    if console and (recovered or cleared):
        names = [p.name for p in cleared] + ([f"{recovered.name} (put back)"] if recovered else [])
        print(f"{output_dir}: cleared what an interrupted run left: {', '.join(names)}", flush=True)
    done = read_done(output_dir) if cfg.resume and same_config(output_dir, cfg) else None
    if done is not None and console:
        print(f"{output_dir}: the stage already finished (stage.json); nothing to resume", flush=True)
    return done


def remove_new_entries(output_dir: Path, before: set[Path]) -> None:
    for entry in set(output_dir.iterdir()) - before:
        _remove_entry(entry)


def _remove_entry(entry: Path) -> None:
    """Delete a file or folder of a stage folder; never the lock, which this process holds."""
    if entry.name != LOCK_FILE:
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
