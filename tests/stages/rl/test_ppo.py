"""PPO through the shared runner on the digit task of test_grpo: the mean reward rises, every PPO metric of
docs/design.md §5 is logged, a reward-model folder can supply the reward (and initialise the critic), an
interrupted run resumes to exactly the uninterrupted run's actor and critic, the exported folder is a plain
causal LM, config mistakes are named, the static KV cache decodes exactly what the dynamic one does (and
compiles once for any prompt width); plus hand-checked values of the loop's tensor helpers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support import (
    SMALL,
    assert_logged_keys,
    assert_same_logged,
    assert_same_weights,
    reward_quarters,
    run_interrupted_then_resumed,
)
from test_grpo import rl_cfg, run, spy_generate  # a sibling module: pytest puts tests/stages/rl on sys.path
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TrainerCallback,
)

from minigpt.errors import ConfigError
from minigpt.metrics import read_metrics
from minigpt.stages.rl.onpolicy.onpolicy_loop import ONPOLICY_STATE
from minigpt.stages.rl.onpolicy.onpolicy_ops import (
    clipped_policy_losses,
    clipped_value_losses,
    gae,
    masked_whiten,
    pad_left,
)
from minigpt.stages.rl.onpolicy.rollout import build_generation_config, encode_prompts, sample_completions
from minigpt.stages.rl.ppo import build_critic
from minigpt.stages.rl.rl_params import OnPolicyParams

CUDA = pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled decoding needs a GPU")
)


def onpolicy_cfg(tmp_path: Path, tok_dir: Path, stage: str, name: str, algo: dict | None = None, **train_kw):
    """test_grpo's config (without ``num_generations``: ppo and spo sample one completion per prompt)."""
    return rl_cfg(tmp_path, tok_dir, stage, name, algo=algo, **train_kw)


PPO_METRICS = {
    "train/reward",
    "train/reward_std",
    "train/reward/digit_reward",
    "train/kl",
    "train/kl_ref",
    "train/avg_response_len",
    "train/generation_seconds",
    "train/update_seconds",
    "train/actor_loss",
    "train/critic_loss",
    "train/actor_lr",
    "train/critic_lr",
    "train/actor_grad_norm",
    "train/critic_grad_norm",
    "train/clipfrac",
    "train/approx_kl",
    "train/value_explained_variance",
    "train/loss",
    "train/tokens_per_second",
    "train/num_tokens",
    "eval/reward",
    "eval/reward/digit_reward",
}


@pytest.mark.slow
def test_ppo_reward_rises_metrics_and_export(tmp_path, tiny_tokenizer_dir):
    cfg = onpolicy_cfg(tmp_path, tiny_tokenizer_dir, "ppo", "ppo", algo={"beta": 0.01, "critic_lr": 5e-3})
    summary = run(cfg)
    out = tmp_path / "ppo"
    records = read_metrics(out / "metrics.jsonl")
    rewards, first, last = reward_quarters(records)
    # Stated margin: from ~0.05-0.1 at random init the last quarter beats the first by 0.2+ (measured over
    # seeds 1, 2, 3, 7, 42 with this config: gains 0.30-0.64; seed 42, the default: 0.085 -> 0.389).
    assert last > first + 0.2, rewards
    keys = assert_logged_keys(records, PPO_METRICS)
    assert "eval/loss" not in keys and "eval/ppl" not in keys  # evaluation scores samples: no LM loss
    steps = [r for r in records if "train/loss" in r]
    assert all(r["train/generation_seconds"] > 0 and r["train/update_seconds"] > 0 for r in steps)
    assert all(0 < r["train/avg_response_len"] <= 8 for r in steps)
    assert all(math.isclose(r["train/critic_lr"] / r["train/actor_lr"], 0.5, rel_tol=1e-6) for r in steps)
    assert len([r for r in records if "eval/reward" in r]) >= 2
    assert summary["global_step"] == 20 and summary["num_tokens"] > 0
    # The export is the actor alone: a plain causal LM, no value head, no critic or reference files.
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    saved = set(load_file(out / "model.safetensors"))
    assert saved <= set(model.state_dict()) and not any(k.startswith(("backbone.", "head.")) for k in saved)
    assert not (out / ONPOLICY_STATE).exists() and not (out / ".reference").exists()


@pytest.fixture()
def reward_model_dir(tmp_path, tiny_tokenizer_dir) -> Path:
    """A tiny one-output sequence classifier saved with its tokenizer, as the reward stage writes it."""
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    config = AutoConfig.for_model(
        "qwen3", vocab_size=len(tok), pad_token_id=tok.pad_token_id, num_labels=1, **SMALL
    )
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    folder = tmp_path / "rm"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_ppo_with_a_reward_model(tmp_path, tiny_tokenizer_dir, reward_model_dir):
    algo = {
        "reward_model": str(reward_model_dir),
        "reward_model_weight": 0.5,
        "critic_init": str(reward_model_dir),
    }
    cfg = onpolicy_cfg(tmp_path, tiny_tokenizer_dir, "ppo", "ppo_rm", algo=algo, max_steps=4, eval_interval=2)
    run(cfg)
    records = read_metrics(tmp_path / "ppo_rm" / "metrics.jsonl")
    steps = [r for r in records if "train/reward/reward_model" in r]
    assert steps and all(r["train/reward/reward_model"] != 0.0 for r in steps)
    for r in steps:  # the logged reward is the weighted sum of the function's and the model's
        total = r["train/reward/digit_reward"] + 0.5 * r["train/reward/reward_model"]
        assert math.isclose(r["train/reward"], total, rel_tol=1e-5, abs_tol=1e-6)
    assert any("eval/reward/reward_model" in r for r in records)

    # Only a reward model: the reward is its score.
    cfg = onpolicy_cfg(
        tmp_path,
        tiny_tokenizer_dir,
        "ppo",
        "rm_only",
        algo={"reward_model": str(reward_model_dir), "rewards": []},
        max_steps=2,
    )
    run(cfg)
    steps = [r for r in read_metrics(tmp_path / "rm_only" / "metrics.jsonl") if "train/reward" in r]
    assert all(math.isclose(r["train/reward"], r["train/reward/reward_model"], rel_tol=1e-6) for r in steps)


def test_critic_starts_from_the_reward_model(tiny_tokenizer_dir, reward_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    policy = AutoModelForCausalLM.from_config(
        AutoConfig.for_model("qwen3", vocab_size=len(tok), pad_token_id=tok.pad_token_id, **SMALL)
    )
    rm = AutoModelForSequenceClassification.from_pretrained(reward_model_dir)
    critic = build_critic(policy, str(reward_model_dir), len(tok))
    torch.testing.assert_close(critic.head.weight, rm.score.weight, atol=0, rtol=0)
    for name, value in rm.model.state_dict().items():
        torch.testing.assert_close(critic.backbone.state_dict()[name], value, atol=0, rtol=0)
    fresh = build_critic(policy, None, len(tok))  # from the policy: its body, a zero head
    assert fresh.head.weight.abs().sum() == 0
    ids = torch.tensor([[5, 6, 7]])
    values = fresh(ids, torch.ones_like(ids), torch.arange(3)[None])
    assert values.shape == (1, 3) and values.abs().sum() == 0


class _Steps(TrainerCallback):
    def __init__(self):
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


@pytest.mark.slow
def test_ppo_resume_equals_an_uninterrupted_run(tmp_path, tiny_tokenizer_dir):
    algo = {"beta": 0.01, "num_minibatches": 2, "ppo_epochs": 2, "target_kl": 0.05}
    train = {"max_steps": 6, "save_interval": 2, "eval_interval": 0, "log_interval": 1}

    def cfg(name):
        return onpolicy_cfg(tmp_path, tiny_tokenizer_dir, "ppo", name, algo=algo, **train)

    def cut_has_checkpoint_2(cut):  # checkpoint-2 is mid-epoch (3 steps per epoch)
        assert (tmp_path / "cut" / "checkpoints" / "checkpoint-2" / ONPOLICY_STATE).exists()

    seen = _Steps()
    full_dir, cut_dir, _ = run_interrupted_then_resumed(
        run, cfg, 3, names=("full", "cut"), before_resume=cut_has_checkpoint_2, callbacks=[seen]
    )
    assert seen.steps == [3, 4, 5, 6]
    # Measured: bit-identical on CPU (sampling RNG restored from rng_state.pth, minibatch shuffles from the
    # same global RNG, critic + its optimizer and schedule from onpolicy_state.pt); the tolerance only
    # allows for a different BLAS.
    assert_same_weights(full_dir, cut_dir, atol=1e-6)
    critic_full, critic_cut = (
        torch.load(tmp_path / name / "checkpoints" / "checkpoint-6" / ONPOLICY_STATE, weights_only=True)
        for name in ("full", "cut")
    )
    for key, value in critic_full["critic"].items():
        torch.testing.assert_close(critic_cut["critic"][key], value, atol=1e-6, rtol=0)
    assert critic_cut["critic_scheduler"] == critic_full["critic_scheduler"]
    losses = [
        [
            (r["step"], r["train/loss"], r["train/critic_loss"])
            for r in read_metrics(tmp_path / n / "metrics.jsonl")
            if "train/loss" in r
        ]
        for n in ("full", "cut")
    ]
    assert [s for s, *_ in losses[1]] == [1, 2, 3, 4, 5, 6]
    for (_, a, ca), (_, b, cb) in zip(*losses, strict=True):
        assert math.isclose(a, b, abs_tol=1e-6) and math.isclose(ca, cb, abs_tol=1e-6)


def test_ppo_config_errors(tmp_path, tiny_tokenizer_dir):
    with pytest.raises(ConfigError, match=r"algo\.rewards.*algo\.reward_model"):
        onpolicy_cfg(tmp_path, tiny_tokenizer_dir, "ppo", "bad", algo={"rewards": []})
    # a grpo/rloo field: ppo samples one completion per prompt
    with pytest.raises(ConfigError, match="unknown key 'algo.num_generations'"):
        onpolicy_cfg(tmp_path, tiny_tokenizer_dir, "ppo", "bad", algo={"num_generations": 4})
    cfg = onpolicy_cfg(
        tmp_path, tiny_tokenizer_dir, "ppo", "bad", algo={"reward_model": str(tmp_path / "nope")}
    )
    with pytest.raises(ConfigError, match="algo.reward_model: .*nope is not a model folder"):
        run(cfg)
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()  # refused before training: nothing left


# ---------------------------------------------------------------- static KV cache


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_static_cache_generates_the_same_completions(tiny_tokenizer_dir, device):
    """The loop's generation with ``cache_implementation: static`` (compiled on a GPU) gives token for token
    the completions of the dynamic cache, greedy and seeded sampling, on left-padded prompts of different
    widths; the cache is sized max_prompt_length + max_completion_length, not by the batch."""
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    config = AutoConfig.for_model("qwen3", vocab_size=len(tok), pad_token_id=tok.pad_token_id, **SMALL)
    torch.manual_seed(2)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # sharper logits: the greedy path's smallest top-2 gap is 5e-3 (measured on CPU),
        model.lm_head.weight.mul_(10.0)  # far above a compiled GPU kernel's rounding, so no tie can flip
    model = model.to(device).eval()
    eos, pad = tok.eos_token_id, tok.pad_token_id
    prompts = [[{"role": "user", "content": "Write digits like " + "7 " * n}] for n in (1, 6, 3, 11)]
    ids, mask = pad_left(encode_prompts(tok, prompts), pad, device)
    assert (mask[:, 0] == 0).any()  # some rows are left-padded
    out = {}
    for cache in ("dynamic", "static"):
        params = OnPolicyParams(max_prompt_length=48, max_completion_length=16, cache_implementation=cache)
        greedy, greedy_mask = sample_completions(
            model, ids, mask, build_generation_config(params, False, eos, pad), eos
        )
        torch.manual_seed(1)
        sampled, _ = sample_completions(
            model, ids, mask, build_generation_config(params, True, eos, pad), eos
        )
        out[cache] = greedy, sampled
        built = getattr(model, "_previous_max_cache_length", None)  # set by transformers' static cache only
        assert built == (48 + 16 if cache == "static" else None)
    assert greedy_mask.sum() > len(prompts) * 4  # completions of some length, not an immediate end token
    for got, want in zip(out["static"], out["dynamic"], strict=True):
        assert torch.equal(got, want)
    assert hasattr(model, "_compiled_call") == (device == "cuda")  # transformers compiles on a GPU only


@pytest.mark.slow
def test_static_cache_compiles_once_for_any_prompt_width(tiny_tokenizer_dir):
    """The compiled decoding step (forced on the CPU with inductor: transformers compiles only on a GPU by
    itself) is built once for batches of different prompt widths, because the cache is sized from
    max_prompt_length, and decodes what the dynamic cache decodes. Without that fixed size, a wider batch
    reallocates the cache and compiles again (measured: 2 graphs for these two batches)."""
    from torch._dynamo.utils import counters
    from transformers import CompileConfig

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    config = AutoConfig.for_model("qwen3", vocab_size=len(tok), pad_token_id=tok.pad_token_id, **SMALL)
    torch.manual_seed(2)
    model = AutoModelForCausalLM.from_config(config).eval()
    eos, pad = tok.eos_token_id, tok.pad_token_id
    static = build_generation_config(
        OnPolicyParams(max_prompt_length=48, max_completion_length=6, cache_implementation="static"),
        False,
        eos,
        pad,
    )
    static.compile_config = CompileConfig(mode="default")
    static.compile_config._compile_all_devices = True  # transformers' switch for compiling off a GPU
    dynamic = build_generation_config(OnPolicyParams(max_completion_length=6), False, eos, pad)
    torch._dynamo.reset()
    graphs = counters["stats"]["unique_graphs"]
    try:
        for words in ((1, 3), (9, 12)):  # the second batch is 10+ tokens wider
            prompts = [[{"role": "user", "content": "Write digits like " + "7 " * n}] for n in words]
            ids, mask = pad_left(encode_prompts(tok, prompts), pad, "cpu")
            got, _ = sample_completions(model, ids, mask, static, eos)
            want, _ = sample_completions(model, ids, mask, dynamic, eos)
            assert torch.equal(got, want)
        assert hasattr(model, "_compiled_call")
        assert counters["stats"]["unique_graphs"] - graphs == 1
    finally:
        torch._dynamo.reset()


@pytest.mark.slow
def test_onpolicy_static_cache_run_matches_dynamic(tmp_path, tiny_tokenizer_dir, monkeypatch):
    """ppo with the static cache: generate receives it (compiling where the model is on a GPU), the run logs
    what the dynamic-cache run logs, and the exported folder's generation config stays the plain one."""
    seen = spy_generate(monkeypatch)
    train = {"max_steps": 3, "eval_interval": 0, "log_interval": 1}

    def cfg(name, cache):
        algo = {"max_prompt_length": 48, "cache_implementation": cache}
        return onpolicy_cfg(tmp_path, tiny_tokenizer_dir, "ppo", name, algo=algo, **train)

    run(cfg("dynamic", "dynamic"))
    assert seen and all(s["cache_implementation"] is None for s in seen)
    seen.clear()
    run(cfg("static", "static"))
    assert len(seen) == 4  # a rollout per step (one micro-step each), then the final evaluation
    for s in seen:
        assert s["cache_implementation"] == "static" and s["max_cache_len"] == 48 + 8
        assert s["disable_compile"] is False and s["cache_built"] == 48 + 8
        assert s["compiled"] == (s["device"] == "cuda")
    if seen[0]["device"] == "cpu":  # on a GPU, compiled bf16 kernels round differently: samples may differ
        # Measured on CPU: identical rewards, losses and weights (max difference 0.0); tolerance 1e-6.
        keys = ("train/reward", "train/loss")
        assert_same_logged(tmp_path / "dynamic", tmp_path / "static", keys, atol=1e-6)
        assert_same_weights(tmp_path / "dynamic", tmp_path / "static", atol=1e-6)
    saved = (tmp_path / "static" / "generation_config.json").read_text(encoding="utf-8")
    assert "cache_implementation" not in saved and "compile" not in saved
    assert saved == (tmp_path / "dynamic" / "generation_config.json").read_text(encoding="utf-8")


# ---------------------------------------------------------------- tensor helpers, by hand


def test_gae_matches_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # row 0: d2 = 1 - .3 = .7; d1 = 0 + .9*.3 - .2 = .07; d0 = .9*.2 - .1 = .08
    #        A2 = .7; A1 = .07 + .45*.7 = .385; A0 = .08 + .45*.385 = .25325
    # row 1 (last token masked, its value ignored): d1 = 2 - .5 = 1.5; d0 = .5 + .9*.5 - .4 = .55
    #        A1 = 1.5; A0 = .55 + .45*1.5 = 1.225
    expected = torch.tensor([[0.25325, 0.385, 0.7], [1.225, 1.5, 0.0]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, (expected + values) * mask)


def test_clipped_losses_and_whitening():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    losses, clipped, approx_kl = clipped_policy_losses(new, old, adv, 0.2, 0.2)
    # max(-A·r, -A·clip(r)): -1.2 (clipped at 1.2), -0.5 (unclipped wins), 2.2 (r inside the range)
    torch.testing.assert_close(losses, torch.tensor([[-1.2, -0.5, 2.2]]))
    torch.testing.assert_close(clipped, torch.tensor([[1.0, 0.0, 0.0]]))
    assert (approx_kl >= 0).all()
    value_losses = clipped_value_losses(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([2.0]), 0.5)
    torch.testing.assert_close(value_losses, torch.tensor([0.5 * max(1.0, 1.5**2)]))
    x, mask = torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(masked_whiten(x, mask), torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-4, rtol=0)
