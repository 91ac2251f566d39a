"""Where a stage's ``model.init`` comes from: a preset (random weights), a hub id, a hub download (a snapshot
folder in the Hugging Face cache), an earlier stage's folder, or some other local folder.

The model card names its ``base_model`` from this, and an adapter exported for upload names a base that
others can download. A machine-local path is never a name others can resolve, so only hub ids are ever given
as a base; local folders are described by their folder name. Torch-free."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# The cache layout huggingface_hub writes: <cache>/models--<org>--<name>/snapshots/<commit>/
_SNAPSHOT = re.compile(r"^models--(?P<repo>.+)$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_MAX_DEPTH = 32  # stages chained through their configs; a loop (hand-edited configs) stops here


@dataclass(frozen=True)
class ModelOrigin:
    kind: Literal["preset", "hub", "stage", "folder"]
    name: str
    """The preset name, the hub id, or the folder's name (never its full machine-local path)."""
    hub_id: str | None = None
    """These very weights on the hub: the hub id, or the repository of a cached snapshot."""
    revision: str | None = None
    root_hub_id: str | None = None
    """The hub model the chain of stages started from (``hub_id`` itself when that is set)."""
    root_revision: str | None = None
    stage: str | None = None
    """For an earlier stage's folder: the stage that trained it (``sft``, ``dpo``, ...)."""
    parent: ModelOrigin | None = None
    """For an earlier stage's folder: where that stage started from."""


def hub_snapshot(path: Path) -> tuple[str, str] | None:
    """(hub id, commit) of a folder that is a snapshot in the Hugging Face cache, else None."""
    resolved = path.expanduser().resolve()
    if resolved.parent.name != "snapshots" or not _COMMIT.match(resolved.name):
        return None
    match = _SNAPSHOT.match(resolved.parent.parent.name)
    if match is None:
        return None
    return match.group("repo").replace("--", "/", 1), resolved.name


def is_stage_folder(path: Path) -> bool:
    """A folder a miniGPT stage trained (its resolved config and its summary are there)."""
    return (path / "config.yaml").is_file() and (path / "stage.json").is_file()


def _stage_model(path: Path) -> tuple[str | None, str | None, str | None]:
    """(stage, model.init, model.revision) from a stage folder's config.yaml."""
    import yaml

    try:
        saved = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None, None, None
    model = saved.get("model") if isinstance(saved, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("init"), str):
        return None, None, None
    revision = model.get("revision")
    return saved.get("stage"), model["init"], revision if isinstance(revision, str) else None


def model_origin(init: str, revision: str | None = None, _depth: int = 0) -> ModelOrigin:
    """Classify ``init`` as the runner does (a preset name first, then an existing folder, else a hub id)."""
    from minigpt.registry import PRESETS

    if init in PRESETS:
        return ModelOrigin("preset", init)
    path = Path(init).expanduser()
    if not path.exists():
        return ModelOrigin("hub", init, init, revision, init, revision)
    name = path.resolve().name
    snapshot = hub_snapshot(path)
    if snapshot is not None:
        repo, commit = snapshot
        return ModelOrigin("hub", repo, repo, commit, repo, commit)
    if is_stage_folder(path) and _depth < _MAX_DEPTH:
        stage, parent_init, parent_revision = _stage_model(path)
        parent = model_origin(parent_init, parent_revision, _depth + 1) if parent_init else None
        return ModelOrigin(
            "stage",
            name,
            root_hub_id=parent.root_hub_id if parent else None,
            root_revision=parent.root_revision if parent else None,
            stage=stage,
            parent=parent,
        )
    return ModelOrigin("folder", name)


def describe_origin(origin: ModelOrigin) -> str:
    """One sentence-fragment for a model card: what the weights started as, back to the first stage."""
    if origin.kind == "preset":
        return f"random weights of the miniGPT preset `{origin.name}` (trained from scratch)"
    if origin.kind == "hub":
        at = f" at revision `{origin.revision}`" if origin.revision else ""
        return f"the hub model [`{origin.hub_id}`](https://huggingface.co/{origin.hub_id}){at}"
    if origin.kind == "folder":
        return f"the local model folder `{origin.name}` (not on the hub)"
    trained = f" (stage `{origin.stage}`)" if origin.stage else ""
    before = f", which started from {describe_origin(origin.parent)}" if origin.parent else ""
    return f"the earlier stage folder `{origin.name}`{trained}{before}"
