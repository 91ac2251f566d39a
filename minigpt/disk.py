"""Disk faults as one clear line: a full disk, a read-only folder or a denied write while the project writes
its own files (lock, checkpoints, the final export, prepared data, manifests) becomes a :class:`DiskError`
naming the path and the cause, instead of a traceback from whichever library was writing.

Libraries report a full disk in their own ways (``OSError`` with ``ENOSPC`` from Python's file objects, a
``SafetensorError`` "os error 28" from safetensors' Rust writer, a ``RuntimeError`` "file write failed" from
``torch.save``), so besides the errno the folder itself is probed after a failed write.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from minigpt.errors import MiniGPTError

_ERRNO_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}
# Free space below which a failed write is put down to a full disk (a write failed: something ran out).
_NEARLY_FULL_BYTES = 1 << 20


class DiskError(MiniGPTError):
    """Writing a file failed because of the disk or the folder (full, read-only, not writable)."""


def _existing_folder(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


def probe_folder(path: str | os.PathLike) -> str | None:
    """Why nothing can be written at ``path`` (its nearest existing folder), or None if it looks fine."""
    folder = _existing_folder(Path(path))
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    if stats.f_flag & os.ST_RDONLY:
        return "read-only file system"
    if not os.access(folder, os.W_OK):
        return "permission denied"
    if stats.f_bavail * stats.f_frsize < _NEARLY_FULL_BYTES:
        return "no space left on device"
    return None


def disk_cause(exc: BaseException, path: str | os.PathLike) -> str | None:
    """The disk-level cause of ``exc`` raised while writing under ``path``, or None if it is not one."""
    for err in _chain(exc):
        if isinstance(err, OSError) and err.errno in _ERRNO_CAUSES:
            return _ERRNO_CAUSES[err.errno]
    return probe_folder(path)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


@contextlib.contextmanager
def writing(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn a disk fault raised inside the block into ``DiskError("<path>: <cause> (while <what>)")``.
    Other errors pass through unchanged."""
    try:
        yield
    except MiniGPTError:
        raise
    except Exception as exc:
        cause = disk_cause(exc, path)
        if cause is None:
            raise
        raise DiskError(f"{path}: {cause} (while {what})") from exc


def _umask() -> int:
    try:  # Linux reports it without changing it (os.umask would, for a moment, for every thread)
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def normal_modes(root: str | os.PathLike) -> None:
    """Give every file under ``root`` the mode a plain ``open`` would (0644 under umask 0022) and every folder
    0755 likewise: some writers (transformers' safetensors save, ``tempfile``) create 0600 files and 0700
    folders, which other users of a shared model folder could not read."""
    mask = _umask()
    root = Path(root)
    if root.is_dir():
        os.chmod(root, 0o777 & ~mask)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o666 & ~mask)
