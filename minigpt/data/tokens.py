"""Token counts, chat-template rendering and a tokenizer's fingerprint.

Counting rules (docs/data.md): text → its tokens; a conversation → the tokens of its chat-template rendering
(``apply_chat_template(..., tokenize=False)`` then encode without extra special tokens); a prompt → its
rendering with the generation prompt; a preference pair → the longer of prompt+chosen and prompt+rejected.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from minigpt.data.schema import MESSAGES
from minigpt.errors import ConfigError, MiniGPTError

Tokenizer = Any  # a transformers PreTrainedTokenizerBase; kept loose so importing this module stays cheap


ALLOW_IN_MIXTURE = "set trust_remote_code: true in the mixture config"


def load_tokenizer(
    spec: str | os.PathLike | Tokenizer | None, trust_remote_code: bool = False
) -> Tokenizer | None:
    """A tokenizer object from a folder or hub id; an object is returned as is; None stays None. A folder
    shipping its own code (``auto_map``) is refused unless ``trust_remote_code`` (the mixture's)."""
    if spec is None or not isinstance(spec, str | os.PathLike):
        return spec
    from transformers import AutoTokenizer

    from minigpt.models.loading import remote_code

    try:
        return AutoTokenizer.from_pretrained(
            str(spec), trust_remote_code=remote_code(spec, trust_remote_code, ALLOW_IN_MIXTURE)
        )
    except MiniGPTError:
        raise  # the refusal of a folder's code says what to do; it is not a "cannot load"
    except Exception as exc:  # transformers raises OSError, ValueError, ... for a bad folder or id
        raise ConfigError(f"cannot load tokenizer '{spec}': {exc}") from exc


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    """Digest of the vocabulary (the whole fast-tokenizer JSON when there is one), special tokens and chat
    template: anything that changes token counts or renderings changes this."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    payload = {
        "vocab": hashlib.sha256(vocab.encode("utf-8")).hexdigest(),
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "chat_template": getattr(tokenizer, "chat_template", None),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


class TokenCounter:
    """Counts tokens of schema rows in batches (one tokenizer call per batch)."""

    def __init__(self, tokenizer: Tokenizer, name: str = "tokenizer"):
        self.tokenizer = tokenizer
        self.name = name

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        if not self.has_chat_template:
            raise ConfigError(
                f"{self.name} has no chat template: conversations are counted and rendered with it "
                "(use a tokenizer with a chat template, or render: plain for text mixtures)"
            )
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _lengths(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(x) for x in ids]

    def count(self, rows: list[dict[str, Any]], schema: str) -> list[int]:
        if schema == "text":
            return self._lengths([r["text"] for r in rows])
        if schema == "conversations":
            return self._lengths([self.render(r[MESSAGES]) for r in rows])
        if schema == "prompt_only":
            return self._lengths([self.render(r["prompt"], add_generation_prompt=True) for r in rows])
        chosen = self._lengths([self.render(r["prompt"] + r["chosen"]) for r in rows])
        rejected = self._lengths([self.render(r["prompt"] + r["rejected"]) for r in rows])
        return [max(a, b) for a, b in zip(chosen, rejected, strict=True)]
