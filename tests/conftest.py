import os

# Tests are offline and quiet: no hub calls, no telemetry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import json  # noqa: E402
import random  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

_WORDS = [
    "the",
    "a",
    "small",
    "big",
    "red",
    "blue",
    "cat",
    "dog",
    "bird",
    "fish",
    "sat",
    "ran",
    "flew",
    "swam",
    "on",
    "under",
    "near",
    "over",
    "mat",
    "tree",
    "pond",
    "hill",
    "and",
    "then",
    "quickly",
    "slowly",
    "happily",
]


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


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer with the project's chat template, trained locally on the test texts."""
    from minigpt.models.tokenizer import iter_texts, save_tokenizer, train_tokenizer

    rows = [{"text": t} for t in synthetic_sentences(500)] + addition_conversations(200)
    tok = train_tokenizer(iter_texts(rows), vocab_size=512, min_frequency=1)
    out = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(tok, out)
    return out


@pytest.fixture()
def lm_data(tmp_path) -> dict[str, Path]:
    return {
        "text": write_jsonl(tmp_path / "text.jsonl", [{"text": t} for t in synthetic_sentences(600, seed=1)]),
        "conv": write_jsonl(tmp_path / "conv.jsonl", addition_conversations(300, seed=2)),
        "conv_val": write_jsonl(tmp_path / "conv_val.jsonl", addition_conversations(40, seed=3)),
    }
