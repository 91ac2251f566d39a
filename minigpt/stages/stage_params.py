"""The ``algo:`` of a stage without fields of its own (pretrain, midtrain, sft)."""

from minigpt.typed_config import Strict


class NoParams(Strict):
    """A stage without fields of its own."""
