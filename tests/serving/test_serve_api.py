"""``minigpt serve`` over real HTTP with the official openai client: the same text as the project's own
chat generation, streamed and not, usage counts, sampling fields, stop sequences, OpenAI-shaped errors,
the bounded queue, and the tic-tac-toe move endpoint."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
import torch
from serve_support import ANSWER_TOKENS, SCRIPTED_ANSWER

from minigpt.chat import chat_loop, load_chat_model
from minigpt.serving.generation import StopText
from minigpt.serving.serve_command import build_app
from minigpt.tasks.tictactoe import load_player

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "hello there"},
    {"role": "assistant", "content": "the cat sat"},
    {"role": "user", "content": "and the dog?"},
]


@pytest.fixture(scope="module")
def words(start_server, word_model_dir):
    return start_server(build_app(word_model_dir, model_name="tiny-words", device="cpu", queue_limit=1))


@pytest.fixture(scope="module")
def scripted(start_server, scripted_model_dir):
    return start_server(build_app(scripted_model_dir, model_name="scripted", device="cpu"))


@pytest.fixture(scope="module")
def word_model(word_model_dir):
    return load_chat_model(word_model_dir, device="cpu")


def _post(server, body, path="/v1/chat/completions") -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=30)


def _one_line(line: str):
    lines = iter([line])

    def input_fn(prompt: str) -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    return input_fn


def _greedy(model, tokenizer, messages, max_new_tokens) -> tuple[str, int]:
    """The answer ``model.generate`` gives the templated conversation, and the prompt's length."""
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True), ids.shape[1]


def test_models_lists_the_served_model(words):
    client = words.client()
    assert [m.id for m in client.models.list().data] == ["tiny-words"]
    card = client.models.retrieve("tiny-words")
    assert card.object == "model" and card.owned_by == "minigpt" and card.created > 0
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-4")
    assert caught.value.body["code"] == "model_not_found"


def test_greedy_answer_is_minigpt_chats_answer(words, word_model):
    model, tokenizer = word_model
    reply = words.client().chat.completions.create(
        model="tiny-words",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hello there"},
        ],
        temperature=0,
        max_tokens=8,
    )
    history = chat_loop(
        model,
        tokenizer,
        _one_line("hello there"),
        lambda _: None,
        system="You are terse.",
        greedy=True,
        max_new_tokens=8,
    )
    text = reply.choices[0].message.content
    assert text.strip() == history[-1]["content"]  # minigpt chat strips the answer it keeps
    assert len(text) >= ANSWER_TOKENS and text.isprintable()  # 8 word tokens of one or more letters
    assert reply.choices[0].message.role == "assistant"


def test_a_whole_conversation_with_usage_counts(words, word_model):
    model, tokenizer = word_model
    reply = words.client().chat.completions.create(
        model="tiny-words", messages=CONVERSATION, temperature=0, max_tokens=7
    )
    expected, prompt_tokens = _greedy(model, tokenizer, CONVERSATION, 7)
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason == "length"  # the model never ends its turn by itself
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt_tokens, 7)
    assert reply.usage.total_tokens == prompt_tokens + 7
    # The newer field name is honoured the same way.
    newer = words.client().chat.completions.create(
        model="tiny-words", messages=CONVERSATION, temperature=0, max_completion_tokens=3
    )
    assert newer.usage.completion_tokens == 3 and expected.startswith(newer.choices[0].message.content)


def test_streamed_pieces_join_to_the_same_text(words):
    client = words.client()
    plain = client.chat.completions.create(
        model="tiny-words", messages=CONVERSATION, temperature=0, max_tokens=9
    )
    chunks = list(
        client.chat.completions.create(
            model="tiny-words",
            messages=CONVERSATION,
            temperature=0,
            max_tokens=9,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 3  # streamed, not one block
    assert "".join(pieces) == plain.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == plain.usage.model_dump()


def test_the_raw_stream_is_server_sent_events_ending_in_done(words):
    body = {"model": "tiny-words", "messages": CONVERSATION, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", words.url + "/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert "usage" not in chunks[-1]  # only with stream_options.include_usage


def test_sampling_follows_temperature_top_p_and_seed(words):
    client = words.client()

    def sample(seed: int, **fields) -> str:
        reply = client.chat.completions.create(
            model="tiny-words", messages=CONVERSATION, max_tokens=8, seed=seed, **fields
        )
        return reply.choices[0].message.content

    hot = {"temperature": 1.5, "top_p": 1.0}
    assert sample(3, **hot) == sample(3, **hot)
    assert len({sample(seed, **hot) for seed in range(5)}) >= 3
    greedy = (
        client.chat.completions.create(model="tiny-words", messages=CONVERSATION, max_tokens=8, temperature=0)
        .choices[0]
        .message.content
    )
    # A tiny nucleus keeps only the most likely token: sampling then is greedy decoding, whatever the seed.
    assert {sample(seed, temperature=1.0, top_p=1e-6) for seed in range(3)} == {greedy}


def test_stop_sequences_and_the_end_of_turn(scripted):
    client = scripted.client()
    whole = client.chat.completions.create(model="scripted", messages=CONVERSATION, temperature=0)
    assert whole.choices[0].message.content == SCRIPTED_ANSWER
    assert whole.choices[0].finish_reason == "stop"  # <|im_end|>, not the length cap
    cut = client.chat.completions.create(
        model="scripted", messages=CONVERSATION, temperature=0, stop=[" 4", "x"]
    )
    assert cut.choices[0].message.content == "Move:" and cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(
        model="scripted", messages=CONVERSATION, temperature=0, stop=": ", stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "Move"


def test_stop_text_holds_back_a_possible_stop_sequence():
    stop = StopText(["cd", "xyz"])
    assert [stop.feed(p) for p in ["ab", "c", "x"]] == ["ab", "", "c"]  # "c" may start "cd"; "x" "xyz"
    assert stop.feed("y") == "" and stop.feed("q") == "xyq" and not stop.hit
    assert stop.feed("c") == "" and stop.feed("def") == "" and stop.hit and stop.flush() == ""
    free = StopText(["cd"])
    assert free.feed("abc") == "ab" and free.flush() == "c"


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"model": "gpt-4"}, 404, "model", "model_not_found"),
        ({"messages": []}, 400, "messages", "invalid_value"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role", "invalid_value"),
        ({"messages": [{"role": "user"}]}, 400, "messages.0.content", "missing_required_parameter"),
        ({"max_tokens": 0}, 400, "max_tokens", "invalid_value"),
        ({"max_tokens": 600}, 400, "max_tokens", "context_length_exceeded"),
        ({"max_completion_tokens": 600}, 400, "max_completion_tokens", "context_length_exceeded"),
        (
            {"messages": [{"role": "user", "content": "hello there " * 300}]},
            400,
            "messages",
            "context_length_exceeded",
        ),
        ({"temperature": 2.5}, 400, "temperature", "invalid_value"),
        ({"top_p": 0}, 400, "top_p", "invalid_value"),
        ({"stop": ""}, 400, "stop", "invalid_value"),
        ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "invalid_value"),
        ({"stop": 3}, 400, "stop", "invalid_value"),
        ({"messages": [{"role": "user", "content": 3}]}, 400, "messages.0.content", "invalid_value"),
        ({"n": 2}, 400, "n", "invalid_value"),
        ({"tools": []}, 400, "tools", "invalid_value"),
        ({"model": None}, 400, "model", "invalid_value"),
    ],
)
def test_bad_requests_get_openai_shaped_errors(words, body, status, param, code):
    request = {"model": "tiny-words", "messages": [{"role": "user", "content": "hi"}], **body}
    if body.get("model", "") is None:
        del request["model"]
        code = "missing_required_parameter"
    response = _post(words, request)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"]) == (param, code), error
    assert error["type"] == "invalid_request_error" and error["message"]


def test_context_errors_say_what_to_change(words):
    response = _post(words, {"model": "tiny-words", "messages": CONVERSATION, "max_tokens": 600})
    message = response.json()["error"]["message"]
    assert message.startswith("the model's context is 512 tokens but ") and "lower max_tokens" in message
    with pytest.raises(openai.BadRequestError) as caught:
        words.client().chat.completions.create(model="tiny-words", messages=[], max_tokens=1)
    assert caught.value.status_code == 400 and caught.value.body["param"] == "messages"


def test_malformed_json_and_unknown_routes(words):
    response = httpx.post(
        words.url + "/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    missing = httpx.get(words.url + "/v1/engines")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    wrong_method = httpx.get(words.url + "/v1/chat/completions")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "405"


def test_a_full_queue_is_refused_with_503(words):
    gate = words.app.state.gate
    words.on_loop(gate.enter())  # the test holds the one generation slot
    queued: list[httpx.Response] = []
    body = {"model": "tiny-words", "messages": CONVERSATION, "max_tokens": 2, "temperature": 0}
    waiter = threading.Thread(target=lambda: queued.append(_post(words, body)))
    try:
        waiter.start()
        deadline = time.monotonic() + 10
        while gate.admitted < 2:  # the slot's holder and one waiting request: the queue (limit 1) is full
            assert time.monotonic() < deadline, "the request never queued"
            time.sleep(0.01)
        refused = _post(words, body)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("server_overloaded", "queue_full")
        with pytest.raises(openai.InternalServerError) as caught:
            words.client(max_retries=0).chat.completions.create(**body)
        assert caught.value.status_code == 503
        # A bad request is still told what is wrong, not that the server is busy.
        assert _post(words, {**body, "max_tokens": 0}).status_code == 400
        assert queued == []  # still waiting
    finally:
        words.on_loop(_leave(gate))
        waiter.join(30)
    assert queued[0].status_code == 200 and queued[0].json()["usage"]["completion_tokens"] == 2
    assert gate.admitted == 0


async def _leave(gate) -> None:
    gate.leave()


def test_tictactoe_moves_come_from_the_task_player(scripted, scripted_model_dir):
    reply = _post(scripted, {"board": "X........"}, "/v1/tictactoe/move").json()
    assert load_player(scripted_model_dir, device="cpu").move("X........") == 4
    assert reply == {
        "board": "X........",
        "move": 4,
        "status": "ok",
        "reason": None,
        "completion": SCRIPTED_ANSWER,
        "after": "X...O....",
        "winner": None,
    }
    taken = _post(scripted, {"board": "X...O...X"}, "/v1/tictactoe/move").json()
    assert taken["after"] == "X...O...X" and taken["move"] is None  # the centre is taken: an illegal answer
    assert (taken["status"], taken["reason"]) == ("illegal", "occupied")
    wins = _post(scripted, {"board": "XX.O.O.X."}, "/v1/tictactoe/move").json()
    assert (wins["after"], wins["winner"]) == ("XX.OOO.X.", "O")
    draw = _post(scripted, {"board": "XOXO.XOXO"}, "/v1/tictactoe/move").json()
    assert (draw["after"], draw["winner"]) == ("XOXOXXOXO", "draw")


@pytest.mark.parametrize(
    ("board", "param"),
    [("XX.......", "board"), ("XXXOO....", "board"), ("X" * 8, "board"), ("abcdefghi", "board")],
)
def test_tictactoe_refuses_impossible_or_finished_boards(scripted, board, param):
    response = _post(scripted, {"board": board}, "/v1/tictactoe/move")
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_the_page_is_served_at_the_root(scripted):
    page = httpx.get(scripted.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert (
        'id="board"' in page.text
        and "/v1/tictactoe/move" in page.text
        and "/v1/chat/completions" in page.text
    )
