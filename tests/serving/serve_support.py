"""Tiny local checkpoints and a real server (uvicorn on 127.0.0.1, a free port, its own thread) for the
``minigpt serve`` tests; the fixtures in this folder's conftest.py build on these."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from support import tiny_qwen3

ANSWER_TOKENS = 6
SCRIPTED_ANSWER = "Move: 4"
TEXTS = [
    "hello there, how are you today?",
    "the cat sat on the mat and the dog ran to the pond",
    "what is two plus three? two plus three is five.",
] * 20


def save_word_model(path: Path) -> Path:
    """A random model whose every answer token is a whole ASCII word (as tests/test_chat.py builds it):
    its answer depends on the whole prompt, and streamed pieces are printable. It never ends a turn by
    itself (min_new_tokens; eos never wins), so an answer is exactly max_tokens long."""
    from minigpt.models.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(TEXTS, vocab_size=300, min_frequency=1)
    model = tiny_qwen3(tokenizer, context=512, tied=False).eval()
    words = [
        i
        for i in range(len(tokenizer))
        if (t := tokenizer.decode([i])).strip().isalpha()
        and t.isascii()
        and i not in tokenizer.all_special_ids
    ]
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[words[:24]] = torch.randn(min(24, len(words)), 32) * 5
    model.generation_config.min_new_tokens = ANSWER_TOKENS
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_scripted_model(path: Path) -> Path:
    """A model that answers every prompt with ``Move: 4`` and then ends its turn: a tic-tac-toe player
    that makes a legal move whenever the centre is free.

    Every layer's output projections are zero, so the last hidden state is the (normalised) embedding of
    the current token and the model is a bigram table. The chain's tokens (the newline that ends every
    prompt, the answer's tokens, ``<|im_end|>``) get one basis vector each, and ``lm_head`` maps each one to
    the next token of the chain: the next-token choice along the chain is exact, not merely likely."""
    from minigpt.models.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(TEXTS + [SCRIPTED_ANSWER] * 30, vocab_size=300, min_frequency=1)
    chain = tokenizer("\n" + SCRIPTED_ANSWER, add_special_tokens=False)["input_ids"]
    chain.append(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    assert len(set(chain)) == len(chain) <= 32, chain
    model = tiny_qwen3(tokenizer, context=256, tied=False).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = model.model.embed_tokens.weight
        model.lm_head.weight.zero_()
        for slot, (token, following) in enumerate(zip(chain, chain[1:], strict=False)):
            embed[token] = 0.0
            embed[token, slot] = 1.0
            model.lm_head.weight[following, slot] = 50.0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@dataclass
class RunningServer:
    url: str
    app: Any
    loop: asyncio.AbstractEventLoop

    def client(self, **kwargs: Any) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key="not-needed", **kwargs)

    def on_loop(self, coroutine: Any, timeout: float = 10) -> Any:
        """Run ``coroutine`` on the server's event loop (where its asyncio objects live)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


def serve_in_thread(app: Any) -> tuple[RunningServer, Callable[[], None]]:
    """Start uvicorn serving ``app``; returns the server and the function that stops it."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # the server gets the socket itself: no race for the port
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=lambda: loop.run_until_complete(server.serve(sockets=[sock])), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)
        loop.close()
        sock.close()

    return RunningServer(f"http://127.0.0.1:{sock.getsockname()[1]}", app, loop), stop
