"""Fixtures of the ``minigpt serve`` tests: two tiny checkpoints and servers started for a module."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_support import RunningServer, save_scripted_model, save_word_model, serve_in_thread


@pytest.fixture(scope="session")
def word_model_dir(tmp_path_factory) -> Path:
    return save_word_model(tmp_path_factory.mktemp("words"))


@pytest.fixture(scope="session")
def scripted_model_dir(tmp_path_factory) -> Path:
    return save_scripted_model(tmp_path_factory.mktemp("scripted"))


@pytest.fixture(scope="module")
def start_server() -> Iterator[Callable[[Any], RunningServer]]:
    """``start_server(app)`` serves ``app`` until the module's tests are done."""
    stops: list[Callable[[], None]] = []

    def start(app: Any) -> RunningServer:
        server, stop = serve_in_thread(app)
        stops.append(stop)
        return server

    yield start
    for stop in stops:
        stop()
