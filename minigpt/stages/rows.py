"""Load a stage's train and validation rows: from JSONL files or from a prepared data mixture."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from minigpt.errors import DataError
from minigpt.stages.config import StageConfig


def _read_all(paths: list[str]) -> list[dict[str, Any]]:
    from minigpt.data.readers import read_jsonl

    rows: list[dict[str, Any]] = []
    for path in paths:
        if not Path(path).exists():
            raise DataError("file not found", file=path)
        rows.extend(read_jsonl(path))
    return rows


def load_rows(
    cfg: StageConfig, tokenizer, output_dir: Path
) -> tuple[list[dict], list[dict], tuple[str, str]]:
    """(train rows, validation rows, (train source, validation source)) for a stage."""
    data = cfg.data
    if data.data_config:
        from minigpt.data import prepare_dataset
        from minigpt.distributed import is_main_process, main_process_first

        prepared_dir = Path(data.prepared_dir) if data.prepared_dir else output_dir / "data"
        # One process prepares; the others wait, then only read its output (fingerprint match), never write.
        main = is_main_process()
        with main_process_first():
            prepared = prepare_dataset(
                data.data_config,
                prepared_dir,
                tokenizer=tokenizer,
                use_prepared=data.use_prepared,
                reuse_only=not main,
            )
        train = _read_all([str(prepared.train_path)])
        val = (
            _read_all([str(prepared.val_path)])
            if prepared.val_path and Path(prepared.val_path).exists()
            else []
        )
        train_src, val_src = str(prepared.train_path), str(prepared.val_path)
    else:
        train = _read_all(data.train)
        val = _read_all(data.validation)
        train_src = ", ".join(data.train)
        val_src = ", ".join(data.validation) if data.validation else f"{train_src} (held out)"
        if not val and data.val_fraction > 0:
            order = list(range(len(train)))
            random.Random(cfg.seed).shuffle(order)
            n_val = max(1, round(len(train) * data.val_fraction))
            held = set(order[:n_val])
            val = [row for i, row in enumerate(train) if i in held]
            train = [row for i, row in enumerate(train) if i not in held]
    if not train:
        raise DataError("the training data is empty", file=train_src)
    return train, val, (train_src, val_src)
