"""``minigpt chat CHECKPOINT``: talk to a conversational checkpoint in the terminal.

The prompt is the tokenizer's own chat template over the whole history, so the model sees exactly the
format it was trained on; tokens are streamed as they are generated. The loop reads and writes only through
``input_fn`` / ``output_fn`` so a test can script a whole conversation.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from minigpt.chat_input import input_pending, multiline_help, read_message
from minigpt.errors import MiniGPTError, ModelError

HELP = "Commands: /reset (forget the conversation), /exit (quit). Ctrl-C stops an answer."


def _streamer_class():
    # transformers is imported lazily so that building the CLI parser stays cheap.
    from transformers import TextStreamer

    class CallbackStreamer(TextStreamer):
        """TextStreamer that hands each new piece of text to ``emit`` as soon as it is complete.

        TextStreamer holds text back until a space (a whole word); a small model's answer may have few
        spaces, which would make the terminal look frozen. With byte-level BPE, decoded text only changes
        at its end while a UTF-8 character is incomplete (shown as U+FFFD), so waiting for that is enough.
        """

        def __init__(self, tokenizer: Any, emit: Callable[[str], None]):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.emit = emit

        def put(self, value: Any) -> None:
            if len(value.shape) > 1:
                if value.shape[0] > 1:
                    raise ValueError("the chat streamer supports batch size 1 only")
                value = value[0]
            if self.skip_prompt and self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            self.token_cache.extend(value.tolist())
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            if text.endswith("\ufffd"):
                return
            self.on_finalized_text(text[self.print_len :])
            self.print_len = len(text)

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                self.emit(text)

    return CallbackStreamer


def stop_token_ids(tokenizer: Any) -> list[int]:
    """eos plus ``<|im_end|>`` when the vocabulary has it: a ChatML turn ends there even if eos differs."""
    ids = [tokenizer.eos_token_id]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.append(im_end)
    return [i for i in dict.fromkeys(ids) if i is not None]


def generation_kwargs(
    temperature: float = 0.7, top_p: float = 0.9, max_new_tokens: int = 256, greedy: bool = False
) -> dict[str, Any]:
    """Arguments for ``generate``. Greedy passes no sampling fields (transformers warns about unused ones)."""
    if max_new_tokens < 1:
        raise MiniGPTError("--max-new-tokens must be at least 1")
    if greedy or temperature <= 0:
        return {"do_sample": False, "max_new_tokens": max_new_tokens}
    if not 0 < top_p <= 1:
        raise MiniGPTError("--top-p must be in (0, 1]")
    # top_k=0 turns off the model's default top-k so that --top-p alone decides the candidates.
    return {
        "do_sample": True,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": 0,
        "max_new_tokens": max_new_tokens,
    }


def _context_limit(model: Any) -> int | None:
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


def _prompt_ids(model: Any, tokenizer: Any, messages: list[dict[str, str]], max_new_tokens: int):
    """Token ids of the templated history, dropping the oldest turns while it does not fit the context.
    Returns (input ids, number of messages dropped)."""
    limit = _context_limit(model)
    first = 1 if messages and messages[0]["role"] == "system" else 0
    dropped = 0
    while True:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # The template already wrote every special token it wants; the tokenizer must not add a BOS.
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        user_turns = sum(m["role"] == "user" for m in messages)
        if limit is None or ids.shape[1] + max_new_tokens <= limit or user_turns <= 1:
            return ids, dropped
        # Drop the oldest user turn and everything up to the next user turn (its answer).
        end = first + 1
        while end < len(messages) and messages[end]["role"] != "user":
            end += 1
        dropped += end - first
        del messages[first:end]


def chat_loop(
    model: Any,
    tokenizer: Any,
    input_fn: Callable[[str], str] = input,
    output_fn: Callable[[str], None] | None = None,
    *,
    system: str | None = None,
    temperature: float = 0.7,
    top_p: float = 0.9,
    max_new_tokens: int = 256,
    greedy: bool = False,
    seed: int | None = None,
    pending_fn: Callable[[], bool] | None = None,
) -> list[dict[str, str]]:
    """Read user messages until ``/exit`` or end of input, answer each with the whole history as context.

    A message spans several lines as :mod:`minigpt.chat_input` describes; ``pending_fn`` says whether pasted
    lines are already waiting (None, as in a pipe: each line is a message unless a trailing backslash or a
    triple-quote block joins lines).
    ``output_fn`` receives raw text pieces (no newline added); answers arrive in several pieces as they are
    generated. ``/reset`` forgets the conversation (the system prompt stays). Returns the final history.
    """
    import torch

    emit = output_fn or _write_stdout
    gen = generation_kwargs(temperature, top_p, max_new_tokens, greedy)
    if seed is not None:
        torch.manual_seed(seed)
    base = [{"role": "system", "content": system}] if system else []
    messages = list(base)
    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    device = next(model.parameters()).device
    streamer_cls = _streamer_class()
    model.eval()
    emit(f"{HELP}\n{multiline_help(paste=pending_fn is not None)}\n")
    while True:
        line = read_message(input_fn, pending_fn)
        if line is None:
            emit("\n")
            break
        if not line:
            continue
        command = line if line.startswith("/") and "\n" not in line else None  # never a multi-line one
        if command in ("/exit", "/quit"):
            break
        if command == "/reset":
            messages = list(base)
            emit("[conversation reset]\n")
            continue
        if command:
            emit(f"unknown command {command.split()[0]}. {HELP}\n")
            continue
        messages.append({"role": "user", "content": line})
        ids, dropped = _prompt_ids(model, tokenizer, messages, gen["max_new_tokens"])
        if dropped:
            emit(f"[dropped the {dropped} oldest messages to fit the model's context]\n")
        emit("assistant> ")
        try:
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=torch.ones_like(ids).to(device),
                    streamer=streamer_cls(tokenizer, emit),
                    eos_token_id=stops,
                    pad_token_id=pad,
                    **gen,
                )
        except KeyboardInterrupt:
            # Ctrl-C stops this answer only; the unanswered question is not kept in the history.
            messages.pop()
            emit("\n[answer interrupted]\n")
            continue
        answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
        messages.append({"role": "assistant", "content": answer})
        emit("\n")
    return messages


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def load_chat_model(
    checkpoint: str | Path, device: str | None = None, trust_remote_code: bool = False
) -> tuple[Any, Any]:
    """(model, tokenizer) from a saved stage folder; the tokenizer must carry a chat template. A folder
    shipping its own code (``auto_map``) is refused unless ``trust_remote_code``."""
    import torch

    from minigpt.models.loading import (
        ALLOW_ON_CLI,
        check_model_folder,
        load_causal_lm,
        load_tokenizer,
        resolve_dtype,
    )

    path = Path(checkpoint).expanduser()
    if not path.is_dir():
        raise ModelError(f"{path}: no such checkpoint folder")
    check_model_folder(path)
    tokenizer = load_tokenizer(str(path), trust_remote_code=trust_remote_code, allow=ALLOW_ON_CLI)
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(
            f"{path}: the tokenizer has no chat template; chat needs a conversational checkpoint"
        )
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_causal_lm(path, resolve_dtype("auto", target), trust_remote_code)
    return model.to(target).eval(), tokenizer


def _cmd_chat(args: argparse.Namespace) -> int:
    model, tokenizer = load_chat_model(args.checkpoint, args.device, args.trust_remote_code)
    chat_loop(
        model,
        tokenizer,
        system=args.system,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        greedy=args.greedy,
        seed=args.seed,
        # Only a terminal tells a paste from later input; in a pipe everything is always waiting.
        pending_fn=(lambda: input_pending(sys.stdin)) if sys.stdin.isatty() else None,
    )
    return 0


CHAT_EPILOG = """\
commands: /reset forgets the conversation, /exit (or Ctrl-D) quits, Ctrl-C stops an answer.

multi-line messages (the newlines reach the model):
  end a line with \\ to continue the message on the next line (the backslash is dropped);
  or start a line with \"\"\" and end the message with a line ending in \"\"\" (end of input closes it too);
  in a terminal, pasted lines (several arriving at once) are sent as one message.
in a pipe (stdin not a terminal) each line is one message unless \\ or \"\"\" joins lines.

example, a tic-tac-toe position:
  you> \"\"\"
  ... X 1 2
  ... 3 O 5
  ... 6 7 8
  ... X to move
  ... \"\"\"
"""


def register_chat(sub: argparse._SubParsersAction) -> None:
    """Add ``minigpt chat CHECKPOINT`` to the CLI's sub-commands."""
    chat = sub.add_parser(
        "chat",
        help="chat with a conversational checkpoint in the terminal (streams tokens)",
        description="Chat with a conversational checkpoint; answers are streamed as they are generated.",
        epilog=CHAT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    chat.add_argument("checkpoint", help="a stage output folder with a chat template (e.g. runs/x/sft)")
    chat.add_argument("--system", help="system prompt for the whole conversation")
    chat.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    chat.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass (default 0.9)")
    chat.add_argument("--max-new-tokens", type=int, default=256, help="cap on each answer's length")
    chat.add_argument("--greedy", action="store_true", help="always pick the most likely token")
    chat.add_argument("--seed", type=int, help="seed the sampler for a reproducible conversation")
    chat.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    from minigpt.cli_options import add_trust_remote_code

    add_trust_remote_code(chat)
    chat.set_defaults(func=_cmd_chat)
