"""A byte-level BPE tokenizer as GGUF ``tokenizer.ggml.*`` metadata (llama.cpp's ``gpt2`` tokenizer model).

llama.cpp's own converter recognises a tokenizer by hashing how it splits a test text and refuses any
vocabulary it has not seen (every trained miniGPT tokenizer). What llama.cpp needs to know is the
pre-tokenizer, and that is checked here from the tokenizer's own config instead: miniGPT's tokenizer is
``ByteLevel`` with its built-in regex, which is GPT-2's split (llama.cpp's ``gpt-2`` pre-tokenizer)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from minigpt.errors import ModelError
from minigpt.models.tokenizer import without_generation_markers

# gguf.TokenType values (kept here so this module imports without the gguf package).
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


@dataclass
class Vocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    add_bos: bool
    add_eos: bool
    chat_template: str | None


def _check_gpt2_byte_level(spec: dict[str, Any], where: str) -> None:
    model = spec.get("model") or {}
    pre = spec.get("pre_tokenizer") or {}
    problems = []
    if model.get("type") != "BPE":
        problems.append(f"model.type is {model.get('type')!r}, not 'BPE'")
    if model.get("byte_fallback") or model.get("ignore_merges"):
        problems.append("model.byte_fallback / model.ignore_merges are set")
    if spec.get("normalizer") is not None:
        problems.append(f"it has a normalizer ({(spec['normalizer'] or {}).get('type')})")
    if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True) or pre.get("add_prefix_space"):
        problems.append(
            f"pre_tokenizer is {json.dumps(pre)}, not ByteLevel with GPT-2's regex and no prefix space"
        )
    if problems:
        raise ModelError(
            f"{where}: tokenizer.json is not a GPT-2 style byte-level BPE ({'; '.join(problems)}); only "
            "such tokenizers (the ones miniGPT trains) can be written to GGUF here"
        )


def _merge_text(merge: Any) -> str:
    return merge if isinstance(merge, str) else " ".join(merge)  # tokenizers >= 0.20 stores [left, right]


def _adds(tokenizer: Any) -> tuple[bool, bool]:
    """Whether encoding a text puts the bos / eos token around it (the post-processor's doing)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return (
        bos is not None and len(full) > len(plain) and full[0] == bos,
        eos is not None and len(full) > len(plain) and full[-1] == eos,
    )


def vocab_of(tokenizer: Any, vocab_size: int, where: str) -> Vocab:
    """The vocabulary of a Hugging Face fast tokenizer, padded to the model's ``vocab_size`` rows (a model
    may have more embedding rows than tokens; llama.cpp needs one token per row)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelError(f"{where}: not a fast tokenizer (no tokenizer.json); cannot write its vocabulary")
    spec = json.loads(backend.to_str())
    _check_gpt2_byte_level(spec, where)
    by_id = {index: text for text, index in tokenizer.get_vocab().items()}
    if len(by_id) > vocab_size:
        raise ModelError(f"{where}: the tokenizer has {len(by_id)} tokens, the model only {vocab_size} rows")
    added = {index: token for index, token in tokenizer.added_tokens_decoder.items()}
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            types.append(UNUSED)
        else:
            tokens.append(by_id[index])
            token = added.get(index)
            types.append(NORMAL if token is None else CONTROL if token.special else USER_DEFINED)
    add_bos, add_eos = _adds(tokenizer)
    template = tokenizer.chat_template
    if template is not None and not isinstance(template, str):
        raise ModelError(f"{where}: the chat template is not one string ({type(template).__name__})")
    return Vocab(
        tokens=tokens,
        token_types=types,
        merges=[_merge_text(merge) for merge in spec["model"].get("merges", [])],
        # No bos of its own (miniGPT's ChatML tokenizer): name the document separator, as Qwen's GGUF files
        # do, so llama.cpp does not default to an ordinary token; add_bos stays false either way.
        bos_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.pad_token_id,
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
        add_bos=add_bos,
        add_eos=add_eos,
        # The training-only {% generation %} tags go: llama-cpp-python's Jinja refuses them at load.
        chat_template=without_generation_markers(template) if template else template,
    )
