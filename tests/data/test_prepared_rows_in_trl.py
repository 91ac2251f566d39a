"""`minigpt data prepare` output is what TRL's own trainers read, unchanged: SFTTrainer with
assistant_only_loss=True (conversations under ``messages``, assistant spans from the template's
{% generation %} markers) and DPOTrainer (prompt/chosen/rejected message lists). Tiny model, CPU, offline."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from support import SMALL

from minigpt.data.data_cli import main
from minigpt.data.training.lm_tokens import IGNORE, conversation_ids

from .conftest import alpaca_rows, write_jsonl

CPU_ARGS = {
    "use_cpu": True,
    "bf16": False,
    "report_to": [],
    "max_steps": 3,
    "per_device_train_batch_size": 2,
    "learning_rate": 1e-3,
    "logging_steps": 1,
    "save_strategy": "no",
    "seed": 0,
}


def sharegpt_rows(n: int) -> list[dict]:
    """Multi-turn chats with a system turn and <think> tags in the answers."""
    return [
        {
            "conversations": [
                {"from": "system", "value": "You count."},
                {"from": "human", "value": f"Start at {i}."},
                {"from": "gpt", "value": f"<think>the next is {i + 1}</think>{i + 1}"},
                {"from": "human", "value": "Again."},
                {"from": "gpt", "value": f"{i + 2}"},
            ]
        }
        for i in range(n)
    ]


def hh_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        prompt = f"\n\nHuman: What is {i} plus one?"
        rows.append(
            {"chosen": f"{prompt}\n\nAssistant: {i + 1}.", "rejected": f"{prompt}\n\nAssistant: {i + 2}."}
        )
    return rows


def prepare(mixture, tmp_path: Path, tokenizer_dir: Path, sources: list[dict], **fields) -> Path:
    """Run `minigpt data prepare` and return the train JSONL it wrote."""
    config = mixture(sources, name="trl", **fields)
    out = tmp_path / "prepared"
    args = ["prepare", "--config", str(config), "--output-dir", str(out), "--tokenizer", str(tokenizer_dir)]
    assert main(args) == 0
    (train,) = out.glob("*_trl_train.jsonl")
    return train


def tiny_model_folder(tokenizer, folder: Path) -> Path:
    from minigpt.models.loading import build_model
    from minigpt.models.model_config import ModelConfig

    torch.manual_seed(0)
    build_model(ModelConfig(init="tiny", overrides=SMALL), tokenizer, torch.device("cpu")).save_pretrained(
        folder
    )
    tokenizer.save_pretrained(folder)
    return folder


def weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten().float() for p in model.parameters()])


def assert_trained(trainer, before: torch.Tensor) -> None:
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert trainer.state.global_step == 3 and len(losses) == 3
    assert all(math.isfinite(v) and v > 0 for v in losses), losses
    assert not torch.equal(weights(trainer.model), before)


def test_sft_trainer_with_assistant_only_loss_trains_on_prepared_rows(
    mixture, tmp_path: Path, tokenizer_dir: Path
) -> None:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    write_jsonl(tmp_path / "data" / "alpaca.jsonl", alpaca_rows(8))
    write_jsonl(tmp_path / "data" / "chats.jsonl", sharegpt_rows(8))
    sources = [
        {
            "name": "alpaca",
            "path": "data/alpaca.jsonl",
            "converter": "alpaca",
            "converter_args": {"system": "Be brief."},
        },
        {"name": "chats", "path": "data/chats.jsonl", "converter": "sharegpt"},
    ]
    train_path = prepare(mixture, tmp_path, tokenizer_dir, sources)
    dataset = load_dataset("json", data_files=str(train_path), split="train")
    assert "messages" in dataset.column_names and "conversations" not in dataset.column_names

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    folder = tiny_model_folder(tok, tmp_path / "model")
    model = AutoModelForCausalLM.from_pretrained(folder)
    before = weights(model)
    args = SFTConfig(output_dir=str(tmp_path / "sft"), assistant_only_loss=True, max_length=128, **CPU_ARGS)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok)

    # TRL's tokens and labels (its assistant mask applied) are the project's, row for row.
    tokenized = trainer.train_dataset
    assert len(tokenized) == len(dataset) == 16
    for source, row in zip(dataset, tokenized, strict=True):
        ids, labels = conversation_ids(source["messages"], tok)
        assert row["input_ids"] == ids and row["labels"] == labels
        assert min(labels[-3:]) > IGNORE and labels.count(IGNORE) > 0  # answer tokens trained, prompt not

    trainer.train()
    assert_trained(trainer, before)


def test_dpo_trainer_trains_on_prepared_preference_rows(mixture, tmp_path: Path, tokenizer_dir: Path) -> None:
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    write_jsonl(tmp_path / "data" / "hh.jsonl", hh_rows(8))
    sources = [{"name": "hh", "path": "data/hh.jsonl", "converter": "hh_rlhf"}]
    train_path = prepare(mixture, tmp_path, tokenizer_dir, sources, stage="dpo", schema="preference")
    dataset = load_dataset("json", data_files=str(train_path), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(dataset.column_names)

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    # A local folder as the model: DPO loads its reference model from the same path (never the hub).
    folder = tiny_model_folder(tok, tmp_path / "model")
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_length=64, **CPU_ARGS)
    trainer = DPOTrainer(model=str(folder), args=args, train_dataset=dataset, processing_class=tok)
    before = weights(trainer.model)
    assert trainer.ref_model is not None and trainer.ref_model.config._name_or_path == str(folder)
    trainer.train()
    assert_trained(trainer, before)
    assert torch.equal(weights(trainer.ref_model), before)  # the reference stays frozen
