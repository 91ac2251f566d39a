"""``minigpt tokenizer train``: a byte-level BPE tokenizer from data files, a mixture or a generator."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from minigpt.typed_config import Strict
from minigpt.errors import ConfigError
from minigpt.models.tokenizer import iter_texts, save_tokenizer, train_tokenizer


class TokenizerConfig(Strict):
    output_dir: str
    vocab_size: int = 6400
    min_frequency: int = 2
    files: list[str] = []
    """JSONL files of any schema (every text field is used) or plain .txt files."""
    data_config: str | None = None
    """A mixture YAML; its prepared training rows are used."""
    generator: str | None = None
    """A registered data generator (e.g. tictactoe_sft)."""
    generator_args: dict[str, Any] = {}


def iter_rows(cfg: TokenizerConfig) -> Iterator[dict[str, Any]]:
    from minigpt.data.readers import read_jsonl

    if not (cfg.files or cfg.data_config or cfg.generator):
        raise ConfigError("tokenizer: give files, a data_config or a generator to train on")
    for path in cfg.files:
        if path.endswith(".txt"):
            with open(path, encoding="utf-8-sig") as handle:
                for line in handle:
                    yield {"text": line.rstrip("\n")}
        else:
            yield from read_jsonl(path)
    if cfg.data_config:
        from minigpt.data import iter_mixture_rows

        yield from iter_mixture_rows(cfg.data_config)
    if cfg.generator:
        from minigpt.registry import GENERATORS

        yield from GENERATORS.get(cfg.generator)(**cfg.generator_args)


def train_from_config(cfg: TokenizerConfig) -> Path:
    tokenizer = train_tokenizer(iter_texts(iter_rows(cfg)), cfg.vocab_size, cfg.min_frequency)
    out = Path(cfg.output_dir)
    save_tokenizer(tokenizer, out)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="*", default=[], help="JSONL or .txt files to train on")
    parser.add_argument("--data-config", help="a data mixture YAML to train on")
    parser.add_argument("--generator", help="a registered data generator (e.g. tictactoe_sft)")
    parser.add_argument("--vocab-size", type=int, default=6400)
    parser.add_argument("--min-frequency", type=int, default=2)
    parser.add_argument("--output", required=True, help="folder to save the tokenizer in")


def train_from_args(args: argparse.Namespace) -> Path:
    cfg = TokenizerConfig(
        output_dir=args.output,
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
        files=args.input,
        data_config=args.data_config,
        generator=args.generator,
    )
    return train_from_config(cfg)
