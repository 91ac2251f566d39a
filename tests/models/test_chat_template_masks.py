"""The chat template's {% generation %} markers: they render nothing, and the assistant mask transformers builds
from them (what TRL's assistant_only_loss trains on) covers exactly the tokens the project's own SFT labels train."""

from __future__ import annotations

import jinja2
import pytest
from transformers import AutoTokenizer

from minigpt.data.training.lm_tokens import IGNORE, conversation_ids
from minigpt.models.tokenizer import CHAT_TEMPLATE, without_generation_markers


def turn(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


CONVERSATIONS = {
    "one turn": [turn("user", "What is 2 plus 3?"), turn("assistant", "2 plus 3 is 5.")],
    "system": [turn("system", "You add numbers."), turn("user", "7 plus 1?"), turn("assistant", "8.")],
    "multi-turn": [
        turn("system", "Be brief."),
        turn("user", "the cat sat"),
        turn("assistant", "on the mat."),
        turn("user", "and the dog?"),
        turn("assistant", "ran in the park."),
        turn("user", "bird?"),
        turn("assistant", "flew."),
    ],
    "think tags": [
        turn("user", "What is 4 plus 4?"),
        turn("assistant", "<think>four and four make eight</think>8"),
        turn("user", "And 1 plus 1?"),
        turn("assistant", "<think>\n1 + 1\n</think>\n\n2"),
    ],
    "spaces, newlines, unicode": [
        turn("user", "  indented\n\nlines  "),
        turn("assistant", " héllo — 你好 🙂\n"),
    ],
}


def chatml(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """ChatML written out by hand: what the template rendered before the markers were added."""
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    assert tokenizer.chat_template == CHAT_TEMPLATE  # saved and loaded with the markers
    return tokenizer


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_markers_render_nothing(tok, name):
    messages = CONVERSATIONS[name]
    for k in range(1, len(messages) + 1):
        for prompt in (False, True):
            rendered = tok.apply_chat_template(messages[:k], tokenize=False, add_generation_prompt=prompt)
            assert rendered == chatml(messages[:k], prompt)


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_assistant_tokens_mask_is_the_projects_label_mask(tok, name):
    messages = CONVERSATIONS[name]
    out = tok.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    ids, labels = conversation_ids(messages, tok)
    assert out["input_ids"] == ids
    mask = [int(label != IGNORE) for label in labels]
    assert out["assistant_masks"] == mask
    # each assistant turn's content and its end (<|im_end|> and the newline) are trained, nothing else
    trained = tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    assert trained == "".join(f"{a}<|im_end|>\n" for a in answers)


def test_trl_finds_the_markers_and_a_trained_stop_token(tok):
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    assert has_generation_markers(tok.chat_template)
    assert is_chat_template_stop_token_trained(tok)


def test_without_generation_markers_renders_the_same_in_plain_jinja():
    """Inference engines without transformers' extension (llama-cpp-python on a GGUF) refuse the tag."""
    with pytest.raises(jinja2.TemplateSyntaxError, match="generation"):
        jinja2.Environment().from_string(CHAT_TEMPLATE)
    plain = without_generation_markers(CHAT_TEMPLATE)
    assert "generation %" not in plain and "generation -%" not in plain
    template = jinja2.Environment().from_string(plain)
    for messages in CONVERSATIONS.values():
        for prompt in (False, True):
            rendered = template.render(messages=messages, add_generation_prompt=prompt)
            assert rendered == chatml(messages, prompt)
