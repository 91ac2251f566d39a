"""Checkpoint discovery, the output-folder lock, and atomic export of the final HF folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from minigpt.errors import TrainingError

_CKPT = re.compile(r"^checkpoint-(\d+)$")
DONE_FILE = "stage.json"


def complete_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoints with weights, optimizer and trainer state, oldest first (a half-written one is skipped)."""
    if not ckpt_dir.is_dir():
        return []
    found = []
    for child in ckpt_dir.iterdir():
        match = _CKPT.match(child.name)
        if not match or not child.is_dir():
            continue
        has_weights = (child / "model.safetensors").exists() or (child / "adapter_model.safetensors").exists()
        if has_weights and (child / "trainer_state.json").exists() and (child / "optimizer.pt").exists():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def newest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = complete_checkpoints(ckpt_dir)
    return found[-1] if found else None


class OutputLock:
    """One writer per output folder. A lock left by a dead process on this host is taken over."""

    def __init__(self, output_dir: Path):
        self.path = output_dir / ".minigpt.lock"
        self.held = False

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = self._owner()
                if owner and owner.get("host") == me["host"] and not _alive(owner.get("pid", -1)):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise TrainingError(
                    f"{self.path.parent}: another run is writing to this folder "
                    f"(pid {owner.get('pid') if owner else '?'} on {owner.get('host') if owner else '?'}). "
                    f"Wait for it, use another output_dir, or delete {self.path} if that run is gone."
                ) from None
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            self.held = True
            return self
        raise TrainingError(f"{self.path}: could not take the lock")

    def _owner(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def export_final(model, tokenizer, output_dir: Path) -> None:
    """Write the final HF folder: saved to a temporary folder first, then moved into place file by file,
    so a crash never leaves a folder that looks complete but is not (stage.json is written after)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=output_dir))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        for item in tmp.iterdir():
            os.replace(item, output_dir / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_done(output_dir: Path) -> dict[str, Any] | None:
    path = output_dir / DONE_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return None
    return data if data.get("status") == "done" else None
