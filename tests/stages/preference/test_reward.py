"""Reward model through the shared runner on a tiny random-init model: held-out pairwise accuracy well above
chance, the saved folder loads as a sequence classifier that ranks held-out pairs the same way, and the
classifier is built on the previous stage's backbone weights."""

import json

import pytest
import torch
from support import (
    SMALL,
    assert_same_logged,
    assert_same_weights,
    copy_pairs,
    run_interrupted_then_resumed,
    write_jsonl,
)
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from minigpt.metrics import read_metrics
from minigpt.runner import run_stage
from minigpt.stages.preference.reward import score, sequence_classifier
from minigpt.stages.stage_config import StageConfig


@pytest.fixture()
def pairs(tmp_path):
    return {
        "train": write_jsonl(tmp_path / "train.jsonl", copy_pairs(400, 1)),
        "val": write_jsonl(tmp_path / "val.jsonl", copy_pairs(64, 2)),
    }


def _series(records, key):
    return [r[key] for r in records if key in r]


def test_reward_model_ranks_heldout_pairs(tmp_path, tiny_tokenizer_dir, pairs):
    cfg = StageConfig.model_validate(
        {
            "stage": "reward",
            "output_dir": str(tmp_path / "rm"),
            "model": {"init": "tiny", "tokenizer": str(tiny_tokenizer_dir), "overrides": SMALL},
            "data": {"train": [str(pairs["train"])], "validation": [str(pairs["val"])], "max_length": 64},
            "train": {
                "max_steps": 100,
                "batch_size": 16,
                "lr": 1e-3,
                "log_interval": 10,
                "eval_interval": 25,
                "warmup_steps": 2,
            },
        }
    )
    summary = run_stage(cfg, console=False)
    out = tmp_path / "rm"
    records = read_metrics(out / "metrics.jsonl")
    accuracy = _series(records, "eval/accuracy")
    # Measured over seeds 1, 2, 3, 7, 42: 0.73-0.92 at step 25 -> 0.94-1.0 at step 100. Stated margin: held-out
    # accuracy ends at least 0.3 above chance (0.5).
    assert len(accuracy) == 4 and accuracy[-1] >= 0.8, accuracy
    eval_loss = _series(records, "eval/loss")
    assert eval_loss[-1] < eval_loss[0]
    keys = set().union(*records)
    assert {
        "train/loss",
        "train/accuracy",
        "train/learning_rate",
        "train/grad_norm",
        "train/tokens_per_second",
        "train/samples_per_second",
        "train/num_tokens",
        "eval/loss",
        "eval/accuracy",
    } <= keys
    assert summary["global_step"] == 100

    # The folder is what PPO loads: a one-output sequence classifier plus the tokenizer.
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    rows = json.loads("[" + ",".join(pairs["val"].read_text().splitlines()) + "]")
    chosen = score(model, tok, [r["prompt"] + r["chosen"] for r in rows])
    rejected = score(model, tok, [r["prompt"] + r["rejected"] for r in rows])
    ranked = float((chosen > rejected).float().mean())
    # Stated: most held-out pairs ranked right, and the same fraction as the final evaluation (within one pair).
    assert ranked >= 0.8 and abs(ranked - accuracy[-1]) <= 1 / 64


def test_classifier_reuses_the_language_model_backbone(tiny_tokenizer_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    config = AutoConfig.for_model("qwen3", vocab_size=len(tok), pad_token_id=tok.pad_token_id, **SMALL)
    lm = AutoModelForCausalLM.from_config(config)
    lm.save_pretrained(tmp_path / "lm")  # a previous stage's folder
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    rm = sequence_classifier(lm, tok.pad_token_id)
    assert rm.config.num_labels == 1 and rm.score.weight.shape == (1, SMALL["hidden_size"])
    lm_state = lm.model.state_dict()
    for name, value in rm.model.state_dict().items():
        torch.testing.assert_close(value, lm_state[name], atol=0, rtol=0)
    # right padding does not change a sequence's reward (the head reads the last real token)
    convs = [
        [{"role": "user", "content": "Say cat."}, {"role": "assistant", "content": "cat."}],
        [{"role": "user", "content": "Say the big dog."}, {"role": "assistant", "content": "the big dog."}],
    ]
    together = score(rm, tok, convs)
    alone = torch.cat([score(rm, tok, [c]) for c in convs])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_reward_stage_reports_no_perplexity():
    from minigpt.stages.preference.reward import RewardStage

    assert RewardStage.eval_loss_is_token_nll is False


def _cfg(tmp_path, tok_dir, pairs, name, **train_kw):
    train = {"batch_size": 16, "lr": 1e-3, "warmup_steps": 2}
    train.update(train_kw)
    return StageConfig.model_validate(
        {
            "stage": "reward",
            "output_dir": str(tmp_path / name),
            "model": {"init": "tiny", "tokenizer": str(tok_dir), "overrides": SMALL},
            "data": {"train": [str(pairs["train"])], "validation": [str(pairs["val"])], "max_length": 64},
            "train": train,
        }
    )


@pytest.mark.slow
def test_reward_resume_matches_uninterrupted_run(tmp_path, tiny_tokenizer_dir, pairs):
    common = {"max_steps": 8, "save_interval": 4, "eval_interval": 0, "log_interval": 1}
    full, part, summary = run_interrupted_then_resumed(
        lambda cfg, **kw: run_stage(cfg, console=False, **kw),
        lambda name: _cfg(tmp_path, tiny_tokenizer_dir, pairs, name, **common),
        6,
    )
    assert summary["global_step"] == 8  # restarted from checkpoint-4
    # Stated tolerance: identical up to float32 rounding (1e-6 absolute); measured max difference 0.0.
    a = assert_same_weights(full, part, atol=1e-6)
    assert any(key.startswith("score.") for key in a)  # the new scoring head is saved and compared too
    # Stated tolerance: measured max difference 0.0; tolerance 1e-6.
    assert_same_logged(full, part, ["train/loss"], atol=1e-6, steps=range(1, 9))
