"""Checkpoint discovery, atomic checkpoint publication and rotation, and atomic export of the final HF folder
(the output folder's lock is ``minigpt.output_lock``).

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
import struct
import tempfile
import uuid
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from minigpt.disk import normal_modes, writing
from minigpt.errors import ConfigError

_CKPT = re.compile(r"^checkpoint-(\d+)$")
# Staging (being written) and doomed (being deleted) folders: "checkpoint-N.tmp-<token>" / ".del-<token>".
# They never match _CKPT, so a crash inside either is invisible to resume.
_LEFTOVER = re.compile(r"^checkpoint-\d+\.(tmp|del)-.+$")
DONE_FILE = "stage.json"


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


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header with each tensor's byte range, then the
    data: a file cut short (a full disk, a killed copy) is shorter than the last range says."""
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len > size:
                return f"{path.name} is truncated ({size} bytes)"
            header = json.loads(handle.read(header_len))
    except (struct.error, ValueError, UnicodeDecodeError):
        return f"{path.name} has no readable safetensors header"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        return f"{path.name} is truncated ({size} of {expected} bytes)"
    return None


def _torch_file_problem(path: Path) -> str | None:
    """``torch.save`` writes a zip archive; a cut-short one has lost its central directory, or members reach
    past its end."""
    try:
        with zipfile.ZipFile(path) as archive:
            size = path.stat().st_size
            for info in archive.infolist():
                if info.header_offset + info.compress_size > size:
                    return f"{path.name} is truncated"
    except (zipfile.BadZipFile, OSError, ValueError):
        return f"{path.name} is truncated or not a torch file"
    return None


def _json_problem(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return f"{path.name} is not valid JSON"
    return None if isinstance(data, dict) else f"{path.name} is not a JSON object"


def checkpoint_problem(path: Path) -> str | None:
    """Why a complete-looking checkpoint cannot be resumed from (a truncated or corrupt file), or None.
    Reads headers and archive directories only, not the tensors: cheap even for a large model."""
    for child in sorted(path.iterdir()):
        if not child.is_file():
            continue
        if child.suffix == ".safetensors":
            problem = _safetensors_problem(child)
        elif child.suffix in (".pt", ".pth", ".bin"):
            problem = _torch_file_problem(child)
        elif child.name in ("trainer_state.json", "minigpt_state.json"):
            problem = _json_problem(child)
        else:
            continue
        if problem:
            return problem
    return None


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


def resumable_checkpoint(ckpt_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint whose files are intact, and one note per newer one passed over
    because a file in it is truncated or corrupt (resume falls back to the previous one, saying so)."""
    notes: list[str] = []
    for path in reversed(complete_checkpoints(ckpt_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path, notes
        notes.append(f"{path} is damaged ({problem}): not resuming from it")
    return None, notes


def newest_checkpoint(ckpt_dir: Path) -> Path | None:
    return resumable_checkpoint(ckpt_dir)[0]


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
    normal_modes(staged)
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


def export_final(model, tokenizer, output_dir: Path, state_dict: dict[str, Any] | None = None) -> None:
    """Write the final HF folder: saved to a temporary folder first, then moved into place file by file,
    so a crash never leaves a folder that looks complete but is not (stage.json is written after).
    ``state_dict``: the full weights gathered from FSDP / ZeRO-3 shards (None: the model's own)."""
    with writing(output_dir, "exporting the final model"):
        output_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=EXPORT_PREFIX, dir=output_dir))
        try:
            model.save_pretrained(str(tmp), safe_serialization=True, state_dict=state_dict)
            tokenizer.save_pretrained(str(tmp))
            normal_modes(tmp)
            for item in tmp.iterdir():
                os.replace(item, output_dir / item.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


EXPORT_PREFIX = ".export-"


def clear_leftovers(output_dir: Path) -> list[Path]:
    """Remove what killed runs left in a stage folder (staging copies of an export, a half-written
    ``stage.json`` or model card, checkpoint staging and half-deleted folders). Called under the folder's
    lock, so no live writer owns any of them. Returns what was removed."""
    found: list[Path] = []
    if output_dir.is_dir():
        found += [p for p in output_dir.iterdir() if p.name.startswith(EXPORT_PREFIX) and p.is_dir()]
        found += [p for p in output_dir.glob("*.json.tmp") if p.is_file()]
        found += [p for p in output_dir.glob("*.md.tmp") if p.is_file()]  # a half-written model card
    ckpt_dir = output_dir / "checkpoints"
    if ckpt_dir.is_dir():
        found += [p for p in ckpt_dir.iterdir() if _LEFTOVER.match(p.name)]
    for path in found:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return found


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` (secrets redacted: stage.json and manifests name paths) in one rename."""
    from minigpt.secrets import redact

    _write_atomic(path, json.dumps(redact(data), indent=2, default=str))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (secrets redacted: a model card quotes configs) in one rename."""
    from minigpt.secrets import redact_text

    _write_atomic(path, redact_text(text))


def _write_atomic(path: Path, text: str) -> None:
    # The ".tmp" name is one clear_leftovers removes if a kill strands it.
    with writing(path, f"writing {path.name}"):
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def read_json_file(path: Path, what: str) -> dict[str, Any]:
    """A JSON object the project wrote (a manifest, a trainer state); a corrupt one is an error naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: the {what} is corrupt ({exc}). Restore it from a backup or delete it "
            "(the stages it described will then run again)"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the {what} is corrupt (not a JSON object)")
    return data


def read_done(output_dir: Path) -> dict[str, Any] | None:
    path = output_dir / DONE_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("status") == "done" else None
