"""The frozen reference model of the TRL RL stages, loaded by TRL from a local folder (never the hub)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from minigpt.lora import is_peft
from minigpt.stages.stage import StageContext


def _vocab_rows(model: Any) -> int:
    return int(model.get_input_embeddings().weight.shape[0])


@contextmanager
def reference_model_source(ctx: StageContext, beta: float) -> Iterator[None]:
    """While the TRL trainer is built, point ``model.config._name_or_path`` at a local folder holding the
    initial policy: TRL loads the reference model from that name and would otherwise look it up on the hub
    (a preset has no name at all). The stage's input folder is used when it holds exactly these weights;
    otherwise the weights are saved to ``<output_dir>/.reference`` and removed once loaded."""
    if beta == 0.0 or is_peft(ctx.model):  # with LoRA, TRL's reference is a frozen copy of the fresh adapter
        yield
        return
    from accelerate import PartialState

    init = Path(ctx.cfg.model.init).expanduser()
    folder, temporary = init, False
    same = False
    if init.is_dir() and not ctx.cfg.model.overrides and (init / "config.json").exists():
        saved = json.loads((init / "config.json").read_text(encoding="utf-8"))
        same = saved.get("vocab_size") == _vocab_rows(ctx.model)  # not resized on load
    if not same:
        folder, temporary = ctx.output_dir / ".reference", True
        if ctx.is_main:
            ctx.model.save_pretrained(str(folder), safe_serialization=True)
        PartialState().wait_for_everyone()
    config = ctx.model.config
    original = getattr(config, "_name_or_path", "")
    config._name_or_path = str(folder)
    try:
        yield
    finally:
        config._name_or_path = original
        if temporary:
            PartialState().wait_for_everyone()
            if ctx.is_main:
                shutil.rmtree(folder, ignore_errors=True)
