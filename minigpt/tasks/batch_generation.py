"""Greedy, batched completions of a model folder: what the evaluation tasks that score or show text share.

Prompts are left-padded (each prompt's last token at the end, where generation continues) and decoding is
greedy, so an answer depends only on its prompt (checked against one ``generate`` per prompt in the tests).
torch and transformers are imported inside the functions: the task modules stay cheap to import.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from minigpt.errors import ModelError

# Stages whose output is a base model: it continues text and has never seen a chat turn.
BASE_MODEL_STAGES = ("pretrain", "midtrain")


def load_for_generation(model_dir: str | Path, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model in eval mode on the GPU if there is one, tokenizer) of a saved model folder; a folder that
    ships its own code (``auto_map``) is refused unless ``trust_remote_code``."""
    import torch

    from minigpt.models.loading import (
        ALLOW_ON_CLI,
        check_model_folder,
        load_causal_lm,
        load_tokenizer,
        resolve_dtype,
    )

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: not a model folder (no config.json)")
    check_model_folder(path)
    tokenizer = load_tokenizer(str(path), trust_remote_code=trust_remote_code, allow=ALLOW_ON_CLI)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_causal_lm(path, resolve_dtype("auto", device), trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model.to(device).eval(), tokenizer


def is_chat_model(model_dir: str | Path, tokenizer: Any, setting: bool | None = None) -> bool:
    """``setting`` when given; otherwise True when the tokenizer has a chat template and the folder is not
    a base model (a stage folder whose ``stage.json`` names pretrain or midtrain)."""
    if setting is not None:
        if setting and not getattr(tokenizer, "chat_template", None):
            raise ModelError(f"{model_dir}: chat_template is on but the tokenizer has no chat template")
        return setting
    if not getattr(tokenizer, "chat_template", None):
        return False
    try:
        stage = json.loads((Path(model_dir) / "stage.json").read_text(encoding="utf-8")).get("stage")
    except (OSError, ValueError, AttributeError):
        stage = None
    return stage not in BASE_MODEL_STAGES


def prompt_texts(
    tokenizer: Any, user_texts: Sequence[str], chat: bool, system: str | None = None
) -> list[str]:
    """The texts generation continues: a user turn through the chat template, or the text as it is."""
    if not chat:
        return list(user_texts)
    head = [{"role": "system", "content": system}] if system else []
    return [
        tokenizer.apply_chat_template(
            [*head, {"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )
        for text in user_texts
    ]


def greedy_completions(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    chat: bool,
    batch_size: int = 32,
    max_new_tokens: int = 256,
    stop: Sequence[str] = (),
) -> list[str]:
    """One greedy completion per text (special tokens stripped), each cut at the first of ``stop``."""
    import torch

    from minigpt.chat import stop_token_ids

    device = next(model.parameters()).device
    out: list[str] = []
    for start in range(0, len(texts), batch_size):
        # A chat template writes every special token it wants: no BOS added on top of it.
        enc = tokenizer(
            list(texts[start : start + batch_size]),
            return_tensors="pt",
            padding=True,
            add_special_tokens=not chat,
        ).to(device)
        with torch.inference_mode():
            generated = model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=stop_token_ids(tokenizer),
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = generated[:, enc["input_ids"].shape[1] :]
        out.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return [cut_at_stop(text, stop) for text in out]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any of ``stop`` (a base model runs on into the next question)."""
    ends = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[: min(ends)] if ends else text
