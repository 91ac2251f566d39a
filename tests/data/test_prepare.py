"""prepare: output files and manifest, reuse by fingerprint and what invalidates it, the CLI, path rules."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from minigpt.data import prepare_dataset, read_jsonl
from minigpt.data.data_cli import main
from minigpt.data.sources import offline_mode
from minigpt.models.tokenizer import CHAT_TEMPLATE

from .conftest import alpaca_rows, write_jsonl


@pytest.fixture
def sft_config(mixture, tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "data" / "alpaca.jsonl", alpaca_rows(30))
    sources = [{"name": "alpaca", "path": "data/alpaca.jsonl", "converter": "alpaca"}]
    return mixture(sources, name="general", validation={"count": 4})


def test_outputs_and_manifest(sft_config: Path, tmp_path: Path, tokenizer_dir: Path) -> None:
    out = prepare_dataset(sft_config, tmp_path / "out", tokenizer=tokenizer_dir)
    assert out.train_path == tmp_path / "out" / "sft_general_train.jsonl"
    assert (
        out.val_path.name == "sft_general_val.jsonl" and out.manifest_path.name == "sft_general_manifest.json"
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "sft_general_manifest.json",
        "sft_general_train.jsonl",
        "sft_general_val.jsonl",
    ]
    train, val = read_jsonl(out.train_path), read_jsonl(out.val_path)
    assert (len(train), len(val)) == (26, 4) and not out.reused
    assert train[0]["meta"]["source"] == "alpaca" and train[0]["meta"]["id"].startswith("alpaca.jsonl:")
    manifest = json.loads(out.manifest_path.read_text())
    assert manifest == out.manifest
    assert manifest["train"]["rows"] == 26 and manifest["val"]["rows"] == 4
    assert manifest["train"]["tokens"] == sum(s["drawn_tokens"] for s in manifest["sources"]) > 0
    assert len(manifest["fingerprint"]) == 64 and manifest["dropped"] == {}
    assert manifest["sources"][0]["normalised_weight"] == 1.0


def test_relative_paths_resolve_against_the_config_folder(sft_config, tmp_path, monkeypatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert prepare_dataset(sft_config, "rel_out").train_path.resolve().parent == elsewhere / "rel_out"


def test_reuse_only_when_fingerprint_matches(
    sft_config, tmp_path, tokenizer_dir, other_tokenizer_dir
) -> None:
    out_dir = tmp_path / "out"
    first = prepare_dataset(sft_config, out_dir, tokenizer=tokenizer_dir, use_prepared=True)
    assert not first.reused
    again = prepare_dataset(sft_config, out_dir, tokenizer=tokenizer_dir, use_prepared=True)
    assert again.reused and again.manifest["fingerprint"] == first.manifest["fingerprint"]
    assert "reused" in again.summary

    def fresh(**kwargs) -> bool:
        args = {"tokenizer": tokenizer_dir, **kwargs}
        return not prepare_dataset(sft_config, out_dir, use_prepared=True, **args).reused

    # a converter argument
    data = yaml.safe_load(sft_config.read_text())
    data["sources"][0]["converter_args"] = {"system": "Be kind."}
    sft_config.write_text(yaml.safe_dump(data))
    assert fresh()
    assert read_jsonl(out_dir / "sft_general_train.jsonl")[0]["messages"][0]["role"] == "system"
    assert not fresh()
    # a source file's content, with size and mtime unchanged
    source = sft_config.parent / "data" / "alpaca.jsonl"
    stat = source.stat()
    text = source.read_text()
    source.write_text(text.replace("Say the number 7.", "Say the number 8."))
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.stat().st_size == stat.st_size and source.stat().st_mtime_ns == stat.st_mtime_ns
    assert fresh()
    # the tokenizer (another vocabulary), then only its chat template
    assert fresh(tokenizer=other_tokenizer_dir)
    assert fresh()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tok.chat_template = CHAT_TEMPLATE.replace("\\n", " ")
    assert fresh(tokenizer=tok)
    # seed, budget, filters (everything in the config)
    assert fresh(overrides=["seed=3"])
    assert fresh(overrides=["seed=3", "filters.max_tokens=500"])
    assert not fresh(overrides=["seed=3", "filters.max_tokens=500"])
    # an edited output file is never reused
    train = out_dir / "sft_general_train.jsonl"
    train.write_text(train.read_text()[:-50])
    assert fresh(overrides=["seed=3", "filters.max_tokens=500"])


def test_max_tokens_filter_counts_drops(sft_config, tmp_path, tokenizer_dir) -> None:
    out = prepare_dataset(
        sft_config, tmp_path / "out", tokenizer=tokenizer_dir, overrides=["filters.max_tokens=40"]
    )
    dropped = out.manifest["dropped"]
    assert dropped["filtered: over max_tokens (40)"] == 15  # the 15 rows with an input block
    kept = out.manifest["sources"][0]
    assert kept["available_rows"] + kept["val_rows"] + sum(dropped.values()) == 30


def test_cli_plan_and_prepare(sft_config, tmp_path, tokenizer_dir, capsys) -> None:
    assert main(["plan", "--config", str(sft_config), "--tokenizer", str(tokenizer_dir)]) == 0
    printed = capsys.readouterr().out
    assert "Mixture sft/general (schema conversations)" in printed
    assert "weights normalised to sum to 1: alpaca 1 → 1.000" in printed
    header = next(line for line in printed.splitlines() if line.startswith("source"))
    assert header.split() == [
        "source",
        "rows",
        "tokens",
        "val",
        "val",
        "tok",
        "drawn",
        "drawn",
        "tok",
        "repeat",
        "weight",
        "share",
    ]
    args = ["prepare", "--config", str(sft_config), "--output-dir", str(tmp_path / "cli"), "--set", "seed=2"]
    assert main(args) == 0
    assert "wrote " in capsys.readouterr().out
    assert main([*args, "--use-prepared"]) == 0
    assert "reused" in capsys.readouterr().out
    assert main(["plan", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_offline_switches(monkeypatch) -> None:
    for key in ("MINIGPT_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    assert offline_mode() is False
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert offline_mode() is True
    monkeypatch.setenv("MINIGPT_OFFLINE", "0")  # explicit: read a cached hub copy
    assert offline_mode() is False
    assert offline_mode(True) is True
    monkeypatch.setenv("MINIGPT_OFFLINE", "yes")
    assert offline_mode() is True


def test_tokenizer_path_in_config_resolves_against_its_folder(mixture, tmp_path, tokenizer_dir) -> None:
    import shutil

    shutil.copytree(tokenizer_dir, tmp_path / "tok")
    write_jsonl(tmp_path / "a.jsonl", alpaca_rows(10))
    cfg = mixture([{"name": "a", "path": "a.jsonl", "converter": "alpaca"}], tokenizer="./tok", unit="tokens")
    out = prepare_dataset(cfg, tmp_path / "out")
    assert out.manifest["train"]["tokens"] > 0 and out.manifest["tokenizer"] == str(tmp_path / "tok")


def test_hub_source_online_goes_through_load_dataset(mixture, tmp_path, monkeypatch) -> None:
    import datasets

    calls = []

    def fake_load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return iter(
            [{"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go"}]
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    source = {
        "name": "hh",
        "hub": "Anthropic/hh-rlhf",
        "data_dir": "helpful-base",
        "revision": "abc123",
        "converter": "hh_rlhf",
        "offline_path": "never-read.jsonl",
    }
    cfg = mixture([source], schema="preference", stage="dpo")
    out = prepare_dataset(cfg, tmp_path / "out", offline=False)
    assert calls[0] == (
        "Anthropic/hh-rlhf",
        {
            "name": None,
            "split": "train",
            "revision": "abc123",
            "streaming": False,
            "data_dir": "helpful-base",
        },
    )
    assert out.read()[0]["chosen"] == [{"role": "assistant", "content": "hello"}]
    assert out.read()[0]["meta"]["id"] == "hh-rlhf#1"
    assert "hub Anthropic/hh-rlhf data_dir=helpful-base revision=abc123" in out.summary
    # the pinned revision is part of the fingerprint
    again = prepare_dataset(cfg, tmp_path / "out", offline=False, use_prepared=True)
    assert again.reused
    data = yaml.safe_load(cfg.read_text())
    data["sources"][0]["revision"] = "def456"
    cfg.write_text(yaml.safe_dump(data))
    assert not prepare_dataset(cfg, tmp_path / "out", offline=False, use_prepared=True).reused
