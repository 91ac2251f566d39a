"""Every shipped mixture config runs plan and prepare offline on its samples; the samples are sound."""

from __future__ import annotations

from pathlib import Path

import pytest

from minigpt.data import load_mixture, plan_dataset, prepare_dataset, read_jsonl
from minigpt.data.schema import validate_row

ROOT = Path(__file__).resolve().parents[2] / "config" / "data"
CONFIGS = sorted(ROOT.rglob("*.yaml"))
EXPECTED = {
    "pretrain/phase1/default.yaml",
    "midtrain/phase1/default.yaml",
    "posttrain/sft/general.yaml",
    "posttrain/sft/code.yaml",
    "posttrain/sft/reasoning.yaml",
    "posttrain/dpo/helpfulness.yaml",
    "posttrain/dpo/safety.yaml",
    "posttrain/rlaif/ppo.yaml",
    "posttrain/rlaif/grpo.yaml",
    "posttrain/rlaif/spo.yaml",
}


def test_the_config_tree_is_complete_with_readmes() -> None:
    assert {p.relative_to(ROOT).as_posix() for p in CONFIGS} == EXPECTED
    for folder in {p.parent for p in CONFIGS}:
        assert (folder / "README.md").is_file(), folder


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_plan_and_prepare_offline(path: Path, tmp_path: Path, tokenizer_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("MINIGPT_OFFLINE", "1")
    config = load_mixture(path)
    assert all(s.hub and s.offline_path and Path(s.offline_path).is_file() for s in config.sources)
    plan = plan_dataset(path, tokenizer=tokenizer_dir).table()
    assert "OFFLINE SAMPLE" in plan and "offline:" in plan
    out = prepare_dataset(path, tmp_path, tokenizer=tokenizer_dir)
    train, val = read_jsonl(out.train_path), read_jsonl(out.val_path)
    assert len(train) >= 19 and len(val) >= 1
    for row in train + val:
        validate_row(row, config.schema)
    if config.stage in ("grpo", "spo"):
        assert all(r["answer"].isdigit() for r in train) and train[0]["prompt"][0]["role"] == "system"
    if config.unit == "samples":  # sample-unit mixtures also plan without a tokenizer
        assert "token counts n/a" in plan_dataset(path).table()


def test_samples_are_duplicate_free_and_sized() -> None:
    samples = ROOT / "samples"
    sizes = {p.stem: len(read_jsonl(p)) for p in samples.glob("*.jsonl")}
    assert 40 <= sizes["alpaca"] <= 80 and sizes["pretrain_text"] >= 300
    assert min(sizes.values()) >= 20
    for name in sizes:
        rows = [str(sorted(r.items())) for r in read_jsonl(samples / f"{name}.jsonl")]
        if name != "wikitext":  # wikitext repeats its blank separator rows, like the real dataset
            assert len(rows) == len(set(rows)), name
    gsm8k = read_jsonl(samples / "gsm8k.jsonl")
    assert any("," in r["answer"].rsplit("####", 1)[1] for r in gsm8k)  # '#### 1,234' style answers occur
    alpaca = read_jsonl(samples / "alpaca.jsonl")
    assert {r["input"] == "" for r in alpaca} == {True, False}
    assert set(alpaca[0]) == {"instruction", "input", "output", "text"}
