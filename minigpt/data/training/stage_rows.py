"""Load a stage's train and validation rows: from files given in the config or from a prepared data mixture.

Files given directly (``data.train`` / ``data.validation``) get the same readers and the same schema check as a
mixture source's rows (``minigpt.data.row_pipeline.read_checked``), so a bad row is refused with the same message
whichever way it comes in. A prepared mixture was checked when it was built and is read as it is.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from minigpt.errors import ConfigError, DataError
from minigpt.stages.stage_config import StageConfig


def _read_prepared(path: str) -> list[dict[str, Any]]:
    from minigpt.data.readers import read_jsonl

    return read_jsonl(path)


def _renderer(cfg: StageConfig, tokenizer: Any, schema: str) -> Callable[..., str] | None:
    """How a text stage turns a conversation row into text: the tokenizer's chat template, as a mixture's
    ``render: chat_template`` does. The other schemas never render."""
    if schema != "text" or tokenizer is None:
        return None
    from minigpt.data.tokens import TokenCounter
    from minigpt.models.loading import tokenizer_source

    return TokenCounter(tokenizer, tokenizer_source(cfg.model)).render


def _read_given(paths: list[str], schema: str, render: Callable[..., str] | None) -> list[dict[str, Any]]:
    from minigpt.data.row_pipeline import read_checked

    rows: list[dict[str, Any]] = []
    for path in paths:
        if not Path(path).exists():
            raise DataError("file not found", file=path)
        rows.extend(read_checked(path, schema, render))
    return rows


def load_rows(
    cfg: StageConfig, tokenizer: Any, output_dir: Path, schema: str
) -> tuple[list[dict], list[dict], tuple[str, str]]:
    """(train rows, validation rows, (train source, validation source)) for a stage whose rows are in
    ``schema`` (``text``, ``conversations``, ``preference`` or ``prompt_only``)."""
    data = cfg.data
    if data.data_config:
        from minigpt.data import prepare_dataset
        from minigpt.data.mixture_config import load_mixture
        from minigpt.data.sources import start_model_overrides
        from minigpt.distributed import is_main_process, main_process_first

        prepared_dir = Path(data.prepared_dir) if data.prepared_dir else output_dir / "data"
        # One process prepares; the others wait, then only read its output (fingerprint match), never write.
        main = is_main_process()
        # Generators that sample from a model (on-policy pairs) sample from the stage's own start.
        starts = start_model_overrides(load_mixture(data.data_config), cfg.model.init)
        with main_process_first():
            prepared = prepare_dataset(
                data.data_config,
                prepared_dir,
                tokenizer=tokenizer,
                use_prepared=data.use_prepared,
                reuse_only=not main,
                overrides=starts,
            )
        built = prepared.manifest.get("schema")
        if built != schema:
            # Its rows were checked against the mixture's schema, not this stage's: refuse, not misread.
            raise ConfigError(
                f"{data.data_config}: the mixture's schema is {built}, but stage '{cfg.stage}' trains on "
                f"{schema} rows; set schema: {schema} in the mixture"
            )
        train = _read_prepared(str(prepared.train_path))
        val = (
            _read_prepared(str(prepared.val_path))
            if prepared.val_path and Path(prepared.val_path).exists()
            else []
        )
        train_src, val_src = str(prepared.train_path), str(prepared.val_path)
    else:
        render = _renderer(cfg, tokenizer, schema)
        train = _read_given(data.train, schema, render)
        val = _read_given(data.validation, schema, render)
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
