"""What the preference stages (dpo, reward) share: rows → datasets, batch counting, and length notes.

Both hand TRL conversational rows ``{prompt, chosen, rejected}`` (lists of messages); TRL renders them with the
tokenizer's chat template and tokenizes them itself, so the ids match what generation will later see.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from minigpt.data.schema import validate_row
from minigpt.errors import DataError
from minigpt.stages.stage import Stage

PAIR_FIELDS = ("prompt", "chosen", "rejected")


def preference_rows(rows: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """Validated rows with only the three pair fields. ``meta`` is dropped: the trainers never read it, and its
    fields may differ between sources, which one Arrow column cannot hold."""
    out = []
    for n, row in enumerate(rows, start=1):
        try:
            clean = validate_row(row, "preference")
        except DataError as exc:
            raise DataError(str(exc), file=source, line=n) from None
        out.append({key: clean[key] for key in PAIR_FIELDS})
    return out


class PreferenceStage(Stage):
    """Datasets and token counting for stages trained on chosen/rejected pairs."""

    schema = "preference"

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        train_src, val_src = self.ctx.data_sources
        train = Dataset.from_list(preference_rows(self.ctx.train_rows, train_src))
        val = Dataset.from_list(preference_rows(self.ctx.val_rows, val_src)) if self.ctx.val_rows else None
        return train, val

    def count_batch(self, inputs: dict[str, Any]) -> tuple[int, int]:
        """TRL stacks a batch as [chosen rows; rejected rows]: a sample is a pair, tokens are every non-padding
        token the policy reads (prompt tokens twice, as it really does)."""
        ids = inputs.get("input_ids")
        if ids is None:
            return 0, 0
        return int(inputs["attention_mask"].sum()), int(ids.shape[0]) // 2

    def check_kept(self, trainer: Any, before: int) -> None:
        """Log the pairs TRL dropped for length (it filters silently) and refuse to train on none."""
        after = len(trainer.train_dataset)
        max_length = self.ctx.cfg.data.max_length
        if before > after:
            self.ctx.state.log.note(
                f"{self.name}: {before - after} of {before} training pairs dropped: too long "
                f"for data.max_length {max_length}"
            )
        if after == 0:
            raise DataError(
                f"no training pair fits in data.max_length {max_length}; raise it",
                file=self.ctx.data_sources[0],
            )
