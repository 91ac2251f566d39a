"""Worker processes for data preparation (``num_proc``): converters, chat-template rendering and token counts
run in a pool over chunks of raw rows, while everything that decides what is kept (filters, dedup, error
handling, statistics) stays in the parent, in row order. The output is therefore the same for any number of
processes; only the time changes (docs/data.md)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

AUTO_MAX_PROCESSES = 8
"""``num_proc: null`` uses one process per CPU core, at most this many."""
CHUNK_ROWS = 1024
"""Raw rows per task. A source of at most this many rows is processed in the parent: a pool would cost
more to start than it saves."""

_TASK: Callable[[list[Any]], Any] | None = None  # set in the parent just before the pool forks


def cpu_count() -> int:
    """CPU cores this process may use (the affinity mask in a container or under a scheduler)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_count(num_proc: int | None) -> int:
    """Processes to use: ``num_proc`` as given, or (None) one per core up to ``AUTO_MAX_PROCESSES``; 1 where
    processes cannot be forked (the workers inherit the tokenizer and converters instead of pickling them)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return num_proc if num_proc is not None else max(1, min(cpu_count(), AUTO_MAX_PROCESSES))


def chunks(items: Iterable[Any], size: int = CHUNK_ROWS) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _run(chunk: list[Any]) -> Any:
    assert _TASK is not None, "the pool was not started by map_chunks"
    return _TASK(chunk)


def map_chunks(task: Callable[[list[Any]], Any], items: Iterable[Any], workers: int) -> Iterator[Any]:
    """``task(chunk)`` for each chunk of ``items``, results in order. In the parent when ``workers`` is 1 or
    there is a single chunk; otherwise in ``workers`` forked processes, reading ahead as the pool needs.
    ``task`` may be any closure: forked workers inherit it, nothing but the rows and results is pickled."""
    global _TASK
    pieces = chunks(items)
    first = next(pieces, None)
    if first is None:
        return
    second = next(pieces, None) if workers > 1 else None
    if second is None:
        yield task(first)
        for chunk in pieces:  # workers == 1
            yield task(chunk)
        return
    previous, _TASK = _TASK, task
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            yield from pool.imap(_run, _prepend([first, second], pieces))
    finally:
        _TASK = previous


def _prepend(head: list[Any], rest: Iterator[Any]) -> Iterator[Any]:
    yield from head
    yield from rest
