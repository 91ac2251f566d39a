"""The terminal chat on a tiny local model: history across turns, /reset, /exit, streamed output."""

from __future__ import annotations

import argparse

import pytest
import torch
from support import tiny_qwen3

from minigpt.chat import _prompt_ids, chat_loop, generation_kwargs, load_chat_model, register_chat
from minigpt.errors import MiniGPTError, ModelError

ANSWER_TOKENS = 6
TEXTS = [
    "hello there, how are you today?",
    "the cat sat on the mat and the dog ran to the pond",
    "what is two plus three? two plus three is five.",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    from minigpt.models.tokenizer import train_tokenizer

    return train_tokenizer(TEXTS, vocab_size=300, min_frequency=1)


@pytest.fixture(scope="module")
def model(tokenizer):

    m = tiny_qwen3(tokenizer, context=512, tied=False).eval()
    # An untrained model answers random bytes, many of them halves of UTF-8 characters that a streamer must
    # hold back. Restrict its output to whole ASCII word tokens (every other logit 0, these ±large, so the
    # best is one of them) and forbid stopping early, so every answer is ANSWER_TOKENS printable tokens.
    words = [
        i
        for i in range(len(tokenizer))
        if (t := tokenizer.decode([i])).strip().isalpha()
        and t.isascii()
        and i not in tokenizer.all_special_ids
    ]
    with torch.no_grad():
        m.lm_head.weight.zero_()
        m.lm_head.weight[words[:24]] = torch.randn(min(24, len(words)), 32) * 5
    m.generation_config.min_new_tokens = ANSWER_TOKENS
    return m


def _spy_prompts(model, tokenizer, monkeypatch) -> list[str]:
    prompts: list[str] = []
    real = model.generate

    def generate(*args, **kwargs):
        prompts.append(tokenizer.decode(kwargs["input_ids"][0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", generate)
    return prompts


def _script(*lines):
    feed = iter(lines)

    def input_fn(prompt: str) -> str:
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    return input_fn


def _answers(pieces: list[str]) -> list[list[str]]:
    """The output pieces of each answer: those after an ``assistant> `` piece, up to the newline."""
    answers, current = [], None
    for piece in pieces:
        if piece == "assistant> ":
            current = []
        elif current is not None and piece == "\n":
            answers.append(current)
            current = None
        elif current is not None:
            current.append(piece)
    return answers


def test_history_reset_exit_and_streaming(model, tokenizer, monkeypatch):
    prompts = _spy_prompts(model, tokenizer, monkeypatch)
    pieces: list[str] = []
    history = chat_loop(
        model,
        tokenizer,
        _script("hello there", "and the dog?", "/reset", "what is two plus three?", "/exit", "never read"),
        pieces.append,
        system="You are terse.",
        greedy=True,
        max_new_tokens=ANSWER_TOKENS,
    )
    assert len(prompts) == 3
    answers = _answers(pieces)
    assert len(answers) == 3
    first_answer = "".join(answers[0]).strip()
    # Turn 2 sees turn 1 (question and answer) after the system prompt; after /reset only the system prompt.
    assert "You are terse." in prompts[0] and prompts[0].rstrip().endswith("assistant")
    assert "hello there" in prompts[1] and first_answer in prompts[1] and "and the dog?" in prompts[1]
    assert prompts[1].index("hello there") < prompts[1].index(first_answer) < prompts[1].index("and the dog?")
    assert "hello there" not in prompts[2] and "and the dog?" not in prompts[2]
    assert "You are terse." in prompts[2] and "what is two plus three?" in prompts[2]
    assert "[conversation reset]\n" in pieces
    # Streamed: several output calls per answer, which together make the answer kept in the history.
    for answer in answers:
        assert len(answer) >= 3, answer
    assert [m["role"] for m in history] == ["system", "user", "assistant"]
    assert history[1]["content"] == "what is two plus three?"
    assert history[2]["content"] == "".join(answers[2]).strip() != ""


def test_end_of_input_ends_the_chat_and_unknown_commands_are_explained(model, tokenizer):
    pieces: list[str] = []
    history = chat_loop(model, tokenizer, _script("/help", ""), pieces.append, greedy=True, max_new_tokens=4)
    assert history == []
    assert any(p.startswith("unknown command /help") for p in pieces)


def test_sampling_is_reproducible_with_a_seed(model, tokenizer):
    runs = []
    for _ in range(2):
        runs.append(
            chat_loop(
                model,
                tokenizer,
                _script("hello there"),
                lambda _: None,
                temperature=1.0,
                top_p=0.95,
                max_new_tokens=ANSWER_TOKENS,
                seed=3,
            )
        )
    assert runs[0] == runs[1] and runs[0][-1]["role"] == "assistant"


def test_generation_kwargs():
    assert generation_kwargs(greedy=True, max_new_tokens=5) == {"do_sample": False, "max_new_tokens": 5}
    sample = generation_kwargs(temperature=0.8, top_p=0.5)
    assert sample["do_sample"] and sample["temperature"] == 0.8 and sample["top_p"] == 0.5
    with pytest.raises(MiniGPTError):
        generation_kwargs(top_p=0.0)
    with pytest.raises(MiniGPTError):
        generation_kwargs(max_new_tokens=0)


def test_oldest_turns_are_dropped_to_fit_the_context(model, tokenizer, monkeypatch):
    monkeypatch.setattr(model.config, "max_position_embeddings", 60)
    messages = [{"role": "system", "content": "sys"}]
    for i in range(4):
        messages += [
            {"role": "user", "content": f"question {i} " * 3},
            {"role": "assistant", "content": "ok"},
        ]
    messages.append({"role": "user", "content": "last question"})
    ids, dropped = _prompt_ids(model, tokenizer, messages, max_new_tokens=10)
    assert ids.shape[1] + 10 <= 60 and dropped > 0
    assert messages[0]["role"] == "system" and messages[1]["role"] == "user"
    assert messages[-1]["content"] == "last question"


def test_load_checkpoint_and_cli_options(model, tokenizer, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    loaded, tok = load_chat_model(tmp_path / "ckpt", device="cpu")
    assert tok.chat_template and loaded.config.hidden_size == 32
    with pytest.raises(ModelError):
        load_chat_model(tmp_path / "missing")
    parser = argparse.ArgumentParser()
    register_chat(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["chat", "ckpt", "--top-p", "0.8", "--greedy", "--system", "Be brief."])
    assert args.top_p == 0.8 and args.greedy and args.system == "Be brief." and args.max_new_tokens == 256


def test_through_the_cli(model, tokenizer, tmp_path, monkeypatch, capsys):
    import io

    from minigpt.cli import main

    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    monkeypatch.setattr("sys.stdin", io.StringIO("hello there\n/exit\n"))
    assert main(["chat", str(tmp_path / "ckpt"), "--greedy", "--max-new-tokens", "8", "--device", "cpu"]) == 0
    assert "assistant> " in capsys.readouterr().out
    assert main(["chat", str(tmp_path / "ckpt"), "--top-p", "2"]) == 2


BOARD = "X 1 2\n3 O 5\n6 7 8\nX to move"  # the tic-tac-toe prompt text (tasks/tictactoe/format.py)


def _exact_prompt(content: str) -> str:
    return f"<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"


def _bursts(*bursts: list[str]):
    """An input stream of bursts (lines that arrive together, as a paste does) and its ``pending`` check:
    True while the current burst still has lines, like ``select`` on a terminal."""
    queue = [list(b) for b in bursts]

    def input_fn(prompt: str) -> str:
        while queue and not queue[0]:
            queue.pop(0)
        if not queue:
            raise EOFError
        return queue[0].pop(0)

    def pending() -> bool:
        return bool(queue and queue[0])

    return input_fn, pending


@pytest.mark.parametrize(
    "lines",
    [
        ['"""', "X 1 2", "3 O 5", "6 7 8", "X to move", '"""'],
        ['"""X 1 2', "3 O 5", "6 7 8", 'X to move"""'],
        ["X 1 2\\", "3 O 5\\", "6 7 8\\ ", "X to move"],
    ],
    ids=["fence-lines", "fence-inline", "backslash"],
)
def test_a_multi_line_message_reaches_the_model_with_its_newlines(model, tokenizer, monkeypatch, lines):
    prompts = _spy_prompts(model, tokenizer, monkeypatch)
    history = chat_loop(
        model, tokenizer, _script(*lines, "/exit"), lambda _: None, greedy=True, max_new_tokens=ANSWER_TOKENS
    )
    assert prompts == [_exact_prompt(BOARD)]
    assert history[0] == {"role": "user", "content": BOARD}


def test_pasted_lines_are_one_message_in_a_terminal_and_one_message_each_in_a_pipe(
    model, tokenizer, monkeypatch
):
    prompts = _spy_prompts(model, tokenizer, monkeypatch)
    paste = BOARD.split("\n")
    input_fn, pending = _bursts(paste, ["hello there"], ["/exit"])
    chat_loop(
        model,
        tokenizer,
        input_fn,
        lambda _: None,
        greedy=True,
        max_new_tokens=ANSWER_TOKENS,
        pending_fn=pending,
    )
    assert prompts[0] == _exact_prompt(BOARD)
    # A line typed later is a message of its own, and answered with the board turn as history.
    assert len(prompts) == 2 and prompts[1].startswith(_exact_prompt(BOARD)) and "hello there" in prompts[1]
    # Piped (no pending check): the same four lines are four messages.
    prompts.clear()
    chat_loop(model, tokenizer, _script(*paste), lambda _: None, greedy=True, max_new_tokens=ANSWER_TOKENS)
    assert len(prompts) == 4 and prompts[0] == _exact_prompt("X 1 2")


def test_multi_line_edge_cases(model, tokenizer, monkeypatch):
    prompts = _spy_prompts(model, tokenizer, monkeypatch)
    pieces: list[str] = []
    # Inside a block a /command and blank lines are text; end of input closes an open block.
    history = chat_loop(
        model,
        tokenizer,
        _script('"""', "/reset", "", "two", "   ", '"""', "   ", '"""still open', "last line"),
        pieces.append,
        greedy=True,
        max_new_tokens=ANSWER_TOKENS,
    )
    assert "[conversation reset]\n" not in pieces
    assert [m["content"] for m in history if m["role"] == "user"] == [
        "/reset\n\ntwo",
        "still open\nlast line",
    ]
    assert prompts[0] == _exact_prompt("/reset\n\ntwo")
    # A backslash continuation at end of input sends what was typed.
    prompts.clear()
    chat_loop(model, tokenizer, _script("one\\"), lambda _: None, greedy=True, max_new_tokens=ANSWER_TOKENS)
    assert prompts == [_exact_prompt("one")]


def test_the_startup_hint_explains_multi_line_input(model, tokenizer):
    for pending, paste_rule in ((None, False), (lambda: False, True)):
        pieces: list[str] = []
        chat_loop(
            model,
            tokenizer,
            _script(),
            pieces.append,
            greedy=True,
            max_new_tokens=ANSWER_TOKENS,
            pending_fn=pending,
        )
        hint = pieces[0]
        assert "/reset" in hint and "end a line with \\ to continue" in hint and '"""' in hint
        assert ("Pasted lines are sent as one message." in hint) is paste_rule


def test_input_pending_sees_waiting_lines_on_a_pipe():
    import os

    from minigpt.chat_input import input_pending

    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd) as reader, os.fdopen(write_fd, "w") as writer:
        assert not input_pending(reader, timeout=0)
        writer.write("a\nb\n")
        writer.flush()
        assert input_pending(reader, timeout=0)
    assert not input_pending(__import__("io").StringIO("x\n"), timeout=0)  # no descriptor: never a paste


def test_piped_stdin_through_the_cli_keeps_newlines_of_a_block(model, tokenizer, monkeypatch, capsys):
    import io

    from minigpt.cli import main

    prompts = _spy_prompts(model, tokenizer, monkeypatch)
    monkeypatch.setattr("minigpt.chat.load_chat_model", lambda *a: (model, tokenizer))
    monkeypatch.setattr("sys.stdin", io.StringIO(f'"""\n{BOARD}\n"""\nhello there\nand the dog?\n'))
    assert main(["chat", "ckpt", "--greedy", "--max-new-tokens", str(ANSWER_TOKENS)]) == 0
    assert len(prompts) == 3 and prompts[0] == _exact_prompt(BOARD)
    assert prompts[2].endswith(_exact_prompt("and the dog?"))
    out = capsys.readouterr().out
    assert "Multi-line message" in out and "Pasted lines" not in out  # a pipe has no paste rule


def test_chat_help_documents_multi_line_input(capsys):
    from minigpt.cli import main

    with pytest.raises(SystemExit):
        main(["chat", "--help"])
    out = capsys.readouterr().out
    assert "end a line with \\ to continue" in out and 'start a line with """' in out
    assert "in a pipe (stdin not a terminal) each line is one message" in out
