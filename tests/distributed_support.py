"""Run by tests/test_distributed.py inside processes started by torchrun / accelerate launch.

As a program (``-m distributed_support train --config X``, with tests/ on PYTHONPATH) it is the ``minigpt``
command plus two probes, each writing one JSON line per event to ``$MINIGPT_TEST_RECORD/<kind>-rank<R>.jsonl``:

- ``samples``: per optimizer micro-step, a digest of each training sample's tokens (padding left out);
- ``writes``: every file or folder this process creates, writes, renames or deletes under
  ``$MINIGPT_TEST_WATCH`` (a Python audit hook: it sees ``open`` for writing, ``mkdir``, ``rename``, ...);
- ``prepare``: each data-mixture preparation call and whether it reused the main process's files.

As a module it provides reward functions for the GRPO run (``distributed_support:tag_reward``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any


def rank() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def record(kind: str, payload: Any) -> None:
    folder = os.environ.get("MINIGPT_TEST_RECORD")
    if not folder:
        return
    with open(Path(folder) / f"{kind}-rank{rank()}.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(payload) + "\n")


def read_records(folder: Path, kind: str) -> dict[int, list[Any]]:
    """{rank: [payload, ...]} of the records a run left."""
    out: dict[int, list[Any]] = {}
    for path in sorted(folder.glob(f"{kind}-rank*.jsonl")):
        rank_ = int(path.stem.rsplit("rank", 1)[1])
        out[rank_] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return out


def sample_digest(input_ids: list[int]) -> str:
    return hashlib.sha1(json.dumps(list(input_ids)).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ rewards for the GRPO run


def tag_reward(completions, tag, completion_ids, **kwargs) -> list[float]:
    """A function of the prompt only (its ``tag`` column): equal in a 1- and a 2-process run that see the
    same prompts in the same order. Records each completion's length (tokens) for the token-count check."""
    record("completions", {"tags": list(tag), "lengths": [len(ids) for ids in completion_ids]})
    return [(int(t) % 5) / 4 for t in tag]


def rank_reward(completions, **kwargs) -> list[float]:
    """The process index: when a prompt's group of completions is split over two processes, the group's
    rewards are [0, 0, 1, 1] and its std is 0.577 only if the group statistics span both processes."""
    return [float(rank())] * len(completions)


# ------------------------------------------------------------------ probes


_WRITES: list[dict[str, str]] = []  # kept in memory: recording from inside the hook would recurse
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {
    "os.mkdir",
    "os.remove",
    "os.rmdir",
    "os.rename",
    "os.replace",
    "shutil.rmtree",
    "os.truncate",
}


def _watch_writes(root: Path) -> None:
    root = root.resolve()

    def under(path: Any) -> str | None:
        try:
            resolved = Path(os.fsdecode(path)).resolve()
        except (TypeError, ValueError, OSError):
            return None
        return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else None

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            paths = [path] if writing else []
        elif event in _PATH_EVENTS:
            paths = [a for a in args[:2] if isinstance(a, str | bytes | os.PathLike)]
        else:
            return
        for path in paths:
            rel = under(path)
            if rel is not None:
                _WRITES.append({"event": event, "path": rel})

    sys.addaudithook(hook)


def _patch_training_step() -> None:
    from minigpt.stages.trainer_hooks import MiniGPTTrainerMixin

    original = MiniGPTTrainerMixin.training_step

    def training_step(self, model, inputs, num_items_in_batch=None):
        if isinstance(inputs, dict) and "input_ids" in inputs:
            mask = inputs.get("attention_mask")
            rows = [
                ids[m.bool()].tolist() if mask is not None else ids.tolist()
                for ids, m in zip(
                    inputs["input_ids"], mask if mask is not None else inputs["input_ids"], strict=True
                )
            ]
            record(
                "samples", {"step": self.state.global_step + 1, "digests": [sample_digest(r) for r in rows]}
            )
        return original(self, model, inputs, num_items_in_batch)

    MiniGPTTrainerMixin.training_step = training_step


def _patch_prepare() -> None:
    import minigpt.data as data

    original = data.prepare_dataset

    def prepare(*args, **kwargs):
        result = original(*args, **kwargs)
        record("prepare", {"reused": result.reused, "reuse_only": bool(kwargs.get("reuse_only"))})
        return result

    data.prepare_dataset = prepare


def main(argv: list[str]) -> int:
    _patch_training_step()
    _patch_prepare()
    watch = os.environ.get("MINIGPT_TEST_WATCH")
    if watch:
        _watch_writes(Path(watch))
    from minigpt.cli import main as cli_main

    try:
        return cli_main(argv)
    finally:
        for write in _WRITES:
            record("writes", write)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
