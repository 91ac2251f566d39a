"""Bases of the stages' ``algo:`` fields (torch-free): none of their own, or fields passed to a TRL config."""

from __future__ import annotations

from typing import Any, ClassVar

from minigpt.typed_config import Strict


class NoParams(Strict):
    """A stage without fields of its own."""


class TRLParams(Strict):
    """``algo`` fields that are, by name, fields of the stage's TRL config (its ``config_class``), except those
    in ``not_trl``, which the stage handles itself. :meth:`trl_kwargs` passes the rest on as they are, and a
    test checks every one against the installed TRL's config class (a renamed TRL field fails there)."""

    not_trl: ClassVar[frozenset[str]] = frozenset()

    def trl_kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude=set(self.not_trl))
