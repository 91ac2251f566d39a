"""Where a relative path in a config points, by one rule: the folder of the file that names it.

A recipe's ``output_dir``, its ``stages[].config`` files and the paths in its inline stage configs and
``defaults`` are relative to the recipe file; the paths in a stage config file to that file; a mixture's
sources to the mixture file (``minigpt.data.mixture_config``). A path given on the command line (``--set``,
``--config``) is relative to the working directory. There is no fallback: a relative path that is missing
where the rule puts it but exists from the working directory is refused with the spelling to use instead.

Every path is stored absolute and normalised (``./x``, ``x/../x``, a trailing slash, a symlinked folder all
give one spelling), so a recipe's stage keys do not depend on how its paths were written. Torch-free.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from minigpt.errors import ConfigError

# Fields that are always paths, and fields that hold a path or a name (a preset, a hub id such as
# Qwen/Qwen2.5-0.5B): such a value is a path when it is spelled like one or exists, else a name.
STAGE_PATHS = ("output_dir", "data.train", "data.validation", "data.data_config", "data.prepared_dir")
STAGE_NAMES_OR_PATHS = ("model.init", "model.tokenizer")
TOKENIZER_PATHS = ("output_dir", "files", "data_config")
LIST_FIELDS = {"data.train", "data.validation", "files"}  # a lone string is read as a one-item list


def canonical(value: str | os.PathLike, base: Path) -> str:
    """``value`` (relative to ``base``) as an absolute path: normalised, ``~`` expanded, and the symlinks in
    its folders resolved. A folder is resolved whole; a file keeps its own name (its extension says how it
    is read, which a symlink's target, e.g. a Hugging Face cache blob, may not have)."""
    path = os.path.abspath(os.path.join(base, os.path.expanduser(os.fspath(value))))
    if os.path.isdir(path):
        return os.path.realpath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _looks_like_path(value: str, base: Path) -> bool:
    return value in (".", "..") or value.startswith(("./", "../", "~", "/")) or (base / value).exists()


def _is_preset(value: str) -> bool:
    from minigpt.registry import PRESETS

    return value in PRESETS


class _Resolver:
    """Resolves the path fields of one mapping against ``base``; ``where`` names a field's file and line."""

    def __init__(self, base: Path, where: Callable[[tuple], str]):
        self.base, self.where = base, where
        # A value missing beside its file but present from the working directory was written for the old
        # fallback; kept as a name, model loading would find it there again.
        self.check_cwd = Path(base).resolve() != Path.cwd().resolve()

    def path(self, value: Any, loc: tuple) -> Any:
        if not isinstance(value, str) or not value:
            return value  # not a path: validation reports it with the file and line
        if not os.path.isabs(os.path.expanduser(value)):
            self._refuse_cwd_only(value, loc)
        return canonical(value, self.base)

    def name_or_path(self, value: Any, loc: tuple) -> Any:
        if not isinstance(value, str) or not value or _is_preset(value):
            return value
        if _looks_like_path(value, self.base):
            return self.path(value, loc)
        self._refuse_cwd_only(value, loc)
        return value  # a hub id

    def _refuse_cwd_only(self, value: str, loc: tuple) -> None:
        if self.check_cwd and not (self.base / value).exists() and Path(value).exists():
            key = ".".join(str(p) for p in loc)
            suggestion = os.path.relpath(os.path.abspath(value), self.base)
            raise ConfigError(
                f"{self.where(loc)}: {key} '{value}': relative paths are relative to the folder of the file "
                f"that names them ({self.base}), where it does not exist; it exists from the working "
                f"directory: write '{suggestion}' or an absolute path"
            )


def _get(data: Any, keys: list[str]) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _set(data: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        data = data[key]
    data[keys[-1]] = value


def _resolve_fields(
    data: Any,
    resolver: _Resolver,
    fields: tuple[str, ...],
    names: tuple[str, ...],
    previous: Any,
    prefix: tuple,
) -> Any:
    if not isinstance(data, dict):
        return data
    data = copy.deepcopy(data)
    for field in (*fields, *names):
        keys = field.split(".")
        if any(not isinstance(_get(data, keys[:i]), dict) for i in range(1, len(keys))):
            continue  # a section that is not a mapping: validation reports it
        value = _get(data, keys)
        if value is None or (previous is not None and value == _get(previous, keys)):
            continue  # unchanged since the file's own pass: already resolved against the file
        resolve = resolver.name_or_path if field in names else resolver.path
        loc = (*prefix, *keys)
        if field in LIST_FIELDS and isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            value = [resolve(v, (*loc, i)) for i, v in enumerate(value)]
        else:
            value = resolve(value, loc)
        _set(data, keys, value)
    return data


def _where(source: str, lines: dict[tuple, int] | None) -> Callable[[tuple], str]:
    def where(loc: tuple) -> str:
        line = (lines or {}).get(loc)
        return f"{source}:{line}" if line else source

    return where


def resolve_stage_paths(
    data: Any,
    base: Path,
    *,
    kind: str = "train",
    previous: Any = None,
    source: str = "",
    lines: dict[tuple, int] | None = None,
    prefix: tuple = (),
) -> Any:
    """The paths of a stage config (``kind`` train or tokenizer) resolved against ``base``. With
    ``previous`` (the mapping before --set overrides were applied), only the values the overrides changed."""
    resolver = _Resolver(base, _where(source, lines))
    if kind == "tokenizer":
        return _resolve_fields(data, resolver, TOKENIZER_PATHS, (), previous, prefix)
    return _resolve_fields(data, resolver, STAGE_PATHS, STAGE_NAMES_OR_PATHS, previous, prefix)


def resolve_recipe_paths(
    raw: dict[str, Any],
    base: Path,
    *,
    previous: dict[str, Any] | None = None,
    source: str = "",
    lines: dict[tuple, int] | None = None,
) -> dict[str, Any]:
    """The paths of a recipe mapping resolved against ``base``: ``output_dir``, the paths in ``defaults``,
    each ``stages[].config`` file or the paths of each inline config (by the stage's ``kind``). With
    ``previous`` (the mapping before --set overrides were applied), only the values the overrides changed."""
    resolver = _Resolver(base, _where(source, lines))
    raw = _resolve_fields(raw, resolver, ("output_dir",), (), previous, ())

    def section(data: Any, kind: Any, *keys: Any) -> Any:
        return resolve_stage_paths(
            data,
            base,
            kind="tokenizer" if kind == "tokenizer" else "train",
            previous=None if previous is None else value_at(previous, keys),
            source=source,
            lines=lines,
            prefix=keys,
        )

    if isinstance(raw.get("defaults"), dict):
        raw["defaults"] = section(raw["defaults"], "train", "defaults")
    for index, entry in enumerate(raw.get("stages") if isinstance(raw.get("stages"), list) else []):
        config = entry.get("config") if isinstance(entry, dict) else None
        if isinstance(config, str):
            if previous is None or config != value_at(previous, ("stages", index, "config")):
                entry["config"] = resolver.path(config, ("stages", index, "config"))
        elif isinstance(config, dict):
            entry["config"] = section(config, entry.get("kind"), "stages", index, "config")
    return raw


def value_at(data: Any, keys: tuple) -> Any:
    """The value at ``keys`` (mapping keys and list indices), None where there is none."""
    for key in keys:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and key < len(data):
            data = data[key]
        else:
            return None
    return data
