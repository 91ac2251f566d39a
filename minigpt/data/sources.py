"""Where raw rows come from: local files and folders, hub datasets, generators; plus the offline override.

Offline (``MINIGPT_OFFLINE=1``, or ``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1`` unless MINIGPT_OFFLINE=0):
a hub source reads its ``offline_path`` sample instead, and the plan says so.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minigpt.data.mixture_config import SourceConfig
from minigpt.data.problems import Location, data_error
from minigpt.data.readers import RawRow, iter_file, list_files
from minigpt.errors import DataError
from minigpt.registry import GENERATORS

_TRUE = ("1", "true", "yes", "on")


def offline_mode(explicit: bool | None = None) -> bool:
    """True when hub sources must use their offline samples. An explicit argument wins, then
    MINIGPT_OFFLINE (set to 0 to read a cached hub copy while HF_HUB_OFFLINE=1), then the HF variables."""
    if explicit is not None:
        return explicit
    own = os.environ.get("MINIGPT_OFFLINE", "").strip().lower()
    if own:
        return own in _TRUE
    return any(
        os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


START_MODEL_ARG = "start_model"
"""A generator parameter of this name samples from a model: a stage preparing the mixture fills it with its
own starting model (``model.init``) when the mixture does not name one (:func:`start_model_overrides`)."""


def start_model_overrides(config: Any, start: str) -> list[str]:
    """``--set`` overrides giving every generator source of the mixture ``config`` that takes a
    ``start_model`` and has none the model ``start``."""
    out = []
    for index, src in enumerate(config.sources):
        if src.generator is None or START_MODEL_ARG in src.generator_args:
            continue
        if START_MODEL_ARG in inspect.signature(GENERATORS.get(src.generator)).parameters:
            out.append(f"sources.{index}.generator_args.{START_MODEL_ARG}={json.dumps(start)}")
    return out


def hash_files(files: list[Path], root: Path | None) -> str:
    """Digest of the files' contents (and names): size and mtime are not evidence of sameness."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root) if root else path.name).encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def source_code_hash(obj: object) -> str:
    """Digest of the source of the module defining ``obj`` (converter or generator code version)."""
    module = inspect.getmodule(obj)
    try:
        text = inspect.getsource(module) if module is not None else repr(obj)
    except (OSError, TypeError):  # built in or defined interactively: fall back to its qualified name
        text = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class OpenedSource:
    """A source ready to be read: what it is (for the plan), how to fingerprint it, and its rows."""

    config: SourceConfig
    origin: str
    offline_sample: bool = False
    files: list[Path] = field(default_factory=list)
    root: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def content_id(self) -> dict[str, str | None]:
        """What identifies the data read: a content hash for files, the revision for the hub, code for generators."""
        src = self.config
        if self.files:
            return {"files": hash_files(self.files, self.root)}
        if src.generator is not None:
            found = {
                "generator": src.generator,
                "code": source_code_hash(GENERATORS.get(src.generator)),
            }
            start = src.generator_args.get(START_MODEL_ARG)
            if (
                isinstance(start, str) and Path(start).is_dir()
            ):  # rows sampled from a model: its weights count
                weights = sorted(Path(start).glob("*.safetensors")) + sorted(Path(start).glob("config.json"))
                found[START_MODEL_ARG] = hash_files(weights, Path(start))
            return found
        return {
            "hub": src.hub,
            "config": src.config,
            "data_dir": src.data_dir,
            "split": src.split or "train",
            "revision": _hub_revision(src),
        }

    def rows(self) -> Iterator[RawRow]:
        src = self.config
        if self.files:
            for path in self.files:
                yield from iter_file(path)
        elif src.generator is not None:
            yield from _generator_rows(src)
        else:
            yield from _hub_rows(src)


def _hub_revision(src: SourceConfig) -> str | None:
    """The pinned revision, or the commit the hub reports now; None when neither is known (unpinned)."""
    if src.revision:
        return src.revision
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(src.hub).sha
    except Exception:  # offline or no access: the fingerprint then records an unpinned source
        return None


def _hub_rows(src: SourceConfig) -> Iterator[RawRow]:
    import datasets

    label = f"hub:{src.hub}"
    try:
        dataset = datasets.load_dataset(
            src.hub,
            name=src.config,
            split=src.split or "train",
            revision=src.revision,
            streaming=src.streaming,
            data_dir=src.data_dir,
        )
    except Exception as exc:  # network, auth, missing config: all are "cannot load", with the cause
        raise data_error(
            f"cannot load hub dataset: {exc}", file=label, reason="unreadable hub dataset"
        ) from exc
    for number, record in enumerate(dataset, 1):
        yield RawRow(dict(record), Location(label, row=number))


def _generator_rows(src: SourceConfig) -> Iterator[RawRow]:
    label = f"generator:{src.generator}"
    for number, record in enumerate(GENERATORS.get(src.generator)(**src.generator_args), 1):
        loc = Location(label, row=number)
        if isinstance(record, dict):
            yield RawRow(record, loc)
        else:
            yield RawRow(
                None,
                loc,
                data_error(
                    f"generator yielded {type(record).__name__}, not a dict row",
                    file=label,
                    row=number,
                    reason="row is not an object",
                ),
            )


def open_source(src: SourceConfig, offline: bool) -> OpenedSource:
    """Decide what a source reads now (sample or hub), list its files; errors name the source."""
    if src.generator is not None:
        GENERATORS.get(src.generator)  # unknown generator: fail before reading anything
        return OpenedSource(src, origin=f"generator {src.generator}")
    path = src.path
    opened = OpenedSource(src, origin=f"file {src.path}" if path else f"hub {src.hub}")
    if src.hub is not None:
        detail = "".join(
            f" {k}={v}"
            for k, v in (
                ("config", src.config),
                ("data_dir", src.data_dir),
                ("split", src.split),
                ("revision", src.revision),
            )
            if v
        )
        opened.origin = f"hub {src.hub}{detail}"
        if not offline:
            if not src.revision:
                opened.warnings.append(
                    f"source '{src.name}': hub revision not pinned; set revision: for reuse"
                )
            return opened
        if src.offline_path is None:
            raise DataError(
                f"source '{src.name}' is a hub dataset ({src.hub}) and we are offline, but it has no "
                "offline_path sample; give one or unset MINIGPT_OFFLINE / HF_HUB_OFFLINE"
            )
        path = src.offline_path
        opened.offline_sample = True
        opened.origin = f"OFFLINE SAMPLE {path} (instead of hub {src.hub})"
    try:
        opened.files = list_files(path)
    except DataError as exc:
        raise DataError(f"source '{src.name}': {exc}") from None
    opened.root = Path(path) if Path(path).is_dir() else None
    return opened
