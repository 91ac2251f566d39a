"""``minigpt serve CHECKPOINT``: load a chat checkpoint and serve it over HTTP (see :mod:`minigpt.serving`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from minigpt.errors import MiniGPTError

SERVE_EPILOG = """\
endpoints:
  GET  /                      web page: chat with the model, play tic-tac-toe against it
  GET  /v1/models             the served model (its id is what requests pass as "model")
  POST /v1/chat/completions   OpenAI chat completions; "stream": true sends server-sent events
  POST /v1/tictactoe/move     {"board": "X........"} -> the model's move

one request generates at a time; up to --queue-limit more wait, and further ones get 503 (Retry-After: 1).

example:
  minigpt serve runs/tictactoe/sft --port 8000
  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "sft", "messages": [{"role": "user", "content": "hello"}], "temperature": 0}'
"""


def _require_server_packages() -> None:
    missing = []
    for name in ("fastapi", "uvicorn"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MiniGPTError(
            f"minigpt serve needs {' and '.join(missing)}: pip install 'minigpt[serve]' (or pip install "
            f"{' '.join(missing)})"
        )


def build_app(
    checkpoint: str | Path,
    *,
    model_name: str | None = None,
    device: str | None = None,
    temperature: float = 0.7,
    top_p: float = 0.9,
    max_tokens: int = 256,
    queue_limit: int = 8,
    trust_remote_code: bool = False,
) -> Any:
    """The server's FastAPI app for a stage output folder (what ``minigpt serve`` runs under uvicorn)."""
    if temperature < 0:
        raise MiniGPTError("--temperature must be >= 0 (0 decodes greedily)")
    if not 0 < top_p <= 1:
        raise MiniGPTError("--top-p must be in (0, 1]")
    if max_tokens < 1:
        raise MiniGPTError("--max-tokens must be at least 1")
    if queue_limit < 0:
        raise MiniGPTError("--queue-limit must be >= 0")
    _require_server_packages()
    from minigpt.chat import load_chat_model
    from minigpt.serving.app import ServedModel, create_app
    from minigpt.serving.generation import ChatGenerator, Defaults
    from minigpt.tasks.tictactoe import load_player

    path = Path(checkpoint).expanduser()
    model, tokenizer = load_chat_model(path, device, trust_remote_code)
    generator = ChatGenerator(model, tokenizer, Defaults(temperature, top_p, max_tokens))
    served = ServedModel(
        id=model_name or path.resolve().name,
        created=int((path / "config.json").stat().st_mtime),
        generator=generator,
        # The task's own player (as `minigpt play` and `minigpt eval` use it): same prompt, parser, dtype.
        player_factory=lambda: load_player(path, device=device, trust_remote_code=trust_remote_code),
    )
    return create_app(served, queue_limit)


def _cmd_serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise MiniGPTError(f"--port {args.port}: must be in 0..65535")
    app = build_app(
        args.checkpoint,
        model_name=args.model_name,
        device=args.device,
        temperature=args.temperature,
        top_p=args.top_p,
        max_tokens=args.max_tokens,
        queue_limit=args.queue_limit,
        trust_remote_code=args.trust_remote_code,
    )
    import uvicorn

    model_id = app.state.served.id
    print(f"serving '{model_id}' on http://{args.host}:{args.port}/ (OpenAI API under /v1; Ctrl-C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def register_serve(sub: argparse._SubParsersAction) -> None:
    """Add ``minigpt serve CHECKPOINT`` to the CLI's sub-commands (fastapi is imported only when it runs)."""
    serve = sub.add_parser(
        "serve",
        help="serve a chat checkpoint over HTTP: OpenAI-compatible API and a web page (chat, tic-tac-toe)",
        description="Serve a conversational checkpoint: OpenAI-compatible chat completions and a web page.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("checkpoint", help="a stage output folder with a chat template (e.g. runs/x/sft)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument("--model-name", help="the model id clients pass (default: the folder's name)")
    serve.add_argument(
        "--temperature", type=float, default=0.7, help="default when a request omits it (0: greedy)"
    )
    serve.add_argument("--top-p", type=float, default=0.9, help="default nucleus mass (default 0.9)")
    serve.add_argument("--max-tokens", type=int, default=256, help="default answer length cap (default 256)")
    serve.add_argument(
        "--queue-limit", type=int, default=8, help="requests that may wait behind the running one (default 8)"
    )
    serve.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    from minigpt.cli_options import add_trust_remote_code

    add_trust_remote_code(serve)
    serve.set_defaults(func=_cmd_serve)
