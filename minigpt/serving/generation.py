"""Turn a validated chat request into tokens and back: the prompt through the checkpoint's own chat template
(as ``minigpt chat`` builds it), the context check, sampling settings, stop sequences, and one generation
whose text arrives piece by piece. A non-streamed answer is the same pieces joined, so both forms of a
request give the same text."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from minigpt.chat import _streamer_class, generation_kwargs, stop_token_ids
from minigpt.serving.api_errors import APIError
from minigpt.serving.schemas import ChatCompletionRequest


@dataclass(frozen=True)
class Defaults:
    """What a request that leaves a field out gets (the ``minigpt serve`` options)."""

    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 256


@dataclass
class PreparedRequest:
    input_ids: Any  # (1, prompt tokens) LongTensor
    generate_kwargs: dict[str, Any]
    stops: list[str]
    seed: int | None

    @property
    def prompt_tokens(self) -> int:
        return int(self.input_ids.shape[1])


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn or a stop sequence) or "length" (max_tokens reached)


class StopText:
    """Cuts streamed text at the first stop sequence. A tail that could be the start of one is held back
    until the next piece decides, so no stop sequence is ever sent, even one split across pieces."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.hit = False
        self._held = ""

    def feed(self, piece: str) -> str:
        """The part of ``piece`` (after what was held back) that is safe to send now."""
        if self.hit:
            return ""
        text = self._held + piece
        cuts = [i for s in self.stops if (i := text.find(s)) >= 0]
        if cuts:
            self.hit, self._held = True, ""
            return text[: min(cuts)]
        hold = max(
            (k for s in self.stops for k in range(1, min(len(s), len(text) + 1)) if text.endswith(s[:k])),
            default=0,
        )
        self._held = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        """What was held back, once generation has ended without completing a stop sequence."""
        rest, self._held = ("" if self.hit else self._held), ""
        return rest


def _halt_criterion(should_halt: Callable[[], bool]) -> Any:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Halt(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), should_halt(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([Halt()])


class ChatGenerator:
    """A loaded chat checkpoint. Not thread-safe: the server runs :meth:`generate` on one worker thread."""

    def __init__(self, model: Any, tokenizer: Any, defaults: Defaults | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.defaults = defaults or Defaults()
        self.stop_ids = stop_token_ids(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.context = getattr(getattr(model, "config", None), "max_position_embeddings", None)

    def prepare(self, request: ChatCompletionRequest) -> PreparedRequest:
        """Template and tokenize the messages, check them against the context, settle the sampling
        fields. Cheap, so the server calls it before queueing: a bad request is refused even when busy."""
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        try:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # the template's own raise_exception(), e.g. roles out of order
            raise APIError(400, f"the chat template refused these messages: {exc}", param="messages") from exc
        # The template already wrote every special token it wants; the tokenizer must not add a BOS.
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        n = int(ids.shape[1])
        requested = request.requested_tokens()
        field = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        if self.context is not None:
            if n >= self.context:
                raise APIError(
                    400,
                    f"the messages are {n} tokens but the model's context is {self.context} tokens "
                    "(no room for an answer); shorten or drop earlier messages",
                    param="messages",
                    code="context_length_exceeded",
                )
            if requested is not None and n + requested > self.context:
                raise APIError(
                    400,
                    f"the model's context is {self.context} tokens but {n + requested} were requested "
                    f"({n} in the messages, {requested} in the completion); lower {field}",
                    param=field,
                    code="context_length_exceeded",
                )
        max_new = requested or self.defaults.max_tokens
        if self.context is not None:
            max_new = min(max_new, self.context - n)
        temperature = self.defaults.temperature if request.temperature is None else request.temperature
        top_p = self.defaults.top_p if request.top_p is None else request.top_p
        return PreparedRequest(
            ids, generation_kwargs(temperature, top_p, max_new), request.stop_sequences(), request.seed
        )

    def generate(
        self, prepared: PreparedRequest, emit: Callable[[str], None], cancelled: threading.Event
    ) -> Completion:
        """Generate one answer, handing each new piece of text to ``emit``; stops early at a stop sequence
        or when ``cancelled`` is set (the client went away). Blocking: call it from a worker thread."""
        import torch

        stop_text = StopText(prepared.stops)
        sent: list[str] = []

        def send(piece: str) -> None:
            if safe := stop_text.feed(piece):
                sent.append(safe)
                emit(safe)

        if prepared.seed is not None:
            torch.manual_seed(prepared.seed)
        device = next(self.model.parameters()).device
        ids = prepared.input_ids.to(device)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                streamer=_streamer_class()(self.tokenizer, send),
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
                stopping_criteria=_halt_criterion(lambda: stop_text.hit or cancelled.is_set()),
                **prepared.generate_kwargs,
            )
        if rest := stop_text.flush():
            sent.append(rest)
            emit(rest)
        new_tokens = out[0, ids.shape[1] :].tolist()
        ended_turn = bool(new_tokens) and new_tokens[-1] in self.stop_ids
        return Completion(
            text="".join(sent),
            prompt_tokens=prepared.prompt_tokens,
            completion_tokens=len(new_tokens),
            finish_reason="stop" if stop_text.hit or ended_turn else "length",
        )
