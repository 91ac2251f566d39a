"""Synthetic data for the benchmark.

A word-level tokenizer maps the word ``t<id>`` to token ``id``, so a row of random token ids can be written
as text for the project's JSONL path and handed as ids to the baselines: every implementation trains on
exactly the same tokens, and token counts are known without tokenizing. The tokenizer carries the project's
special tokens and chat template (``minigpt.models.tokenizer``), so SFT and GRPO render conversations the
way they would with a trained BPE tokenizer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minigpt.models.tokenizer import SPECIAL_TOKENS

# Words the chat template writes ("<|im_start|>user\n..."): they must be single tokens, as with BPE.
_FIXED_WORDS = [*SPECIAL_TOKENS, "[UNK]", "system", "user", "assistant"]
# Tokens a rendered message adds around its content: <|im_start|>, the role word, <|im_end|>.
MESSAGE_OVERHEAD = 3


@dataclass(frozen=True)
class SynthTokenizer:
    path: Path
    vocab_size: int
    first_word: int
    """Random content uses ids in [first_word, vocab_size): never a special token."""
    eos_id: int
    pad_id: int

    def load(self):
        from transformers import AutoTokenizer

        from minigpt.models.loading import remote_code

        # The folder is the bench's own (build_tokenizer): it ships no code, and none is ever run.
        return AutoTokenizer.from_pretrained(str(self.path), trust_remote_code=remote_code(self.path, False))


def build_tokenizer(vocab_size: int, out_dir: Path) -> SynthTokenizer:
    """Save a word-level tokenizer with ``vocab_size`` tokens (the preset's vocabulary) to ``out_dir``."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from minigpt.models.tokenizer import save_tokenizer, wrap_tokenizer

    first = len(_FIXED_WORDS)
    if vocab_size <= first + 16:
        raise ValueError(f"vocab_size {vocab_size} is too small for the synthetic tokenizer")
    vocab = {word: i for i, word in enumerate(_FIXED_WORDS)}
    vocab.update({f"t{i}": i for i in range(first, vocab_size)})
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = wrap_tokenizer(core)
    if len(tokenizer) != vocab_size:  # the wrapper must reuse the ids above, not append new ones
        raise RuntimeError(f"synthetic tokenizer has {len(tokenizer)} tokens, expected {vocab_size}")
    save_tokenizer(tokenizer, out_dir)
    return SynthTokenizer(out_dir, vocab_size, first, tokenizer.eos_token_id, tokenizer.pad_token_id)


def as_text(ids: list[int]) -> str:
    return " ".join(f"t{i}" for i in ids)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


def _words(rng: np.random.Generator, tok: SynthTokenizer, n: int) -> list[int]:
    return rng.integers(tok.first_word, tok.vocab_size, size=n).tolist()


def pretrain_docs(rng: np.random.Generator, tok: SynthTokenizer, n_blocks: int, seq: int) -> list[list[int]]:
    """Documents of random length (without their EOS) whose token total, one EOS each included, is exactly
    ``n_blocks × seq``: packed, they fill ``n_blocks`` full blocks with no short tail block, so every
    training step of every implementation sees exactly ``batch × seq`` tokens. Lengths vary (seq/8 to 2·seq)
    so the project's packing sees document boundaries inside blocks and documents split across blocks, as
    with real pretraining text."""
    remaining = n_blocks * seq
    docs = []
    while remaining > 0:
        length = int(rng.integers(max(seq // 8, 2), 2 * seq + 1))  # with its EOS
        if remaining - length < 2:  # never leave a remainder too short to be a document (word + EOS)
            length = remaining
        docs.append(_words(rng, tok, length - 1))
        remaining -= length
    return docs


def pack_docs(docs: list[list[int]], tok: SynthTokenizer, seq: int) -> list[list[int]]:
    """The blocks the project's pretraining packer makes of ``docs`` (EOS after each document), for the
    baselines, which take token ids."""
    from minigpt.data.training.lm_tokens import pack_stream

    return [block["input_ids"] for block in pack_stream((d + [tok.eos_id] for d in docs), seq)]


def conversation_length(conv: list[dict[str, str]]) -> int:
    return sum(MESSAGE_OVERHEAD + len(m["content"].split()) for m in conv)


def conversations(rng: np.random.Generator, tok: SynthTokenizer, n_blocks: int, seq: int) -> list[dict]:
    """SFT rows of variable length: 1-3 user/assistant turns of random lengths, at most ``seq`` tokens.
    Generated until greedy in-order packing (the project's ``pack_examples``) would fill at least
    ``n_blocks`` blocks, so no training step of the benchmark runs short of data."""
    rows: list[dict] = []
    blocks, current = 0, 0
    while blocks < n_blocks:
        conv: list[dict[str, str]] = []
        for _ in range(int(rng.integers(1, 4))):
            user = int(rng.integers(4, max(seq // 8, 5) + 1))
            answer = int(rng.integers(4, max(seq // 4, 5) + 1))
            turn = [
                {"role": "user", "content": as_text(_words(rng, tok, user))},
                {"role": "assistant", "content": as_text(_words(rng, tok, answer))},
            ]
            if conv and conversation_length(conv + turn) > seq:
                break
            conv += turn
        length = min(conversation_length(conv), seq)  # the stage truncates an overlong first turn
        if current and current + length > seq:
            blocks, current = blocks + 1, 0
        current += length
        rows.append({"messages": conv})
    return rows


def prompts(rng: np.random.Generator, tok: SynthTokenizer, n: int, words: int) -> list[dict]:
    """prompt_only rows: one user turn of ``words`` random words (all prompts the same length)."""
    return [{"prompt": [{"role": "user", "content": as_text(_words(rng, tok, words))}]} for _ in range(n)]


def prompt_ids(rng: np.random.Generator, tok: SynthTokenizer, n: int, length: int) -> list[list[int]]:
    return [_words(rng, tok, length) for _ in range(n)]
