"""Helpers shared by test modules (importable as ``support``: pytest's ``pythonpath`` includes tests/)."""

import json
import random
from pathlib import Path

import pytest
import yaml
from transformers import TrainerCallback

# A 2-layer, 64-wide model: seconds per test on a CPU.
SMALL = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
}

# docs/design.md §5: what every training stage logs.
EVERY_STAGE_METRICS = frozenset(
    {
        "train/loss",
        "train/learning_rate",
        "train/grad_norm",
        "train/epoch",
        "train/global_step",
        "train/tokens_per_second",
        "train/samples_per_second",
        "train/steps_per_second",
        "train/num_tokens",
        "train/eta_minutes",
    }
)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


class InterruptAt(TrainerCallback):
    """Simulates Ctrl-C at the end of a given optimizer step."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt


# A tiny preference task for the DPO and reward stages.
WORDS = ["cat", "dog", "bird", "fish", "mat", "tree", "pond", "hill"]


MINIMAL_STAGE_YAML = "output_dir: out\nmodel: {init: tiny, tokenizer: tok}\ndata: {train: [x.jsonl]}\n"
"""The fields every stage config needs, for tests of one bad field (prefix ``stage: NAME\n``)."""


def assert_refused(path: Path, text: str, message: str) -> None:
    """Write a stage config and check that loading it raises a ConfigError matching ``message``."""
    from minigpt.errors import ConfigError
    from minigpt.stages.stage_config import load_stage_config

    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_stage_config(path)


def digit_prompts(n: int) -> list[dict]:
    """Prompt rows for RL smoke tests whose reward counts digits in the completion."""
    return [{"prompt": [{"role": "user", "content": f"Write digits {i}"}]} for i in range(n)]


def copy_pairs(n: int, seed: int) -> list[dict]:
    """Pairs: prompt "Say the W.", preferred "the W.", dispreferred "the O." (another word). A random-init model
    learns these preferences in a few dozen steps. Held-out rows are a fresh sample (another seed)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        w, o = rng.sample(WORDS, 2)
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Say the {w}."}],
                "chosen": [{"role": "assistant", "content": f"the {w}."}],
                "rejected": [{"role": "assistant", "content": f"the {o}."}],
                "meta": {"source": "test", "id": str(len(rows))},
            }
        )
    return rows


def run_interrupted_then_resumed(
    run_fn, cfg_factory, interrupt_at: int, *, names=("full", "part"), before_resume=None, **resume_kw
):
    """Runs ``cfg_factory(names[0])`` to the end, then ``cfg_factory(names[1])`` interrupted (Ctrl-C) at the end of
    step ``interrupt_at`` and resumed (``before_resume(cfg)`` runs in between; ``resume_kw`` go to the resumed
    ``run_fn``). Returns (uninterrupted output dir, resumed output dir, the resumed run's summary)."""
    import pytest

    full = cfg_factory(names[0])
    run_fn(full)
    part = cfg_factory(names[1])
    with pytest.raises(KeyboardInterrupt):
        run_fn(part, callbacks=[InterruptAt(interrupt_at)])
    if before_resume is not None:
        before_resume(part)
    part.resume = True
    summary = run_fn(part, **resume_kw)
    return Path(full.output_dir), Path(part.output_dir), summary


def assert_same_weights(dir_a: Path, dir_b: Path, atol: float, name: str = "model.safetensors") -> dict:
    """The safetensors file ``name`` holds the same tensors in both folders, within ``atol`` (rtol 0).
    Returns the first folder's tensors."""
    import torch
    from safetensors.torch import load_file

    a, b = load_file(Path(dir_a) / name), load_file(Path(dir_b) / name)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=atol, rtol=0)
    return a


def assert_same_logged(
    dir_a: Path, dir_b: Path, keys, atol: float, steps=None, record_key: str = "train/loss"
):
    """The training records (those holding ``record_key``) of both runs log the same ``keys`` at each step, within
    ``atol`` (rel 0); with ``steps``, the second run logged exactly those steps (none lost or logged twice)."""
    import pytest

    from minigpt.metrics import read_metrics

    a = {r["step"]: r for r in read_metrics(Path(dir_a) / "metrics.jsonl") if record_key in r}
    b = [r for r in read_metrics(Path(dir_b) / "metrics.jsonl") if record_key in r]
    if steps is not None:
        assert [r["step"] for r in b] == list(steps)  # no step lost or logged twice
    for key in keys:
        got = {r["step"]: r[key] for r in b}
        assert got == pytest.approx({step: r[key] for step, r in a.items()}, abs=atol, rel=0), key


def quarter_means(values: list[float]) -> tuple[float, float]:
    """Means of the first and the last quarter of ``values``."""
    q = max(1, len(values) // 4)
    return sum(values[:q]) / q, sum(values[-q:]) / q


def reward_quarters(records: list[dict], key: str = "train/reward") -> tuple[list[float], float, float]:
    """The logged ``key`` series and the means of its first and last quarter."""
    rewards = [r[key] for r in records if key in r]
    return (rewards, *quarter_means(rewards))


def assert_logged_keys(records: list[dict], expected: set[str]) -> set[str]:
    """Every ``expected`` metric was logged at least once; returns all logged keys."""
    keys = set().union(*records)
    assert expected <= keys, expected - keys
    return keys


def synthetic_sentences(n: int, seed: int = 0) -> list[str]:
    """Simple seeded sentences with structure a tiny model can learn (subject verb preposition object)."""
    rng = random.Random(seed)
    subjects = ["the cat", "the dog", "a bird", "a fish", "the big dog", "a small cat"]
    verbs = ["sat", "ran", "flew", "swam", "slept"]
    places = ["on the mat", "under the tree", "near the pond", "over the hill"]
    return [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(places)}." for _ in range(n)]


def addition_conversations(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        rows.append(
            {
                "conversations": [
                    {"role": "system", "content": "You add numbers."},
                    {"role": "user", "content": f"What is {a} plus {b}?"},
                    {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
                ]
            }
        )
    return rows


def tiny_qwen3(tokenizer, *, context: int = 256, tied: bool = True, seed: int = 0):
    """The tests' smallest causal LM for ``tokenizer``: Qwen3, 2 layers, 32 wide, seeded random weights."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=context,
        tie_word_embeddings=tied,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen3ForCausalLM(config)


CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def tictactoe_model_dir(path: Path, *, sample: int = 300, vocab_size: int = 320, context: int = 128) -> Path:
    """A tiny random tic-tac-toe model folder in ``path``: a byte-level BPE trained on seeded SFT answers,
    the ChatML template, and :func:`tiny_qwen3`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from minigpt.tasks.tictactoe.generators import tictactoe_sft

    texts = []
    for row in tictactoe_sft(sample=sample, moves="one", seed=0):
        texts.extend(m["content"] for m in row["messages"])
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    raw.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML
    )
    path.mkdir(parents=True, exist_ok=True)
    tiny_qwen3(tokenizer, context=context, tied=True).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def short_onpolicy_mixture(name: str, positions: int, folder: Path) -> Path:
    """A copy of ``recipes/tictactoe/<name>`` written to ``folder`` whose on-policy sources draw a seeded
    ``positions`` of the 4,520 positions: a shortened recipe's start would otherwise answer all of them, which
    costs more than the shortened stages that read the data."""
    config = yaml.safe_load(Path("recipes/tictactoe", name).read_text())
    for source in config["sources"]:
        if source["generator"].endswith("_onpolicy"):
            source["generator_args"]["sample"] = positions
    out = folder / f"short-{name}"
    out.write_text(yaml.safe_dump(config))
    return out
