"""LoRA runs that also train the base layers' biases (``lora.bias: all``): a reference that shares the base model
would move with them, so DPO keeps a frozen copy of the initial model and grpo/rloo (whose TRL reference is
an adapter on the same base) refuse the combination with a message naming ``lora.bias``."""

from __future__ import annotations

import pytest
import torch
from support import SMALL, copy_pairs, digit_prompts, write_jsonl
from trl import DPOTrainer

from minigpt.errors import ConfigError
from minigpt.runner import run_stage
from minigpt.stages.preference import dpo
from minigpt.stages.stage_config import StageConfig
from minigpt.stages.trainer_hooks import hooked

WITH_BIASES = {**SMALL, "attention_bias": True}


def _cfg(tmp_path, tok, stage, train, bias, algo=None):
    return StageConfig.model_validate(
        {
            "stage": stage,
            "output_dir": str(tmp_path / f"{stage}-{bias}"),
            "model": {"init": "tiny", "tokenizer": str(tok), "overrides": WITH_BIASES},
            "data": {"train": [str(train)], "max_length": 64},
            "train": {"max_steps": 6, "batch_size": 8, "lr": 1e-2, "log_interval": 2},
            "algo": algo or {},
            "lora": {"r": 4, "alpha": 8, "bias": bias},
        }
    )


def _biases(model) -> dict[str, torch.Tensor]:
    return {
        name.split("base_model.model.")[-1].replace(".base_layer", ""): p.detach().clone()
        for name, p in model.named_parameters()
        if name.endswith("bias") and "lora_" not in name
    }


@pytest.mark.parametrize("bias", ["none", "all"])
def test_dpo_reference_stays_the_initial_model(tmp_path, tiny_tokenizer_dir, monkeypatch, bias):
    trainers = []

    class Recording(hooked(DPOTrainer)):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.adapters_at_start = sorted(self.model.peft_config)  # the export later drops TRL's "ref"
            trainers.append(self)

    monkeypatch.setattr(dpo, "hooked", lambda base: Recording)
    train = write_jsonl(tmp_path / "pairs.jsonl", copy_pairs(64, 1))
    cfg = _cfg(tmp_path, tiny_tokenizer_dir, "dpo", train, bias)
    run_stage(cfg, console=False)
    trainer = trainers[0]
    policy = trainer.model
    if bias == "none":  # TRL's frozen adapter copy: no second model
        assert trainer.ref_model is None and trainer.adapters_at_start == ["default", "ref"]
        return
    # lora.bias: all trained the base biases; the reference is a separate frozen model that kept them
    assert trainer.ref_model is not None and trainer.adapters_at_start == ["default"]
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())
    reference, trained = _biases(trainer.ref_model), _biases(policy)
    assert set(reference) == set(trained) and len(trained) >= 6  # q/k/v biases of 2 layers
    moved = max((trained[k] - reference[k].to(trained[k].device)).abs().max().item() for k in trained)
    assert moved > 1e-3


def _digits(completions, **kwargs):
    return [float(sum(c.isdigit() for c in x[-1]["content"])) for x in completions]


@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_grpo_rloo_refuse_trained_base_biases_with_a_kl_reference(tmp_path, tiny_tokenizer_dir, stage):
    train = write_jsonl(tmp_path / "prompts.jsonl", digit_prompts(8))
    algo = {"rewards": [f"{__name__}:_digits"], "num_generations": 4, "max_completion_length": 4, "beta": 0.1}
    cfg = _cfg(tmp_path, tiny_tokenizer_dir, stage, train, "all", algo)
    with pytest.raises(
        ConfigError, match=f"lora.bias: all trains the base model's biases, which TRL's {stage}"
    ):
        run_stage(cfg, console=False)
    leftovers = [p.name for p in (tmp_path / f"{stage}-all").iterdir() if p.name != ".minigpt.lock"]
    assert leftovers == []  # refused before training: nothing half-written
