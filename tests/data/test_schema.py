"""Schema checks: role order, empty turns, mistyped and missing fields, per schema."""

from __future__ import annotations

import pytest

from minigpt.data.problems import EMPTY_TURN
from minigpt.data.schema import content_key, validate_row
from minigpt.errors import DataError


def msg(role: str, content: str = "x") -> dict:
    return {"role": role, "content": content}


def error(row: dict, schema: str) -> DataError:
    with pytest.raises(DataError) as info:
        validate_row(row, schema)
    return info.value


def test_valid_rows_of_each_schema() -> None:
    validate_row({"text": "hello"}, "text")
    validate_row({"conversations": [msg("system"), msg("user"), msg("assistant")]}, "conversations")
    validate_row({"prompt": [msg("user")], "answer": "3"}, "prompt_only")
    pair = {"prompt": [msg("user")], "chosen": [msg("assistant", "a")], "rejected": [msg("assistant", "b")]}
    assert validate_row(pair, "preference")["chosen"][0]["content"] == "a"


@pytest.mark.parametrize(
    ("turns", "field", "reason"),
    [
        ([msg("assistant"), msg("user")], "conversations[0].role", "wrong role order"),
        ([msg("user"), msg("user"), msg("assistant")], "conversations[1].role", "wrong role order"),
        ([msg("user"), msg("assistant"), msg("system")], "conversations[2].role", "wrong role order"),
        ([msg("user"), msg("assistant"), msg("user")], "conversations[2].role", "wrong role order"),
        ([msg("user"), msg("assistant", "  ")], "conversations[1].content", EMPTY_TURN),
        ([msg("user"), {"role": "assistant", "content": 5}], "conversations[1].content", "mistyped field"),
        ([msg("user"), msg("tool")], "conversations[1].role", "unknown role"),
        ("not a list", "conversations", "mistyped field"),
        ([], "conversations", "empty conversation"),
    ],
)
def test_conversation_errors_name_the_field(turns: object, field: str, reason: str) -> None:
    err = error({"conversations": turns}, "conversations")
    assert err.field == field
    assert err.reason == reason


def test_prompt_must_end_with_user_and_pair_must_differ() -> None:
    assert error({"prompt": [msg("user"), msg("assistant")]}, "prompt_only").field == "prompt[1].role"
    same = {"prompt": [msg("user")], "chosen": [msg("assistant")], "rejected": [msg("assistant")]}
    assert error(same, "preference").field == "rejected"
    assert error({"prompt": [msg("user")], "chosen": [msg("assistant")]}, "preference").field == "rejected"


def test_text_errors() -> None:
    assert error({"text": ""}, "text").reason == EMPTY_TURN
    assert error({"text": 3}, "text").field == "text"
    assert error({"body": "x"}, "text").reason == "missing field"


def test_extra_columns_kept_only_where_they_serve_rewards() -> None:
    assert validate_row({"text": "a", "url": "u"}, "text") == {"text": "a"}
    assert validate_row({"prompt": [msg("user")], "answer": "7"}, "prompt_only")["answer"] == "7"


def test_content_key_ignores_meta() -> None:
    a = {"text": "same", "meta": {"source": "a", "id": "1"}}
    b = {"text": "same", "meta": {"source": "b", "id": "9"}}
    assert content_key(a, "text") == content_key(b, "text")
    assert content_key(a, "text") != content_key({"text": "other"}, "text")
