"""Converter registry entries: importing this package registers every built-in converter.

A converter is ``fn(row: dict, **converter_args) -> dict | None``: one raw row in, one row in any of the
four schemas out (the pipeline adapts it to the mixture's schema), or None to skip the row (counted).
A user's own converter is named in a config as ``package.module:function``.
"""

from minigpt.data.converters import chat_formats, hh_rlhf, instruct, text

__all__ = ["chat_formats", "hh_rlhf", "instruct", "text"]
