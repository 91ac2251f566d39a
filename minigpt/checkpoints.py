"""Checkpoint discovery, atomic checkpoint publication and rotation, the output-folder lock, and atomic
export of the final HF folder.

Crash-safety contract (docs/reliability.md): a folder named ``checkpoint-N`` only ever appears by a rename of
a fully written staging folder, and rotation deletes old checkpoints only after the new one is in place, so
whenever a process is killed the newest complete checkpoint is loadable.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from minigpt.errors import TrainingError

_CKPT = re.compile(r"^checkpoint-(\d+)$")
# Staging (being written) and doomed (being deleted) folders: "checkpoint-N.tmp-<token>" / ".del-<token>".
# They never match _CKPT, so a crash inside either is invisible to resume.
_LEFTOVER = re.compile(r"^checkpoint-\d+\.(tmp|del)-.+$")
DONE_FILE = "stage.json"
LOCK_FILE = ".minigpt.lock"


def checkpoint_step(path: Path) -> int | None:
    match = _CKPT.match(path.name)
    return int(match.group(1)) if match else None


def _has_optimizer(path: Path) -> bool:
    """optimizer.pt (one process, DDP), optimizer.bin (FSDP, full state dict) or a DeepSpeed ZeRO folder."""
    if (path / "optimizer.pt").exists() or (path / "optimizer.bin").exists():
        return True
    return any(child.is_dir() for child in path.glob("global_step*"))


def is_complete(path: Path) -> bool:
    """A checkpoint with weights, optimizer and trainer state (the files transformers needs to resume)."""
    has_weights = (path / "model.safetensors").exists() or (path / "adapter_model.safetensors").exists()
    return has_weights and (path / "trainer_state.json").exists() and _has_optimizer(path)


def complete_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoints with weights, optimizer and trainer state, oldest first (a half-written one is skipped)."""
    if not ckpt_dir.is_dir():
        return []
    found = []
    for child in ckpt_dir.iterdir():
        step = checkpoint_step(child)
        if step is not None and child.is_dir() and is_complete(child):
            found.append((step, child))
    return [path for _, path in sorted(found)]


def newest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = complete_checkpoints(ckpt_dir)
    return found[-1] if found else None


def staging_dir(ckpt_dir: Path, step: int, token: str) -> Path:
    """Where checkpoint ``step`` is written before it is published (``token``: the writing run's id)."""
    return ckpt_dir / f"checkpoint-{step}.tmp-{token}"


def _fsync_tree(root: Path) -> None:
    """Flush every file (and folder entry) under ``root`` to disk, so a rename published after it never
    points at data still in the page cache when the machine (not just the process) goes down."""
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError), open(os.path.join(folder, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(Path(folder))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename is still atomic
        pass
    finally:
        os.close(fd)


def _doomed_name(path: Path) -> Path:
    """A fresh name to rename a folder to before deleting it (unique: an earlier failed delete may linger)."""
    return path.with_name(f"{path.name}.del-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def publish_checkpoint(staged: Path, final: Path) -> None:
    """Move a fully written checkpoint folder into place with one atomic rename.

    A folder already at ``final`` (a leftover an older, non-atomic writer left half-written, or a step
    saved twice) is first renamed out of the way, since a rename cannot replace a non-empty folder.
    """
    _fsync_tree(staged)
    doomed = _doomed_name(final)
    if final.exists():
        os.replace(final, doomed)
    os.replace(staged, final)
    _fsync_dir(final.parent)
    shutil.rmtree(doomed, ignore_errors=True)


def rotate_checkpoints(
    ckpt_dir: Path, keep: int | None, protect: Iterable[Path] = (), current: Iterable[Path] = ()
) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints (never one in ``protect``), incomplete
    ``checkpoint-N`` folders older than the newest complete one (they can never be resumed from), and
    staging / half-deleted leftovers of killed runs (except ``current``). Returns what was deleted.

    Ordered by step number, not by mtime as transformers does (a resumed run re-saves in a new order), and
    counting only complete checkpoints, so a half-written folder can never push the last good one out.
    """
    complete = complete_checkpoints(ckpt_dir)
    if not complete:
        return []
    keep_set = {p.resolve() for p in complete[-max(keep or len(complete), 1) :]}
    keep_set |= {Path(p).resolve() for p in protect}
    skip = {Path(p).resolve() for p in current}
    newest = checkpoint_step(complete[-1]) or 0
    doomed: list[Path] = []
    for child in ckpt_dir.iterdir():
        if not child.is_dir() or child.resolve() in skip:
            continue
        step = checkpoint_step(child)
        if step is None:
            if _LEFTOVER.match(child.name):
                doomed.append(child)
        elif child.resolve() not in keep_set and (is_complete(child) or step < newest):
            doomed.append(child)
    for path in doomed:
        # Rename first, so a kill during the (slow, non-atomic) delete leaves a name resume ignores.
        target = path
        if checkpoint_step(path) is not None:
            target = _doomed_name(path)
            os.replace(path, target)
        shutil.rmtree(target, ignore_errors=True)
    return doomed


class OutputLock:
    """One writer per output folder.

    The lock file is created with O_EXCL (so two runs can never both create it, on any host) and held with
    an ``flock`` for the life of the run. The kernel drops the flock when the process dies however it dies
    (SIGKILL included), so on the same host a leftover lock is recognised exactly, without trusting a pid
    that may have been reused, and taken over in place (never unlinked, so two runs cannot both take it).
    A lock held by another host is never taken over: its process cannot be checked from here.
    """

    def __init__(self, output_dir: Path):
        self.path = Path(output_dir) / LOCK_FILE
        self.held = False
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            except FileExistsError:
                fd = self._take_over(me)
                if fd is None:  # the file went away between our two looks: try again
                    continue
            else:
                if not _try_flock(fd):  # a same-host contender took it between our create and flock
                    os.close(fd)
                    raise self._busy()
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            self._fd = fd
            self.held = True
            return self
        raise TrainingError(f"{self.path}: could not take the lock")

    def _take_over(self, me: dict[str, Any]) -> int | None:
        owner = self._owner()
        if owner and owner.get("host") != me["host"]:
            raise self._busy(owner)
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return None
        if not _try_flock(fd):
            os.close(fd)
            raise self._busy()
        if not _same_file(fd, self.path):  # the owner released and unlinked it while we waited
            os.close(fd)
            return None
        return fd  # nobody holds it: its run is gone

    def _busy(self, owner: dict[str, Any] | None = None) -> TrainingError:
        owner = owner or self._owner() or {}
        return TrainingError(
            f"{self.path.parent}: another run is writing to this folder "
            f"(pid {owner.get('pid', '?')} on {owner.get('host', '?')}). "
            f"Wait for it, use another output_dir, or delete {self.path} if that run is gone."
        )

    def _owner(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def __exit__(self, *exc) -> None:
        if self.held:
            # Unlink before closing: a contender that opened the old file then sees it is no longer the
            # one at the path (_same_file) instead of believing it holds the lock.
            self.path.unlink(missing_ok=True)
            if self._fd is not None:
                os.close(self._fd)
            self._fd = None
            self.held = False


def _try_flock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # no flock (Windows): O_EXCL alone still keeps a second run out
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except OSError:
        return False


def export_final(model, tokenizer, output_dir: Path, state_dict: dict[str, Any] | None = None) -> None:
    """Write the final HF folder: saved to a temporary folder first, then moved into place file by file,
    so a crash never leaves a folder that looks complete but is not (stage.json is written after).
    ``state_dict``: the full weights gathered from FSDP / ZeRO-3 shards (None: the model's own)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=output_dir))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True, state_dict=state_dict)
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
