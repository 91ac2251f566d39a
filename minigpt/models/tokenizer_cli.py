"""``minigpt tokenizer train``: a byte-level BPE tokenizer from data files, a mixture or a generator."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from minigpt.errors import ConfigError
from minigpt.generator_args import check_generator_args, parse_generator_args
from minigpt.models.tokenizer import iter_texts, save_tokenizer, train_tokenizer, vocab_shortfall
from minigpt.typed_config import Strict


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
    """Keyword arguments of the generator, checked against its signature's types."""


def iter_rows(cfg: TokenizerConfig) -> Iterator[dict[str, Any]]:
    """The rows to train on. Not a generator itself: bad settings fail here, before any row is read."""
    if not (cfg.files or cfg.data_config or cfg.generator):
        raise ConfigError("tokenizer: give files, a data_config or a generator to train on")
    if cfg.generator_args and not cfg.generator:
        raise ConfigError("tokenizer: generator_args (--generator-arg) need a generator")
    generated: Iterator[dict[str, Any]] = iter(())
    if cfg.generator:
        from minigpt.registry import GENERATORS

        generate = GENERATORS.get(cfg.generator)
        generated = generate(**check_generator_args(cfg.generator, generate, cfg.generator_args))
    return _rows(cfg, generated)


def _rows(cfg: TokenizerConfig, generated: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    from minigpt.data.readers import read_jsonl

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
    yield from generated


def train_from_config(cfg: TokenizerConfig) -> Path:
    tokenizer = train_tokenizer(iter_texts(iter_rows(cfg)), cfg.vocab_size, cfg.min_frequency)
    out = Path(cfg.output_dir)
    save_tokenizer(tokenizer, out)
    shortfall = vocab_shortfall(tokenizer, cfg.vocab_size, cfg.min_frequency)
    if shortfall:
        print(f"warning: {out}: {shortfall}", file=sys.stderr, flush=True)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="*", default=[], help="JSONL or .txt files to train on")
    parser.add_argument("--data-config", help="a data mixture YAML to train on")
    parser.add_argument("--generator", help="a registered data generator (e.g. tictactoe_sft)")
    parser.add_argument(
        "--generator-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an argument of --generator, repeatable; the value is read as YAML and checked against the "
        "generator's signature (e.g. --generator-arg sample=500 --generator-arg reasoning=lines)",
    )
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
        generator_args=parse_generator_args(args.generator_arg),
    )
    return train_from_config(cfg)
