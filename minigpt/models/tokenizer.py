"""Byte-level BPE tokenizer training and the ChatML chat template saved with every model folder."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from minigpt.errors import ModelError

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_START = "<think>"
THINK_END = "</think>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END, THINK_START, THINK_END]

# ChatML. Prefix-stable by construction (rendering the first k messages is a prefix of rendering k+1), which
# the SFT assistant-mask computation relies on. The {% generation %} markers render nothing; they mark what
# the model writes (an assistant turn's content and its end: exactly the tokens the project's own mask trains,
# minigpt.data.training.lm_tokens.conversation_ids) for transformers' return_assistant_tokens_mask, which TRL's
# SFTTrainer(assistant_only_loss=True) reads.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' + '\\n' -}}{%- endgeneration -%}"
    "{%- else -%}"
    "{{- message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
_GENERATION_MARKER = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")


def without_generation_markers(template: str) -> str:
    """The template with its training-only {% generation %} / {% endgeneration %} tags removed (they render
    nothing): for inference engines whose Jinja refuses the unknown tag, e.g. llama-cpp-python loading a GGUF."""
    return _GENERATION_MARKER.sub("", template)


# The chat template's own words, so BPE learns them as tokens rather than spelling "assistant" letter by letter
# in every turn (they never appear in message contents, which is all the data rows hold).
_TEMPLATE_TEXT = "\n".join(["system", "user", "assistant"] * 50)


def iter_texts(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """Every piece of text in rows of any schema (text; conversations, whose turns are under ``messages`` or
    ``conversations``; preference; prompt_only), plus the chat template's role names."""
    yield _TEMPLATE_TEXT
    for row in rows:
        if isinstance(row.get("text"), str):
            yield row["text"]
        for key in ("messages", "conversations", "prompt", "chosen", "rejected"):
            value = row.get(key)
            if isinstance(value, str):
                yield value
            elif isinstance(value, list):
                for message in value:
                    if isinstance(message, dict) and isinstance(message.get("content"), str):
                        yield message["content"]


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2):
    """Train a byte-level BPE tokenizer; returns a ``PreTrainedTokenizerFast`` with the chat template set."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    base_size = 256 + len(SPECIAL_TOKENS)
    if vocab_size < base_size:
        raise ModelError(f"vocab_size {vocab_size} is too small: byte-level BPE needs at least {base_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    seen = 0

    def counted() -> Iterator[str]:
        nonlocal seen
        for text in texts:
            seen += 1
            yield text

    tok.train_from_iterator(counted(), trainer=trainer)
    if seen <= 1:  # only the template text: the data source itself was empty
        raise ModelError("tokenizer training got no text: the data source is empty")
    return wrap_tokenizer(tok)


def vocab_shortfall(tokenizer: Any, asked: int, min_frequency: int) -> str | None:
    """Why the trained vocabulary is smaller than ``asked``, or None when it is not. BPE stops merging when
    no pair of adjacent tokens occurs ``min_frequency`` times any more, so small or repetitive data gives
    fewer tokens than asked, and nothing else would say so."""
    got = len(tokenizer)
    if got >= asked:
        return None
    merges = got - 256 - len(SPECIAL_TOKENS)
    lower = f", or lower min_frequency (now {min_frequency})" if min_frequency > 1 else ""
    return (
        f"the tokenizer has {got} tokens, not the {asked} asked (vocab_size): after {merges} merges no pair "
        f"of adjacent tokens is left that occurs at least min_frequency={min_frequency} times in the "
        f"training text. For more tokens, train on more or more varied text{lower}."
    )


def wrap_tokenizer(tok):
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        unk_token=None,
        additional_special_tokens=[IM_START, THINK_START, THINK_END],
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "right"
    return fast


def check_chat_tokenizer(tokenizer, where: str) -> None:
    """The tokenizer must carry a chat template and the tokens it uses, and a pad and eos token."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"{where}: the tokenizer has no chat template (needed for conversation data)")
    if tokenizer.eos_token_id is None:
        raise ModelError(f"{where}: the tokenizer has no eos token")
    template = (
        tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else str(tokenizer.chat_template)
    )
    vocab = tokenizer.get_vocab()
    for special in (IM_START, IM_END):
        if special in template and special not in vocab:
            raise ModelError(
                f"{where}: the chat template uses '{special}' but the tokenizer has no such token"
            )


def save_tokenizer(tokenizer, output_dir: str | Path) -> None:
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(output_dir))
