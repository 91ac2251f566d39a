"""The fused head + cross-entropy (``train.loss: chunked``) gives transformers' loss and gradients: on raw
tensors, through a model with packed rows and ignored labels, in a whole SFT stage, and refuses models whose
logits it would get wrong."""

import pytest
import torch
from support import SMALL, assert_same_weights
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from minigpt.errors import ConfigError
from minigpt.metrics import read_metrics
from minigpt.runner import run_stage
from minigpt.stages.lm import chunked_loss
from minigpt.stages.lm.chunked_loss import (
    check_supported,
    head_computes_loss,
    linear_cross_entropy,
    shifted_targets,
)
from minigpt.stages.stage_config import StageConfig


def _labels(batch: int, seq: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    labels = torch.randint(0, vocab, (batch, seq), generator=generator)
    labels[:, : seq // 3] = -100  # a prompt
    labels[0, -5:] = -100  # padding
    return labels


def _reference(hidden, head, labels, num_items=None):
    logits = head(hidden).float()
    shifted = nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    reduction = "sum" if num_items is not None else "mean"
    loss = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), shifted.reshape(-1), reduction=reduction
    )
    return loss / num_items if num_items is not None else loss


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("num_items", [None, 150])
def test_loss_and_gradients_equal_plain_cross_entropy(bias, num_items):
    g = torch.Generator().manual_seed(0)
    batch, seq, dim, vocab = 3, 40, 16, 97
    hidden = torch.randn(batch, seq, dim, generator=g)
    head = nn.Linear(dim, vocab, bias=bias)
    labels = _labels(batch, seq, vocab, g)
    with torch.no_grad():  # every third label is the head's own guess: some predictions are right
        labels[:, 15::3] = head(hidden).argmax(-1)[:, 14:-1:3]

    h1 = hidden.clone().requires_grad_()
    ref = _reference(h1, head, labels, num_items)
    ref.backward()
    ref_grads = [h1.grad.clone()] + [p.grad.clone() for p in head.parameters()]
    head.zero_grad()

    h2 = hidden.clone().requires_grad_()
    # 7 rows per chunk: many chunks, the last one partial
    loss, correct = linear_cross_entropy(
        h2, head, shifted_targets(labels), num_items, chunk_elements=7 * vocab
    )
    loss.backward()
    grads = [h2.grad] + [p.grad for p in head.parameters()]
    assert abs(loss.item() - ref.item()) < 1e-5
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    shifted = nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    valid = shifted != -100
    expected = ((head(hidden).argmax(-1) == shifted) & valid).sum()
    assert int(correct) == int(expected)
    assert 0 < int(correct) < int(valid.sum())


def test_no_valid_label_gives_the_plain_value_and_zero_gradients():
    head = nn.Linear(8, 11)
    hidden = torch.randn(2, 5, 8, requires_grad=True)
    labels = torch.full((2, 5), -100)
    targets = shifted_targets(labels)
    loss, _ = linear_cross_entropy(hidden, head, targets)
    assert torch.isnan(loss)  # the mean of nothing, as torch's cross_entropy
    loss, _ = linear_cross_entropy(hidden, head, targets, num_items=4)
    loss.backward()
    assert loss.item() == 0.0 and hidden.grad.abs().sum().item() == 0.0


def test_bf16_autocast_matches_the_plain_path():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 32, 32, generator=g)
    head = nn.Linear(32, 64, bias=False)
    labels = _labels(2, 32, 64, g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = _reference(hidden, head, labels)
        loss, _ = linear_cross_entropy(hidden, head, shifted_targets(labels), chunk_elements=10 * 64)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) < 2e-2 * ref.item()


def _tiny_model(**extra):
    config = AutoConfig.for_model("qwen3", vocab_size=120, tie_word_embeddings=True, **SMALL, **extra)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


def test_through_the_model_with_packed_rows_same_loss_and_gradients():
    model = _tiny_model()
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 120, (2, 24), generator=g)
    labels = _labels(2, 24, 120, g)
    # two packed documents per row: positions restart, no attention mask (document-boundary masking)
    pos = torch.cat([torch.arange(10), torch.arange(14)]).repeat(2, 1)
    ref = model(input_ids=ids, position_ids=pos, labels=labels).loss
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    head = check_supported(model)
    with head_computes_loss(head, shifted_targets(labels), None, 5 * 120) as out:
        outputs = model(input_ids=ids, position_ids=pos)
    out["loss"].backward()
    assert outputs.logits is out["loss"]
    assert abs(out["loss"].item() - ref.item()) < 1e-5
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, ref_grads[name], atol=1e-6, rtol=1e-4, msg=name)
    # the patch is gone: the head computes logits again
    assert model(input_ids=ids).logits.shape == (2, 24, 120)


def test_models_whose_logits_it_would_get_wrong_are_refused():
    with pytest.raises(ConfigError, match="final_logit_softcapping"):
        model = _tiny_model()
        model.config.final_logit_softcapping = 30.0
        check_supported(model)
    model = _tiny_model()
    model.lm_head = nn.Sequential(model.lm_head)
    with pytest.raises(ConfigError, match="plain torch.nn.Linear, found Sequential"):
        check_supported(model)


def _sft(tmp_path, tok, data, name, loss, grad_accum=1):
    cfg = StageConfig.model_validate(
        {
            "stage": "sft",
            "output_dir": str(tmp_path / name),
            "model": {"init": "tiny", "tokenizer": str(tok), "overrides": SMALL},
            "data": {
                "train": [str(data)],
                "max_length": 64,
                "validation": [str(data).replace("conv.jsonl", "conv_val.jsonl")],
            },
            "train": {
                "max_steps": 12,
                "batch_size": 8 // grad_accum,
                "grad_accum": grad_accum,
                "lr": 3e-3,
                "log_interval": 3,
                "eval_interval": 6,
                "eval_batches": 2,
                "loss": loss,
                "loss_chunk_elements": 1000,  # several chunks per micro-batch
            },
        }
    )
    run_stage(cfg, console=False)
    return read_metrics(tmp_path / name / "metrics.jsonl")


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_sft_stage_chunked_equals_plain(tmp_path, tiny_tokenizer_dir, lm_data, grad_accum, monkeypatch):
    calls = []
    fused = chunked_loss._LinearCrossEntropy.apply
    monkeypatch.setattr(
        chunked_loss._LinearCrossEntropy, "apply", lambda *a: calls.append(a[0].shape[0]) or fused(*a)
    )
    plain = _sft(tmp_path, tiny_tokenizer_dir, lm_data["conv"], "plain", "plain", grad_accum)
    assert not calls
    chunked = _sft(tmp_path, tiny_tokenizer_dir, lm_data["conv"], "chunked", "chunked", grad_accum)
    # every training micro-batch and evaluation batch went through the fused path
    assert len(calls) == 12 * grad_accum + 2 * 2  # evaluations at steps 6 and 12, 2 batches each
    for key in ("train/loss", "eval/loss", "train/mean_token_accuracy", "eval/mean_token_accuracy"):
        a = [r[key] for r in plain if key in r]
        b = [r[key] for r in chunked if key in r]
        assert len(a) == len(b) > 1, key
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4, (key, a, b)
    losses = [r["train/loss"] for r in plain if "train/loss" in r]
    assert losses[-1] < losses[0] - 0.3  # it trained, so equal curves are not equal constants
    assert_same_weights(tmp_path / "plain", tmp_path / "chunked", atol=1e-4)
