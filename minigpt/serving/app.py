"""The routes: OpenAI's ``/v1/chat/completions`` (plain and streamed) and ``/v1/models``, the tic-tac-toe
move endpoint, and the web page at ``/``.

Every generation (chat or tic-tac-toe) runs on one worker thread, admitted through one
:class:`AdmissionGate`: the model is never used by two requests at once, and a slot is given back only when
the worker has really finished, even if the client has gone away."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

from minigpt.serving.admission import AdmissionGate
from minigpt.serving.api_errors import APIError, error_body, install_error_handlers
from minigpt.serving.generation import ChatGenerator, Completion
from minigpt.serving.schemas import ChatCompletionRequest, TicTacToeMoveRequest

_END = object()


@dataclass(frozen=True)
class ServedModel:
    """The one model the server answers for: the id clients pass as ``model``, and how to reach it."""

    id: str
    created: int  # unix time (the checkpoint's config.json mtime), as OpenAI's model objects carry
    generator: ChatGenerator
    player_factory: Callable[[], Any]  # -> a tic-tac-toe player with .answer(board); called once, lazily

    def card(self) -> dict[str, Any]:
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": "minigpt"}


def page_html() -> str:
    return resources.files("minigpt.serving").joinpath("page.html").read_text(encoding="utf-8")


def _usage(c: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
    }


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def create_app(served: ServedModel, queue_limit: int = 8) -> Any:
    """The FastAPI application for ``served``; ``queue_limit`` requests may wait behind the running one."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

    gate = AdmissionGate(queue_limit)
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minigpt-generate")

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        worker.shutdown(wait=False, cancel_futures=True)

    # No /docs pages: they load their JavaScript from a CDN, and the server is meant to work offline.
    app = FastAPI(title="miniGPT", docs_url=None, redoc_url=None, lifespan=lifespan)
    install_error_handlers(app)
    player: list[Any] = []  # loaded on the first move, on the worker thread
    app.state.gate, app.state.worker, app.state.served = gate, worker, served

    async def run_admitted(fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        """Queue ``fn(*args)`` on the worker once admitted; the slot is released when it has finished."""
        await gate.enter()
        future = asyncio.get_running_loop().run_in_executor(worker, fn, *args)
        future.add_done_callback(lambda _: gate.leave())
        return future

    def check_model(name: str) -> None:
        if name != served.id:
            raise APIError(
                404,
                f"the model '{name}' does not exist; this server serves '{served.id}' (GET /v1/models)",
                param="model",
                code="model_not_found",
            )

    @app.exception_handler(Exception)
    async def on_unexpected(request: Any, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(f"{type(exc).__name__}: {exc}", "server_error"), status_code=500)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page_html()

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [served.card()]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> dict[str, Any]:
        check_model(name)
        return served.card()

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest) -> Any:
        check_model(body.model)
        prepared = served.generator.prepare(body)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        cancelled = threading.Event()
        if not body.stream:
            future = await run_admitted(served.generator.generate, prepared, lambda _: None, cancelled)
            try:
                result: Completion = await future
            except asyncio.CancelledError:
                cancelled.set()  # the client went away: stop the worker early
                raise
            message = {"role": "assistant", "content": result.text}
            return {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": served.id,
                "choices": [
                    {"index": 0, "message": message, "finish_reason": result.finish_reason, "logprobs": None}
                ],
                "usage": _usage(result),
            }

        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()

        def emit(piece: str) -> None:  # on the worker thread
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        future = await run_admitted(served.generator.generate, prepared, emit, cancelled)
        future.add_done_callback(lambda _: pieces.put_nowait(_END))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
            data: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": served.id,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }
            if include_usage:
                data["usage"] = None
            return data

        async def events() -> AsyncIterator[str]:
            try:
                yield _sse(chunk({"role": "assistant", "content": ""}))
                while (piece := await pieces.get()) is not _END:
                    yield _sse(chunk({"content": piece}))
                try:
                    result: Completion = future.result()
                except Exception as exc:  # headers are sent: the error becomes the stream's last event
                    yield _sse(error_body(f"{type(exc).__name__}: {exc}", "server_error"))
                    return
                yield _sse(chunk({}, result.finish_reason))
                if include_usage:
                    final = chunk({})
                    final.update(choices=[], usage=_usage(result))
                    yield _sse(final)
                yield _sse("[DONE]")
            finally:
                cancelled.set()  # a no-op after a full answer; stops the worker when the client left

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/tictactoe/move")
    async def tictactoe_move(body: TicTacToeMoveRequest) -> dict[str, Any]:
        from minigpt.tasks.tictactoe.engine import is_full, is_terminal, is_valid_board, play, winner

        board = body.board
        if not is_valid_board(board):
            raise APIError(400, f"board {board!r} cannot arise in a game (X moves first)", param="board")
        if is_terminal(board):
            raise APIError(400, f"board {board!r}: the game is already over", param="board")

        def answer() -> Any:
            if not player:
                player.append(served.player_factory())
            return player[0].answer(board)

        reply = await (await run_admitted(answer))
        result = reply.result
        after = play(board, result.move) if result.ok else board
        outcome = winner(after) or ("draw" if is_full(after) else None)
        return {
            "board": board,
            "move": result.move if result.ok else None,
            "status": result.status,  # ok, parse_error or illegal (then the model forfeits)
            "reason": result.reason,
            "completion": reply.completion,
            "after": after,
            "winner": outcome,
        }

    return app
