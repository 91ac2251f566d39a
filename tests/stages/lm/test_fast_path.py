"""The fast-path switches of the causal-LM stages change speed, not results: batches padded to a multiple,
data-loader workers with prefetching, and a compiled model with the fused loss train exactly like the plain
path on the same batches."""

import pytest
import torch
from support import SMALL, assert_same_weights

from minigpt.data.training.lm_tokens import NUM_TOKENS_KEY, PadCollator
from minigpt.metrics import read_metrics
from minigpt.runner import run_stage, training_arguments
from minigpt.stages.stage_config import StageConfig


def _cfg(tmp_path, tok, data, name, data_kw=None, stage="sft", **train_kw):
    train = {"max_steps": 10, "batch_size": 8, "lr": 3e-3, "log_interval": 2, **train_kw}
    return StageConfig.model_validate(
        {
            "stage": stage,
            "output_dir": str(tmp_path / name),
            "model": {"init": "tiny", "tokenizer": str(tok), "overrides": SMALL},
            "data": {"train": [str(data)], "max_length": 64, **(data_kw or {})},
            "train": train,
        }
    )


def _losses(cfg) -> list[float]:
    run_stage(cfg, console=False)
    records = read_metrics(f"{cfg.output_dir}/metrics.jsonl")
    return [r["train/loss"] for r in records if "train/loss" in r]


def test_collator_rounds_widths_up_to_the_multiple_but_not_past_max_length():
    collate = PadCollator(0, pad_to_multiple_of=16, max_length=40)
    rows = [{"input_ids": [5] * n, "labels": [5] * n} for n in (3, 17)]
    batch = collate(rows)
    assert batch["input_ids"].shape == (2, 32)
    assert batch["attention_mask"].sum().item() == 20 == batch[NUM_TOKENS_KEY]
    assert (batch["labels"][:, 17:] == -100).all()
    assert collate([{"input_ids": [5] * 39, "labels": [5] * 39}])["input_ids"].shape == (1, 40)
    assert PadCollator(0)([{"input_ids": [5] * 3, "labels": [5] * 3}])["input_ids"].shape == (1, 3)


def test_padding_to_a_multiple_trains_the_same(tmp_path, tiny_tokenizer_dir, lm_data):
    shapes: dict[str, set] = {"plain": set(), "padded": set()}
    original = PadCollator.__call__

    def record(self, features):
        batch = original(self, features)
        shapes["padded" if self.multiple else "plain"].add(batch["input_ids"].shape[1])
        return batch

    PadCollator.__call__ = record
    try:
        # unpacked sentences of varying length: a new batch width every few steps
        text, unpacked = lm_data["text"], {"packing": False}
        plain = _losses(_cfg(tmp_path, tiny_tokenizer_dir, text, "plain", unpacked, "pretrain"))
        padded = _losses(
            _cfg(
                tmp_path,
                tiny_tokenizer_dir,
                text,
                "padded",
                {**unpacked, "pad_to_multiple_of": 16},
                "pretrain",
            )
        )
    finally:
        PadCollator.__call__ = original
    assert shapes == {"plain": {8, 9}, "padded": {16}}
    assert max(abs(a - b) for a, b in zip(plain, padded, strict=True)) < 1e-5
    assert_same_weights(tmp_path / "plain", tmp_path / "padded", atol=1e-4)  # summation order differs


def test_workers_with_prefetching_give_the_same_batches(tmp_path, tiny_tokenizer_dir, lm_data):
    inline = _losses(_cfg(tmp_path, tiny_tokenizer_dir, lm_data["conv"], "inline"))
    workers = _losses(
        _cfg(tmp_path, tiny_tokenizer_dir, lm_data["conv"], "workers", num_workers=1, prefetch_factor=4)
    )
    assert inline == workers


def test_loader_arguments_follow_the_device(tmp_path):
    cfg = StageConfig.model_validate(
        {
            "stage": "sft",
            "output_dir": str(tmp_path),
            "model": {"init": "tiny", "tokenizer": str(tmp_path)},
            "data": {"train": ["x.jsonl"]},
            "train": {"num_workers": 2, "prefetch_factor": 3},
        }
    )
    cpu = training_arguments(cfg, torch.device("cpu"), tmp_path, False)
    gpu = training_arguments(cfg, torch.device("cuda"), tmp_path, False)
    assert (cpu["dataloader_pin_memory"], gpu["dataloader_pin_memory"]) == (False, True)
    assert gpu["accelerator_config"] == {"non_blocking": True}
    assert gpu["dataloader_prefetch_factor"] == 3 and gpu["dataloader_persistent_workers"] is True
    with pytest.raises(ValueError, match="prefetch_factor needs num_workers"):
        StageConfig.model_validate({**cfg.model_dump(), "train": {"prefetch_factor": 3}})


@pytest.mark.slow
def test_compiled_model_with_fused_loss_trains_like_the_plain_path(tmp_path, tiny_tokenizer_dir, lm_data):
    """torch.compile (inductor on the CPU here; CUDA graphs on a GPU are not tested in CI) with the chunked
    loss, whose chunk loop is left out of the graph, and padded shapes."""
    plain = _losses(_cfg(tmp_path, tiny_tokenizer_dir, lm_data["conv"], "plain"))
    fast = _losses(
        _cfg(
            tmp_path,
            tiny_tokenizer_dir,
            lm_data["conv"],
            "fast",
            {"pad_to_multiple_of": 32},
            compile=True,
            loss="chunked",
        )
    )
    assert max(abs(a - b) for a, b in zip(plain, fast, strict=True)) < 1e-4, (plain, fast)
    assert plain[-1] < plain[0] - 0.3
    assert_same_weights(tmp_path / "plain", tmp_path / "fast", atol=1e-4)
