"""The switches of the GSM8K evaluation (torch-free: a recipe's ``evaluation:`` is checked with them)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from minigpt.config_paths import canonical
from minigpt.typed_config import Strict

# The repository's 40 GSM8K-style rows (question, worked answer ending in ``#### N``).
SAMPLE_DATA = Path(__file__).resolve().parents[3] / "config" / "data" / "samples" / "gsm8k.jsonl"


class GSM8KEvalArgs(Strict):
    data: str | None = None
    """A JSONL file of rows with ``question`` and ``answer`` (a number, or a solution ending in ``#### N``);
    default: the repository's 40-row sample, ``config/data/samples/gsm8k.jsonl``."""
    limit: int | None = Field(None, ge=1)
    """Score only the first N rows."""
    prompt: str = "{question}"
    """The user turn for a chat model (``{question}`` is replaced)."""
    plain_prompt: str = "Question: {question}\nAnswer:"
    """The text a base model continues (no chat template)."""
    system: str | None = None
    """A system turn before each question (chat models only)."""
    chat_template: bool | None = None
    """Ask through the chat template; default: when the folder is a chat model (not pretrain / midtrain)."""
    stop: list[str] = ["Question:"]
    """A completion is cut at the first of these (a base model runs on into a next question)."""
    max_new_tokens: int = Field(256, ge=1)
    batch_size: int = Field(32, ge=1)
    """Questions per ``generate`` call."""
    failures: int = Field(5, ge=0)
    """Wrong answers kept in the result (question, gold, completion) to show in the report."""
    trust_remote_code: bool = False

    def resolved(self, base: Path) -> GSM8KEvalArgs:
        """``data`` relative to ``base``: the folder of the recipe that names it, or the working directory for
        the command line (docs/recipes.md, one rule for every path)."""
        if self.data is None:
            return self
        return self.model_copy(update={"data": canonical(self.data, base)})
