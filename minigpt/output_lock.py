"""One writer per output folder: the lock a stage holds on its output folder for the whole run
(docs/reliability.md). Two runs on one folder would interleave checkpoints and metrics."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from minigpt.disk import writing
from minigpt.errors import TrainingError

LOCK_FILE = ".minigpt.lock"


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
        with writing(self.path, "taking the output folder's lock"):
            return self._acquire()

    def _acquire(self) -> OutputLock:
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
