"""The lm_eval task (lm-evaluation-harness through ``lm_eval.simple_evaluate``) on a tiny model, offline: a
task YAML over the shipped arith_mc.jsonl, and accuracies equal to log-likelihoods computed here by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_text_tasks import tiny_adder_model  # noqa: F401  (a sibling module's fixture)

from minigpt.tasks.harness.harness_eval import describe, headline
from minigpt.tasks.harness.harness_settings import HarnessEvalArgs

pytest.importorskip("lm_eval")

DATA = Path(__file__).with_name("arith_mc.jsonl")
TASK_YAML = """task: arith_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def hand_scores(model_dir: Path, chat: bool) -> tuple[float, float, list[list[float]]]:
    """(acc, acc_norm, log-likelihoods): each choice's summed log-probability after the question, as
    lm-eval splits it (context tokens, then the tokens the choice adds to the whole text; " " between the
    two without a chat template, nothing after the template's assistant header, whose newline lm-eval
    scores as part of the choice)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    acc = acc_norm = 0
    all_lls = []
    for row in rows:
        context = row["question"]
        if chat:
            messages = [{"role": "user", "content": context}]
            context = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # lm-eval moves the context's trailing whitespace (the template's last newline) to the choice.
        stripped = context.rstrip()
        gap = context[len(stripped) :] + ("" if chat else " ")
        context = stripped
        lls = []
        for choice in row["choices"]:
            whole = tok(context + gap + choice, add_special_tokens=False)["input_ids"]
            start = len(tok(context, add_special_tokens=False)["input_ids"])
            with torch.inference_mode():
                logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
            lls.append(sum(logprobs[i - 1, whole[i]].item() for i in range(start, len(whole))))
        all_lls.append(lls)
        acc += max(range(len(lls)), key=lls.__getitem__) == row["label"]
        normed = [ll / len(c) for ll, c in zip(lls, row["choices"], strict=True)]
        acc_norm += max(range(len(normed)), key=normed.__getitem__) == row["label"]
    return acc / len(rows), acc_norm / len(rows), all_lls


@pytest.mark.parametrize("chat", [None, False])
def test_accuracy_equals_the_hand_computation(tiny_adder_model, tmp_path, chat):  # noqa: F811
    from minigpt.tasks.harness.harness_eval import evaluate

    task = tmp_path / "arith_mc.yaml"
    task.write_text(TASK_YAML.format(data=DATA))
    args = HarnessEvalArgs(tasks=[str(task)], apply_chat_template=chat, batch_size=3, samples=8)
    result = evaluate(tiny_adder_model, args)
    used_chat = chat is None  # default: the folder has a chat template and no stage.json says "pretrain"
    assert result["settings"]["apply_chat_template"] is used_chat
    acc, acc_norm, lls = hand_scores(tiny_adder_model, used_chat)
    entry = result["tasks"]["arith_mc"]
    assert entry["n"] == 8 and entry["num_fewshot"] == 0
    assert entry["metrics"] == {"acc": acc, "acc_norm": acc_norm}
    assert 0 < acc < 1 or 0 < acc_norm < 1  # a score the hand computation can get wrong
    kept = result["samples"]["arith_mc"]
    logged = [r[0] for s in kept for r in s["filtered_resps"]]
    assert logged == pytest.approx([ll for row in lls for ll in row], abs=1e-4)
    assert headline(result) == {"arith_mc acc": acc, "arith_mc acc_norm": acc_norm}
    assert f"| arith_mc | acc | {acc:.4g} |" in describe(result)


def test_limit_and_unknown_task(tiny_adder_model, tmp_path):  # noqa: F811
    from minigpt.errors import ConfigError
    from minigpt.tasks.harness.harness_eval import evaluate

    task = tmp_path / "arith_mc.yaml"
    task.write_text(TASK_YAML.format(data=DATA))
    result = evaluate(
        tiny_adder_model, HarnessEvalArgs(tasks=[str(task)], limit=3, apply_chat_template=False)
    )
    assert result["tasks"]["arith_mc"]["n"] == 3 and result["samples"] == {}
    with pytest.raises(ConfigError, match="lm_eval"):
        evaluate(tiny_adder_model, HarnessEvalArgs(tasks=[str(tmp_path / "missing.yaml")]))
