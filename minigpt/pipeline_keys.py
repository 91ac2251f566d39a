"""Stage keys of a recipe run: a hash of each stage's resolved config chained with the keys of the stages
before it, plus what its data comes from. A finished stage whose key is unchanged is skipped.

Every path reaches a key absolute and normalised (``minigpt.config_paths``), so how a path was spelled
(relative, absolute, ``./``, ``..``, through a symlinked folder, from which working directory) does not
change a key. Paths inside the run folder are then written as ``<run>/...`` and config fields left at their
defaults are not hashed, so a copied or moved run folder, or a field added in a later version, keeps its keys.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from minigpt.data.sources import hash_files, source_code_hash


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_digest(path: str) -> str | None:
    p = Path(path)
    if not p.is_file():
        return None
    digest = hashlib.sha256()
    with p.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _data_digests(data_config: str | None, generator: str | None = None) -> list[Any]:
    """What a stage's data comes from, besides the files named in its config: for a mixture, the content of
    each local source's files (so editing a source JSONL reruns the stage), the code of each generator, the
    name and revision of each hub dataset; the code of a tokenizer stage's own generator. Missing files
    count as missing (the stage itself then reports them)."""
    from minigpt.registry import CONVERTERS, GENERATORS

    out: list[Any] = (
        [["generator", generator, source_code_hash(GENERATORS.get(generator))]] if generator else []
    )
    if not data_config or not Path(data_config).is_file():
        return out
    out.append(["mixture", _file_digest(data_config)])  # a tokenizer stage lists it nowhere else
    from minigpt.data.mixture_config import load_mixture
    from minigpt.data.readers import list_files
    from minigpt.errors import DataError

    for source in load_mixture(data_config).sources:
        local = source.path or source.offline_path
        if source.converter is not None and ":" in source.converter:
            out.append(["converter", source.converter, _user_code_digest(CONVERTERS, source.converter)])
        if local is not None:
            try:
                files = list_files(local)
            except DataError:
                out.append([source.name, None])
                continue
            root = Path(local) if Path(local).is_dir() else None
            out.append([source.name, hash_files(files, root)])
        elif source.generator is not None:
            out.append([source.name, source.generator, source_code_hash(GENERATORS.get(source.generator))])
        else:
            out.append([source.name, source.hub, source.revision])
    return out


def _user_code_digest(registry: Any, name: str) -> str | None:
    """The code of a user's ``package.module:function`` (editing it must rerun the stage that uses it).
    Built-in converters and rewards are left out: they change with miniGPT's version, not with a run.
    An import that fails counts as missing (the stage itself then reports it)."""
    from minigpt.errors import MiniGPTError

    try:
        return source_code_hash(registry.get(name))
    except MiniGPTError:
        return None


def user_code_digests(params: Any) -> list[Any]:
    """Digests of the user reward functions a stage's ``algo.rewards`` names."""
    from minigpt.registry import REWARDS

    names = [spec.name for spec in getattr(params, "rewards", None) or []]
    return [["reward", n, _user_code_digest(REWARDS, n)] for n in names if ":" in n]


RUN_PLACEHOLDER = "<run>"


def _run_prefixes(run_dir: Path) -> list[str]:
    # Every spelling a config may use for the run folder (as given, absolute, symlinks resolved); "." is
    # left out: paths relative to a run folder that is the working directory do not move with it anyway.
    spellings = {os.path.normpath(run_dir), os.path.abspath(run_dir), os.path.realpath(run_dir)}
    return sorted((s for s in spellings if s != "."), key=len, reverse=True)


def relative_to_run(data: Any, prefixes: list[str]) -> Any:
    """``data`` with every string that is a path in the run folder written as ``<run>/...``."""
    if isinstance(data, dict):
        return {k: relative_to_run(v, prefixes) for k, v in data.items()}
    if isinstance(data, list):
        return [relative_to_run(v, prefixes) for v in data]
    if not isinstance(data, str) or not data:
        return data
    norm = os.path.normpath(data)
    for prefix in prefixes:
        if norm == prefix:
            return RUN_PLACEHOLDER
        if norm.startswith(prefix + os.sep):
            return f"{RUN_PLACEHOLDER}/{Path(norm[len(prefix) + 1 :]).as_posix()}"
    return data


def _is_inside(path: str, folders: list[str]) -> bool:
    target = os.path.abspath(path)
    return any(target == f or target.startswith(f + os.sep) for f in folders)


class StageKeys:
    """Chains stage keys along the recipe's tree: each stage's key covers its config, its inputs and the
    stage it starts from (its parent, by default the one before it), so editing one branch changes the keys
    of that branch only."""

    def __init__(self, run_dir: Path):
        self.prefixes = _run_prefixes(run_dir)
        self.keys: list[str] = []
        self.outputs: list[str] = []
        self.parents: list[int | None] = []

    def ancestors(self, parent: int | None) -> list[int]:
        """``parent`` and the stages it descends from, nearest first."""
        chain = []
        while parent is not None:
            chain.append(parent)
            parent = self.parents[parent]
        return chain

    def add(
        self,
        config: Any,
        exclude: set[str],
        files: list[str],
        output_dir: str,
        data_config: str | None = None,
        generator: str | None = None,
        code: list[Any] | None = None,
        parent: int | None = -1,
    ) -> str:
        """The key of the next stage; ``parent``: the index of the stage it starts from (-1: the one added
        last; None: none)."""
        if parent == -1:
            parent = len(self.keys) - 1 if self.keys else None
        earlier_outputs = [self.outputs[i] for i in self.ancestors(parent)]
        digests = [_file_digest(f) for f in files]
        # Fields left at their defaults are not hashed: a field added to the config in a later version of
        # miniGPT must not make every finished stage of an existing run look changed.
        dump = config.model_dump(mode="json", exclude=exclude, exclude_defaults=True)
        # A file an ancestor wrote is covered by that stage's key (chained here); its content may not exist
        # yet when the run is planned, so hashing it would change the key once it does.
        digests = [None if _is_inside(f, earlier_outputs) else d for f, d in zip(files, digests, strict=True)]
        sources = _data_digests(data_config, generator)
        if code:  # only when there is user code, so keys of stages without any stay as they were
            sources = [*sources, *code]
        previous = self.keys[parent] if parent is not None else ""
        key = _hash([previous, relative_to_run(dump, self.prefixes), digests, sources])
        self.keys.append(key)
        self.outputs.append(os.path.abspath(output_dir))
        self.parents.append(parent)
        return key
