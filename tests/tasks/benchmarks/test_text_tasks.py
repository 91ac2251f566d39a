"""The gsm8k and samples evaluation tasks on a tiny random model: batched greedy answers equal one
``generate`` per prompt, and the score equals a count made by hand on the same completions."""

from __future__ import annotations

import json

import pytest
from support import addition_conversations, tiny_qwen3

from minigpt.rewards.general import extract_final_number
from minigpt.tasks.batch_generation import cut_at_stop
from minigpt.tasks.gsm8k.gsm8k_eval import evaluate as evaluate_gsm8k
from minigpt.tasks.gsm8k.gsm8k_eval import score
from minigpt.tasks.gsm8k.gsm8k_settings import GSM8KEvalArgs
from minigpt.tasks.samples.samples_eval import evaluate as evaluate_samples
from minigpt.tasks.samples.samples_settings import SamplesEvalArgs

MAX_NEW = 12
QUESTIONS = [f"What is {a} plus {b}?" for a, b in ((1, 2), (3, 4), (5, 6), (12, 30), (7, 1), (9, 9), (4, 4))]


@pytest.fixture(scope="module")
def tiny_adder_model(tiny_tokenizer_dir, tmp_path_factory):
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    model = tiny_qwen3(tok, context=256, tied=True)
    # A few steps on sums, as chat turns and as plain text, so that greedy answers hold numbers.
    texts = []
    for row in addition_conversations(256, seed=4):
        turns = row["conversations"][1:]
        texts.append(tok.apply_chat_template(turns, tokenize=False))
        texts.append(f"Question: {turns[0]['content']}\nAnswer: {turns[1]['content']}")
    tok.padding_side = "right"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for step in range(60):
        batch = tok(texts[(step * 32) % 512 : (step * 32) % 512 + 32], return_tensors="pt", padding=True)
        loss = model(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    path = tmp_path_factory.mktemp("tiny-adder")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def one_by_one(model_dir, user_texts: list[str], chat: bool, max_new: int = MAX_NEW) -> list[str]:
    """Each prompt alone (a batch of one, no padding), built here from the tokenizer's template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    stops = [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
    out = []
    for text in user_texts:
        if chat:
            text = tok.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
        ids = tok(text, return_tensors="pt", add_special_tokens=not chat)
        with torch.inference_mode():
            generated = model.generate(
                **ids,
                do_sample=False,
                max_new_tokens=max_new,
                eos_token_id=stops,
                pad_token_id=tok.pad_token_id,
            )
        out.append(tok.decode(generated[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    return out


def test_score_reads_the_final_number_as_the_reward_does():
    completions = ["The answer is 1,234.", "#### 5 then 6", "no number here", "so 7.0", "3 apples, 4 pears"]
    rows = [{"question": f"q{i}", "answer": a} for i, a in enumerate(["#### 1,234", "5", 3, 7, "#### 3"])]
    result = score(completions, rows, failures=5)
    # by hand: 1234 = 1234; first number after ####: 5; no number; 7.0 = 7; last number 4 != 3
    assert (result["n"], result["correct"], result["exact_match"], result["no_number"]) == (5, 3, 0.6, 1)
    assert [f["question"] for f in result["failure_examples"]] == ["q2", "q4"]
    assert result["failure_examples"][1] == {
        "question": "q4",
        "gold": 3.0,
        "predicted": 4.0,
        "text": completions[4],
    }
    assert cut_at_stop("12\nQuestion: next", ["Question:"]) == "12\n"


@pytest.mark.parametrize("chat", [True, False])
def test_gsm8k_exact_match_equals_the_hand_count(tiny_adder_model, tmp_path, chat):
    prompts = QUESTIONS if chat else [f"Question: {q}\nAnswer:" for q in QUESTIONS]
    alone = [cut_at_stop(t, ["Question:"]) for t in one_by_one(tiny_adder_model, prompts, chat)]
    numbers = [extract_final_number(t) for t in alone]
    assert sum(n is not None for n in numbers[::2]) >= 2, alone  # the test needs numbers to match
    # Rows built so that exactly the even ones whose answer has a number are right.
    rows = [
        {"question": q, "answer": f"#### {(n if i % 2 == 0 else n + 1) if n is not None else 5}"}
        for i, (q, n) in enumerate(zip(QUESTIONS, numbers, strict=True))
    ]
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    expected = sum(1 for i, n in enumerate(numbers) if i % 2 == 0 and n is not None)
    args = GSM8KEvalArgs(
        data=str(data), batch_size=3, max_new_tokens=MAX_NEW, chat_template=None if chat else False
    )
    result = evaluate_gsm8k(tiny_adder_model, args)  # no stage.json and a chat template: a chat model
    assert result["settings"]["chat_template"] is chat
    assert (result["n"], result["correct"]) == (len(QUESTIONS), expected)
    assert result["exact_match"] == expected / len(QUESTIONS)
    assert result["no_number"] == sum(n is None for n in numbers)
    wrong = [i for i, n in enumerate(numbers) if not (i % 2 == 0 and n is not None)]
    assert [f["text"] for f in result["failure_examples"]] == [alone[i] for i in wrong][:5]


def test_gsm8k_limit_and_bad_rows(tiny_adder_model, tmp_path):
    from minigpt.errors import ConfigError
    from minigpt.tasks.gsm8k.gsm8k_eval import read_rows

    good = '{"question": "a?", "answer": 1}\n{"question": "b?", "answer": "#### 2"}\n'
    (tmp_path / "ok.jsonl").write_text(good + '{"question": "c?", "answer": 3}\n')
    assert [r["question"] for r in read_rows(tmp_path / "ok.jsonl", limit=2)] == ["a?", "b?"]
    (tmp_path / "bad.jsonl").write_text(good + '{"question": "c?", "answer": "none"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:3: 'answer' must be a number"):
        read_rows(tmp_path / "bad.jsonl")


def test_gsm8k_default_data_is_the_shipped_sample():
    from minigpt.tasks.gsm8k.gsm8k_eval import read_rows
    from minigpt.tasks.gsm8k.gsm8k_settings import SAMPLE_DATA

    rows = read_rows(SAMPLE_DATA)
    assert len(rows) == 40 and rows[0]["answer"].endswith("#### 80")


def test_samples_are_the_greedy_completions(tiny_adder_model):
    prompts = ["Say the cat.", "What is 2 plus 2?", "Hello"]
    result = evaluate_samples(
        tiny_adder_model, SamplesEvalArgs(prompts=prompts, batch_size=2, max_new_tokens=8)
    )
    assert [s["prompt"] for s in result["samples"]] == prompts
    assert [s["completion"] for s in result["samples"]] == one_by_one(tiny_adder_model, prompts, True, 8)
