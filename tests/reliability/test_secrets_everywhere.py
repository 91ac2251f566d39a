"""Secrets outside training: ``minigpt data plan`` / ``prepare`` print source paths, hub revisions and the
tokenizer folder, and the prepared manifest records them. With HF_TOKEN and WANDB_API_KEY set and their values
placed in those spots, neither value reaches the console or any file of the output folder; ``***`` does."""

from __future__ import annotations

import secrets
import shutil
import sys
from pathlib import Path

import pytest

from minigpt.cli import main
from minigpt.data.data_cli import main as data_main
from minigpt.secrets import RedactingStream, redacted_console

from .helpers import write_rows, write_yaml

ROWS = [{"instruction": f"Say the number {i}.", "input": "", "output": f"{i}"} for i in range(32)]


@pytest.fixture()
def tokens(monkeypatch) -> tuple[str, str]:
    hf_token = "hf_" + secrets.token_hex(17)  # the shape of a real one, so both redaction rules apply
    wandb_key = secrets.token_hex(
        20
    )  # no recognisable shape: only its value in the environment gives it away
    monkeypatch.setenv("HF_TOKEN", hf_token)
    monkeypatch.setenv("WANDB_API_KEY", wandb_key)
    return hf_token, wandb_key


def _mixture(tmp_path: Path, tokenizer: Path, hf_token: str, wandb_key: str) -> Path:
    data = write_rows(tmp_path / f"rows-{wandb_key}.jsonl", ROWS[:24])  # a token in a data file's name
    sample = write_rows(tmp_path / f"sample-{hf_token}.jsonl", ROWS[24:])  # ... in an offline sample's
    mixture = {
        "name": "general",
        "stage": "sft",
        "schema": "conversations",
        "tokenizer": str(tokenizer),
        "validation": {"count": 2},
        "sources": [
            {"name": "local", "path": str(data), "converter": "alpaca"},
            {"name": "hub", "hub": f"org/set-{wandb_key}", "revision": hf_token,  # ... in a hub id and revision
             "offline_path": str(sample), "converter": "alpaca"},
        ],
    }  # fmt: skip
    return write_yaml(tmp_path / "mix.yaml", mixture)


def _assert_clean(text: str, hf_token: str, wandb_key: str, where: str) -> None:
    for secret in (hf_token, wandb_key):
        assert secret not in text, f"{secret[:6]}… in {where}"


def test_data_plan_and_prepare_keep_tokens_out_of_console_and_files(
    tmp_path: Path, tiny_tokenizer_dir: Path, tokens: tuple[str, str], capsys
) -> None:
    hf_token, wandb_key = tokens
    tokenizer = Path(
        shutil.copytree(tiny_tokenizer_dir, tmp_path / f"tok-{hf_token}")
    )  # ... in a folder name
    config = _mixture(tmp_path, tokenizer, hf_token, wandb_key)
    out = tmp_path / "out"

    assert main(["data", "plan", "--config", str(config), "--offline"]) == 0
    plan = capsys.readouterr()
    assert main(["data", "prepare", "--config", str(config), "--output-dir", str(out), "--offline"]) == 0
    prepare = capsys.readouterr()

    for name, printed in (("plan", plan), ("prepare", prepare)):
        _assert_clean(printed.out + printed.err, hf_token, wandb_key, f"the output of data {name}")
        # Redacted where the path is shown, not dropped: the source lines still name their file.
        assert f"file {tmp_path}/rows-***.jsonl" in printed.out
        assert f"OFFLINE SAMPLE {tmp_path}/sample-***.jsonl (instead of hub org/set-***)" in printed.out
    assert f"wrote {out}/sft_general_train.jsonl" in prepare.out

    written = sorted(p for p in out.rglob("*") if p.is_file())
    assert [p.name for p in written] == [
        "sft_general_manifest.json", "sft_general_train.jsonl", "sft_general_val.jsonl"
    ]  # fmt: skip
    for path in written:
        for secret in (hf_token, wandb_key):
            assert secret.encode() not in path.read_bytes(), f"{secret[:6]}… found in {path}"
    manifest = (out / "sft_general_manifest.json").read_text(encoding="utf-8")
    assert '"revision": "***"' in manifest and f'"tokenizer": "{tmp_path}/tok-***"' in manifest
    assert f'"path": "{tmp_path}/rows-***.jsonl"' in manifest

    # The manifest is what reuse reads back: the redacted copy still matches its fingerprint.
    args = [
        "data",
        "prepare",
        "--config",
        str(config),
        "--output-dir",
        str(out),
        "--offline",
        "--use-prepared",
    ]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith(f"reused {out}/sft_general_train.jsonl (")


def test_an_error_line_naming_a_token_is_redacted_by_both_entry_points(
    tmp_path: Path, tiny_tokenizer_dir: Path, tokens: tuple[str, str], capsys
) -> None:
    hf_token, wandb_key = tokens
    config = _mixture(tmp_path, tiny_tokenizer_dir, hf_token, wandb_key)
    (tmp_path / f"rows-{wandb_key}.jsonl").unlink()
    for entry, argv in ((main, ["data", "prepare"]), (data_main, ["prepare"])):
        code = entry([*argv, "--config", str(config), "--output-dir", str(tmp_path / "out"), "--offline"])
        printed = capsys.readouterr()
        assert code == 2 and printed.out == ""
        assert printed.err == f"error: source 'local': {tmp_path}/rows-***.jsonl: file or folder not found\n"
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_the_console_is_redacted_only_while_a_command_runs(tokens: tuple[str, str], capsys) -> None:
    hf_token, wandb_key = tokens
    before = sys.stdout, sys.stderr
    with redacted_console():
        assert isinstance(sys.stdout, RedactingStream) and isinstance(sys.stderr, RedactingStream)
        with redacted_console():  # nested (a command calling another): wrapped once
            assert not isinstance(sys.stdout.stream, RedactingStream)
        print(f"revision {hf_token}")
        sys.stderr.writelines([f"key={wandb_key}\n", "plain\n"])
        assert sys.stdout.write(hf_token) == len(hf_token)  # reports what it was given, as a stream does
    assert (sys.stdout, sys.stderr) == before
    printed = capsys.readouterr()
    assert printed.out == "revision ***\n***" and printed.err == "key=***\nplain\n"
