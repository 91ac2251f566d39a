"""Every built-in converter on rows in the public datasets' real field layouts."""

from __future__ import annotations

import pytest

from minigpt.data.schema import adapt, validate_row
from minigpt.errors import ConfigError, DataError
from minigpt.registry import CONVERTERS


def convert(name: str, row: dict, target: str, **args) -> dict:
    return adapt(CONVERTERS.get(name)(row, **args), target, render=None)


ALPACA_TEXT = "Below is an instruction that describes a task. ..."


def test_alpaca_without_input_has_no_input_block() -> None:
    for row in (
        {"instruction": "Name a colour.", "input": "", "output": "Blue.", "text": ALPACA_TEXT},
        {"instruction": "Name a colour.", "output": "Blue."},  # input absent
    ):
        out = convert("alpaca", row, "conversations")
        assert out == {
            "messages": [
                {"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Blue."},
            ]
        }


def test_alpaca_with_input_and_system() -> None:
    row = {"instruction": "Translate to French.", "input": "Good night", "output": "Bonne nuit", "text": ""}
    out = convert("alpaca", row, "conversations", system="Be brief.")
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant"]
    assert out["messages"][1]["content"] == "Translate to French.\n\nGood night"


def test_code_alpaca_layout() -> None:
    row = {"instruction": "Reverse a string.", "input": "s = 'abc'", "output": "s[::-1]"}
    out = convert("code_alpaca", row, "conversations")
    assert out["messages"][0]["content"] == "Reverse a string.\n\ns = 'abc'"
    assert out["messages"][1]["content"] == "s[::-1]"


GSM8K = {
    "question": "A shop sells 1,000 pens a day for 1 day and 234 more the next. How many in total?",
    "answer": "It sells 1000 + 234 = <<1000+234=1234>>1234 pens.\n#### 1,234",
}


def test_gsm8k_conversations_keep_full_solution_and_answer_column() -> None:
    out = convert("gsm8k", GSM8K, "conversations")
    assert out["answer"] == "1234"  # commas stripped
    assert out["messages"][1]["content"] == GSM8K["answer"]  # the whole solution, '####' line included
    stripped = convert("gsm8k", GSM8K, "conversations", strip_calculations=True)
    assert "<<" not in stripped["messages"][1]["content"]


def test_gsm8k_prompt_only_drops_solution_keeps_answer() -> None:
    out = convert("gsm8k", GSM8K, "prompt_only", system="Solve it.")
    assert out == {
        "prompt": [
            {"role": "system", "content": "Solve it."},
            {"role": "user", "content": GSM8K["question"]},
        ],
        "answer": "1234",
    }


def test_gsm8k_without_final_answer_names_the_field() -> None:
    with pytest.raises(DataError) as info:
        convert("gsm8k", {"question": "q?", "answer": "no marker here"}, "conversations")
    assert info.value.field == "answer" and "####" in str(info.value)


def test_hh_rlhf_single_turn() -> None:
    row = {
        "chosen": "\n\nHuman: What is the capital of France?\n\nAssistant: Paris.",
        "rejected": "\n\nHuman: What is the capital of France?\n\nAssistant: Lyon.",
    }
    out = convert("hh_rlhf", row, "preference")
    assert out["prompt"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert out["chosen"] == [{"role": "assistant", "content": "Paris."}]
    assert out["rejected"] == [{"role": "assistant", "content": "Lyon."}]


def test_hh_rlhf_multi_turn_shared_turns_become_the_prompt() -> None:
    shared = "\n\nHuman: I want to bake bread.\n\nAssistant: Great! Which kind?\n\nHuman: Sourdough."
    row = {
        "chosen": shared + "\n\nAssistant: Start with a starter.",
        "rejected": shared + "\n\nAssistant: Buy it.",
    }
    out = convert("hh_rlhf", row, "preference")
    assert [m["role"] for m in out["prompt"]] == ["user", "assistant", "user"]
    assert out["prompt"][2]["content"] == "Sourdough."
    assert out["chosen"] == [{"role": "assistant", "content": "Start with a starter."}]
    assert out["rejected"] == [{"role": "assistant", "content": "Buy it."}]
    # the same pair as SFT data: the prompt plus the chosen answer
    sft = convert("hh_rlhf", row, "conversations")
    assert sft["messages"][-1]["content"] == "Start with a starter." and len(sft["messages"]) == 4


def test_hh_rlhf_identical_pair_and_malformed_transcript() -> None:
    same = "\n\nHuman: hi\n\nAssistant: hello"
    with pytest.raises(DataError, match="identical"):
        convert("hh_rlhf", {"chosen": same, "rejected": same}, "preference")
    with pytest.raises(DataError) as info:
        convert("hh_rlhf", {"chosen": "no turns at all", "rejected": same}, "preference")
    assert info.value.field == "chosen"


def test_sharegpt_with_system_turn() -> None:
    row = {
        "id": "x1",
        "conversations": [
            {"from": "system", "value": "You are terse."},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello."},
            {"from": "human", "value": "Bye"},
            {"from": "gpt", "value": "Bye."},
        ],
    }
    out = convert("sharegpt", row, "conversations")
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert "id" not in out
    assert convert("sharegpt", row, "conversations", keep=["id"])["id"] == "x1"


def test_sharegpt_unknown_speaker_names_the_turn() -> None:
    row = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "robot", "value": "Hello"}]}
    with pytest.raises(DataError) as info:
        convert("sharegpt", row, "conversations")
    assert info.value.field == "conversations[1].from"


def test_openai_messages_and_conversations_key() -> None:
    msgs = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "name": "bot"}]
    assert convert("openai", {"messages": msgs}, "conversations")["messages"][1] == {
        "role": "assistant",
        "content": "4",
    }
    assert convert("openai", {"conversations": msgs}, "conversations")["messages"][0]["content"] == "2+2?"


def test_prompt_only_drops_last_assistant_turn_and_keeps_columns() -> None:
    msgs = [
        {"role": "user", "content": "Board X.O?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "Next?"},
        {"role": "assistant", "content": "8"},
    ]
    out = convert("prompt_only", {"messages": msgs, "board": "X.O......"}, "prompt_only", keep=["board"])
    assert [m["content"] for m in out["prompt"]] == ["Board X.O?", "4", "Next?"]
    assert out["board"] == "X.O......"
    sharegpt = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]}
    assert convert("prompt_only", sharegpt, "prompt_only")["prompt"] == [{"role": "user", "content": "Hi"}]


def test_text_converter_and_schema_mismatch() -> None:
    assert convert("text", {"text": "Once upon a time."}, "text") == {"text": "Once upon a time."}
    assert convert("text", {"story": "A tale."}, "text", field="story") == {"text": "A tale."}
    with pytest.raises(DataError, match="wrong schema"):
        convert("text", {"text": "plain"}, "conversations")


def test_conversations_render_as_text_for_midtraining() -> None:
    row = CONVERTERS.get("alpaca")({"instruction": "Hi", "input": "", "output": "Hello"})
    out = adapt(row, "text", render=lambda msgs: "|".join(m["content"] for m in msgs))
    assert out == {"text": "Hi|Hello"}


def test_user_converter_by_import_path_and_unknown_name(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_converters.py").write_text(
        "def shout(row, field='line'):\n    return {'text': row[field].upper()}\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = CONVERTERS.get("my_converters:shout")
    assert fn({"line": "hi"}) == {"text": "HI"}
    with pytest.raises(ConfigError, match="Did you mean 'alpaca'"):
        CONVERTERS.get("alpacca")


def test_validate_row_writes_messages_and_renames_the_older_conversations_key() -> None:
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert validate_row({"messages": turns, "meta": {}}, "conversations") == {"messages": turns, "meta": {}}
    renamed = validate_row({"conversations": turns, "answer": "4"}, "conversations")
    assert renamed == {"messages": turns, "answer": "4"}
    # both keys: messages wins, and the other stays an extra column like any other
    both = validate_row({"messages": turns, "conversations": "kept"}, "conversations")
    assert both == {"messages": turns, "conversations": "kept"}
    # errors name the key the row used
    with pytest.raises(DataError) as info:
        validate_row({"conversations": turns[:1]}, "conversations")
    assert info.value.field == "conversations[0].role"
    with pytest.raises(DataError) as info:
        validate_row({"dialogue": turns}, "conversations")
    assert info.value.field == "messages" and "needs messages (or conversations)" in str(info.value)
