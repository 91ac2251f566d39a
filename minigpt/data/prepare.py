"""`plan` and `prepare`: the Python API the CLI and the training stages call.

prepare writes ``<stage>_<name>_train.jsonl``, ``..._val.jsonl`` and ``..._manifest.json`` atomically (all
built in a work folder inside the output folder, then renamed; the manifest last), so an error leaves
nothing half-written. With ``use_prepared=True`` a previous output is reused only when its fingerprint
matches and its files still hash to what the manifest recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import minigpt
from minigpt.data.build import MixtureBuild, Stream, build_mixture
from minigpt.data.mix import rng_for
from minigpt.data.mixture_config import MixtureConfig, load_mixture
from minigpt.data.plan_table import format_plan, source_records
from minigpt.data.readers import read_jsonl
from minigpt.data.row_pipeline import RowProcessor, SourceStats
from minigpt.data.schema import render_plain
from minigpt.data.sources import OpenedSource, offline_mode, open_source, source_code_hash
from minigpt.data.tokens import TokenCounter, Tokenizer, load_tokenizer, tokenizer_hash
from minigpt.errors import DataError
from minigpt.registry import CONVERTERS
from minigpt.secrets import redact

FORMAT_VERSION = 2  # 2: a conversation's turns are written under messages (was conversations)
_PACKAGE = Path(__file__).resolve().parent


@dataclass
class PreparedDataset:
    train_path: Path
    val_path: Path
    manifest_path: Path
    manifest: dict[str, Any]
    reused: bool
    summary: str = ""

    def read(self, split: str = "train") -> list[dict[str, Any]]:
        """The rows of one split ("train" or "val")."""
        return read_jsonl(self.train_path if split == "train" else self.val_path)


@dataclass
class MixturePlan:
    config: MixtureConfig
    build: MixtureBuild
    text: str

    def table(self) -> str:
        return self.text


@dataclass
class _Setup:
    config: MixtureConfig
    source_label: str
    tokenizer: Tokenizer | None
    tokenizer_label: str | None
    offline: bool
    opened: list[OpenedSource]

    @property
    def counter(self) -> TokenCounter | None:
        if self.tokenizer is None:
            return None
        return TokenCounter(self.tokenizer, f"tokenizer {self.tokenizer_label}")


def _setup(config_or_path: Any, tokenizer: Any, overrides: list[str] | None, offline: bool | None) -> _Setup:
    config = load_mixture(config_or_path, overrides)
    label = str(config_or_path) if isinstance(config_or_path, str | os.PathLike) else "<mixture config>"
    spec = tokenizer if tokenizer is not None else config.tokenizer
    tok = load_tokenizer(spec, config.trust_remote_code)
    tok_label = None
    if tok is not None:
        tok_label = (
            str(spec) if isinstance(spec, str | os.PathLike) else getattr(tok, "name_or_path", "") or "object"
        )
    off = offline_mode(offline)
    return _Setup(config, label, tok, tok_label, off, [open_source(s, off) for s in config.sources])


def code_version(config: MixtureConfig) -> str:
    """Digest of this package's code and of every converter the config names (its module's source)."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(path.relative_to(_PACKAGE).as_posix().encode() + b"\0" + path.read_bytes())
    for name in sorted({s.converter for s in config.sources if s.converter}):
        digest.update(f"{name}:{source_code_hash(CONVERTERS.get(name))}".encode())
    return digest.hexdigest()


def fingerprint(setup: _Setup) -> str:
    """Everything the output depends on: the whole config, source contents, code, tokenizer."""
    payload = {
        "format": FORMAT_VERSION,
        # num_proc changes how fast, never what: a set prepared with 8 processes is reused with 1.
        # trust_remote_code decides whether the tokenizer may load, not what it counts (its hash below).
        "config": setup.config.model_dump(mode="json", exclude={"num_proc", "trust_remote_code"}),
        "sources": [{"origin": o.origin, **o.content_id()} for o in setup.opened],
        "code": code_version(setup.config),
        "tokenizer": tokenizer_hash(setup.tokenizer) if setup.tokenizer is not None else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def plan_dataset(
    config_or_path: MixtureConfig | dict[str, Any] | str | os.PathLike,
    tokenizer: str | os.PathLike | Tokenizer | None = None,
    overrides: list[str] | None = None,
    *,
    offline: bool | None = None,
) -> MixturePlan:
    """Run the mixture without writing anything; the plan reports what prepare would produce."""
    setup = _setup(config_or_path, tokenizer, overrides, offline)
    build = build_mixture(setup.config, setup.opened, setup.counter, workdir=None)
    return MixturePlan(
        setup.config, build, format_plan(build, setup.source_label, setup.tokenizer_label, setup.offline)
    )


def iter_mixture_rows(
    config_or_path: MixtureConfig | dict[str, Any] | str | os.PathLike,
    overrides: list[str] | None = None,
    *,
    offline: bool | None = None,
) -> Iterator[dict[str, Any]]:
    """Every accepted row of every source once, in config order, lazily: no weights, budget or validation
    split. This is what a tokenizer is trained on, so it needs no tokenizer: token filters are skipped and a
    text mixture renders conversations in the plain format."""
    config = load_mixture(config_or_path, overrides)
    off = offline_mode(offline)
    processor = RowProcessor(config, counter=None, render=render_plain if config.schema == "text" else None)
    for src in config.sources:
        opened = open_source(src, off)
        stats = SourceStats(src.name, opened.origin, opened.offline_sample, src.weight, 0.0)
        for row in processor.rows(opened, stats):
            yield row.data


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write(streams: list[Stream], path: Path, mix_seed: Any | None) -> dict[str, Any]:
    """Write streams to ``path``: interleaved at random in proportion to what is left (train), or one after
    another (validation, mix_seed None). Returns rows and sha256."""
    digest, rows = hashlib.sha256(), 0
    remaining = [s.count for s in streams]
    iterators = [s.lines() for s in streams]
    rng = rng_for(mix_seed, "interleave") if mix_seed is not None else None
    with open(path, "w", encoding="utf-8") as handle:
        while any(remaining):
            if rng is None:
                i = next(k for k, left in enumerate(remaining) if left)
            else:
                i = rng.choices(range(len(streams)), weights=remaining)[0]
            line = next(iterators[i])
            remaining[i] -= 1
            handle.write(line)
            digest.update(line.encode("utf-8"))
            rows += 1
    return {"rows": rows, "sha256": digest.hexdigest()}


def _paths(output_dir: Path, config: MixtureConfig) -> tuple[Path, Path, Path]:
    stem = config.stem
    return (
        output_dir / f"{stem}_train.jsonl",
        output_dir / f"{stem}_val.jsonl",
        output_dir / f"{stem}_manifest.json",
    )


def _reusable(train: Path, val: Path, manifest_path: Path, fp: str) -> dict[str, Any] | None:
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("fingerprint") != fp:
        return None
    for split, path in (("train", train), ("val", val)):
        if not path.is_file() or _sha256(path) != manifest.get(split, {}).get("sha256"):
            return None  # edited or half-replaced output: prepare again
    return manifest


def _sum(values: list[int | None]) -> int | None:
    return None if any(v is None for v in values) else sum(values)


def _manifest(
    setup: _Setup, fp: str, build: MixtureBuild, train: dict[str, Any], val: dict[str, Any]
) -> dict[str, Any]:
    config = setup.config
    records = source_records(build)
    dropped: Counter = sum((Counter(r["dropped"]) for r in records), Counter())
    return {
        "name": config.name,
        "stage": config.stage,
        "schema": config.schema,
        "fingerprint": fp,
        "format": FORMAT_VERSION,
        "minigpt_version": minigpt.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "offline": setup.offline,
        "tokenizer": setup.tokenizer_label,
        "train": {**train, "tokens": _sum([s.drawn_tokens for s in build.stats])},
        "val": {**val, "tokens": _sum([s.val_tokens for s in build.stats])},
        "sources": records,
        "dropped": dict(dropped),
        "warnings": build.warnings,
        "config": config.model_dump(mode="json"),
    }


def prepare_dataset(
    config_or_path: MixtureConfig | dict[str, Any] | str | os.PathLike,
    output_dir: str | os.PathLike,
    tokenizer: str | os.PathLike | Tokenizer | None = None,
    use_prepared: bool = False,
    overrides: list[str] | None = None,
    *,
    offline: bool | None = None,
    reuse_only: bool = False,
) -> PreparedDataset:
    """Prepare (or, with use_prepared and a matching fingerprint, reuse) a mixture's train/val files.

    ``reuse_only``: never write; fail unless a matching prepared set is there. Training processes other than
    the main one use it, after the main one prepared the set (one writer per output folder)."""
    setup = _setup(config_or_path, tokenizer, overrides, offline)
    config, out = setup.config, Path(output_dir)
    train_path, val_path, manifest_path = _paths(out, config)
    fp = fingerprint(setup)
    if (use_prepared or reuse_only) and (
        manifest := _reusable(train_path, val_path, manifest_path, fp)
    ) is not None:
        note = f"reused {train_path} ({manifest['train']['rows']} rows): fingerprint {fp[:12]} matches"
        return PreparedDataset(train_path, val_path, manifest_path, manifest, reused=True, summary=note)
    if reuse_only:
        raise DataError(
            f"{manifest_path}: no prepared data with fingerprint {fp[:12]} to reuse. With several processes "
            "the main one prepares the mixture and the others reuse it: their sources, tokenizer and code "
            "must be the same (a shared file system for the output folder, the same checkout everywhere)."
        )
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{config.stem}.work-", dir=out))
    try:
        build = build_mixture(config, setup.opened, setup.counter, workdir=work)
        train = _write(build.train, work / "train.jsonl", f"{config.seed}:{config.stem}")
        val = _write(build.val, work / "val.jsonl", None)
        manifest = redact(  # it records source paths, hub ids and revisions, where a token may sit
            _manifest(setup, fp, build, {"path": train_path.name, **train}, {"path": val_path.name, **val})
        )
        (work / "manifest.json").write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", "utf-8"
        )
        manifest_path.unlink(missing_ok=True)  # no manifest may describe a half-replaced pair of files
        os.replace(work / "train.jsonl", train_path)
        os.replace(work / "val.jsonl", val_path)
        os.replace(work / "manifest.json", manifest_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = format_plan(build, setup.source_label, setup.tokenizer_label, setup.offline)
    summary += (
        f"\nwrote {train_path} ({train['rows']} rows), {val_path} ({val['rows']} rows), "
        f"{manifest_path} (fingerprint {fp[:12]})"
    )
    return PreparedDataset(train_path, val_path, manifest_path, manifest, reused=False, summary=summary)
