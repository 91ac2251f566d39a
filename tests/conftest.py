import os

# Tests are offline and quiet: no hub calls, no telemetry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from support import addition_conversations, synthetic_sentences  # noqa: E402, F401


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
