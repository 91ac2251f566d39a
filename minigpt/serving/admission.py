"""One generation at a time on the single loaded model, with a bounded queue of waiting requests.

A model generates one sequence at a time here (no batching across requests), so requests run in turn. A
request that finds ``queue_limit`` others already waiting is refused at once (503, ``Retry-After``) instead
of waiting unboundedly: with one slow CPU model, an unbounded queue turns a burst into minutes of latency
for everyone and into client timeouts."""

from __future__ import annotations

import asyncio

from minigpt.serving.api_errors import APIError


class AdmissionGate:
    def __init__(self, queue_limit: int, concurrency: int = 1):
        if queue_limit < 0 or concurrency < 1:
            raise ValueError("queue_limit must be >= 0 and concurrency >= 1")
        self.queue_limit, self.concurrency = queue_limit, concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._admitted = 0  # running + waiting

    @property
    def admitted(self) -> int:
        return self._admitted

    async def enter(self) -> None:
        """Wait for a free slot, or raise a 503 :class:`APIError` when the queue is full. Pair with
        :meth:`leave` (a streamed answer leaves when its stream ends, after the handler has returned)."""
        if self._admitted >= self.concurrency + self.queue_limit:
            raise APIError(
                503,
                f"the server is busy: {self.concurrency} request(s) running and {self.queue_limit} "
                "waiting (its --queue-limit); retry later",
                type="server_overloaded",
                code="queue_full",
                headers={"Retry-After": "1"},
            )
        self._admitted += 1
        try:
            await self._slots.acquire()
        except BaseException:  # cancelled while waiting (the client went away)
            self._admitted -= 1
            raise

    def leave(self) -> None:
        self._admitted -= 1
        self._slots.release()
