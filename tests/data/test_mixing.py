"""Mixing: sample- vs token-weighted proportions, budgets, caps, validation split, dedup, streaming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minigpt.data import plan_dataset, prepare_dataset, read_jsonl
from minigpt.errors import ConfigError

from .conftest import write_jsonl

TOLERANCE = 0.02  # realised shares must be within 2 percentage points of the normalised weights


@pytest.fixture
def short_long(tmp_path: Path) -> tuple[Path, Path]:
    """Two text sources whose rows differ ~10x in length."""
    short = write_jsonl(tmp_path / "short.jsonl", [{"text": f"cat {i}"} for i in range(200)])
    long_rows = [
        {"text": f"story {i}: " + "the dog ran in the park and sat on the mat. " * 4} for i in range(200)
    ]
    return short, write_jsonl(tmp_path / "long.jsonl", long_rows)


def two_sources(short: Path, long: Path, **extra) -> list[dict]:
    return [
        {"name": "short", "path": short.name, "converter": "text", "weight": 1, **extra},
        {"name": "long", "path": long.name, "converter": "text", "weight": 3, **extra},
    ]


def shares(manifest: dict, key: str) -> dict[str, float]:
    drawn = {s["name"]: s[key] for s in manifest["sources"]}
    total = sum(drawn.values())
    return {k: v / total for k, v in drawn.items()}


def test_sample_weighted_mixing(mixture, short_long, tokenizer_dir, tmp_path) -> None:
    cfg = mixture(
        two_sources(*short_long), schema="text", stage="pretrain", unit="samples", budget={"samples": 400}
    )
    out = prepare_dataset(cfg, tmp_path / "out", tokenizer=tokenizer_dir)
    by_rows = shares(out.manifest, "drawn_rows")
    assert by_rows["short"] == pytest.approx(0.25, abs=TOLERANCE)
    assert out.manifest["train"]["rows"] == 400  # a sample budget is met exactly
    assert shares(out.manifest, "drawn_tokens")["short"] < 0.10  # short rows: far fewer tokens than 25%
    rows = read_jsonl(out.train_path)
    assert sum(r["meta"]["source"] == "short" for r in rows) == 100


def test_token_weighted_mixing(mixture, short_long, tokenizer_dir, tmp_path) -> None:
    cfg = mixture(
        two_sources(*short_long),
        schema="text",
        stage="pretrain",
        unit="tokens",
        budget={"tokens": 20000},
        max_repeat=10,
    )
    out = prepare_dataset(cfg, tmp_path / "out", tokenizer=tokenizer_dir)
    by_tokens = shares(out.manifest, "drawn_tokens")
    assert by_tokens["short"] == pytest.approx(0.25, abs=TOLERANCE)
    assert by_tokens["long"] == pytest.approx(0.75, abs=TOLERANCE)
    record = {s["name"]: s for s in out.manifest["sources"]}
    assert record["short"]["realised_share"] == pytest.approx(by_tokens["short"])
    assert 20000 <= out.manifest["train"]["tokens"] < 20000 + 200  # overshoot below one row per source
    assert 1 < record["short"]["repeat"] < 10  # 5000 tokens from a small pool: repeated, under the cap
    assert not record["short"]["capped"]


def test_token_unit_with_sample_budget(mixture, short_long, tokenizer_dir, tmp_path) -> None:
    cfg = mixture(
        two_sources(*short_long), schema="text", stage="pretrain", unit="tokens", budget={"samples": 300}
    )
    out = prepare_dataset(cfg, tmp_path / "out", tokenizer=tokenizer_dir)
    assert shares(out.manifest, "drawn_tokens")["short"] == pytest.approx(0.25, abs=TOLERANCE)
    assert out.manifest["train"]["rows"] == pytest.approx(300, rel=0.03)


def test_epochs_budget_and_repeat_cap(mixture, short_long, tokenizer_dir, tmp_path) -> None:
    short, long = short_long
    write_jsonl(short, [{"text": f"cat {i}"} for i in range(50)])
    write_jsonl(long, [{"text": f"dog {i}"} for i in range(150)])  # 2 epochs of 200 rows = 400 = 200 + 200
    sources = two_sources(short, long)
    sources[1]["weight"] = 1
    cfg = mixture(sources, schema="text", stage="pretrain", budget={"epochs": 2})
    out = prepare_dataset(cfg, tmp_path / "out")  # sample unit: no tokenizer needed
    record = {s["name"]: s for s in out.manifest["sources"]}
    assert record["short"]["drawn_rows"] == 200 and record["short"]["repeat"] == pytest.approx(4.0)
    assert record["long"]["drawn_rows"] == 200 and record["long"]["repeat"] == pytest.approx(200 / 150)
    assert record["short"]["drawn_tokens"] is None  # no tokenizer: no token counts at all

    sources[0]["max_repeat"] = 2
    capped = prepare_dataset(
        mixture(sources, schema="text", stage="pretrain", budget={"epochs": 2}), tmp_path / "o2"
    )
    record = {s["name"]: s for s in capped.manifest["sources"]}
    assert record["short"]["drawn_rows"] == 100 and record["short"]["capped"] is True
    assert any("max_repeat" in w for w in capped.manifest["warnings"])


def test_validation_never_overlaps_train_with_dedup_on_or_off(mixture, tmp_path) -> None:
    rows = [{"text": f"line {i % 30}"} for i in range(60)]  # every text twice within the source
    write_jsonl(tmp_path / "a.jsonl", rows)
    write_jsonl(tmp_path / "b.jsonl", [{"text": f"line {i}"} for i in range(20, 50)])  # overlaps a
    for dedup in (True, False):
        sources = [
            {"name": "a", "path": "a.jsonl", "converter": "text"},
            {"name": "b", "path": "b.jsonl", "converter": "text"},
        ]
        cfg = mixture(
            sources,
            schema="text",
            stage="pretrain",
            dedup=dedup,
            validation={"fraction": 0.3},
            budget={"samples": 300},
        )
        out = prepare_dataset(cfg, tmp_path / f"out{dedup}")
        train = {r["text"] for r in read_jsonl(out.train_path)}
        val = {r["text"] for r in read_jsonl(out.val_path)}
        assert val and train and not (train & val)
        if dedup:
            assert len(read_jsonl(out.val_path)) == len(val)  # no duplicate inside validation either


def test_dedup_within_and_across_sources_is_counted(mixture, tmp_path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"text": f"row {i}"} for i in range(20)] + [{"text": "row 3"}])
    write_jsonl(tmp_path / "b.jsonl", [{"text": f"row {i}"} for i in range(15, 40)])  # 5 shared with a
    sources = [
        {"name": "a", "path": "a.jsonl", "converter": "text"},
        {"name": "b", "path": "b.jsonl", "converter": "text"},
    ]
    out = prepare_dataset(mixture(sources, schema="text", stage="pretrain"), tmp_path / "out")
    record = {s["name"]: s for s in out.manifest["sources"]}
    assert record["a"]["dropped"] == {"duplicate": 1} and record["a"]["available_rows"] == 20
    assert record["b"]["dropped"] == {"duplicate of source a": 5} and record["b"]["available_rows"] == 20
    assert out.manifest["dropped"] == {"duplicate": 1, "duplicate of source a": 5}
    texts = [r["text"] for r in read_jsonl(out.train_path)]
    assert len(texts) == len(set(texts)) == 40  # budget: epochs 1, equal weights


def test_streaming_stops_reading_at_the_token_budget(mixture, tokenizer_dir, tmp_path) -> None:
    rows: list = [{"text": f"the cat sat on mat number {i}"} for i in range(5000)]
    rows[3000] = "{this line is never read"
    write_jsonl(tmp_path / "big.jsonl", rows)
    sources = [{"name": "big", "path": "big.jsonl", "converter": "text", "streaming": True}]
    cfg = mixture(
        sources,
        schema="text",
        stage="pretrain",
        unit="tokens",
        budget={"tokens": 2000},
        validation={"count": 5},
    )
    out = prepare_dataset(cfg, tmp_path / "out", tokenizer=tokenizer_dir)
    record = out.manifest["sources"][0]
    assert record["streamed"] and not record["exhausted"]
    assert record["rows_read"] < 400  # stopped long before line 3001
    assert 2000 <= out.manifest["train"]["tokens"] < 2100
    assert out.manifest["val"]["rows"] == 5
    plan = plan_dataset(cfg, tokenizer=tokenizer_dir).table()
    assert "≥" in plan and "[streamed]" in plan


def test_streaming_needs_budget_in_the_mixing_unit(mixture, tmp_path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    sources = [{"name": "a", "path": "a.jsonl", "converter": "text", "streaming": True}]
    with pytest.raises(ConfigError, match="streamed"):
        plan_dataset(mixture(sources, schema="text", stage="pretrain", budget={"epochs": 1}))


def test_token_unit_without_tokenizer_is_a_clear_error_and_samples_show_na(mixture, short_long) -> None:
    cfg = mixture(
        two_sources(*short_long), schema="text", stage="pretrain", unit="tokens", budget={"tokens": 100}
    )
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        plan_dataset(cfg)
    plan = plan_dataset(cfg, overrides=["unit=samples", "budget={samples: 40}"]).table()
    assert "tokenizer: none (token counts n/a)" in plan
    assert "short 1 → 0.250, long 3 → 0.750" in plan  # weights normalised, and said so
    line = next(x for x in plan.splitlines() if x.startswith("short"))
    assert line.split()[1:3] == ["200", "n/a"]


def test_same_seed_same_output_other_seed_other_order(mixture, short_long, tmp_path) -> None:
    cfg = mixture(two_sources(*short_long), schema="text", stage="pretrain", budget={"samples": 100})
    first = prepare_dataset(cfg, tmp_path / "a").train_path.read_bytes()
    assert prepare_dataset(cfg, tmp_path / "b").train_path.read_bytes() == first
    other = prepare_dataset(cfg, tmp_path / "c", overrides=["seed=1"]).train_path.read_bytes()
    assert other != first
    assert sorted(json.loads(x)["meta"]["source"] for x in other.splitlines()) == sorted(
        json.loads(x)["meta"]["source"] for x in first.splitlines()
    )
