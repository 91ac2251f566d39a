"""``minigpt export --format hf``: a stage folder (with its checkpoints, prepared data, logs and summary)
becomes a folder holding exactly what an upload should take, which plain transformers loads without remote
code to the same logits; an unmerged LoRA adapter names a base others can download (a cached hub snapshot by
its hub id and commit) or is refused; the output is new or empty and appears in one rename."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from support import SMALL, addition_conversations, synthetic_sentences, write_jsonl
from transformers import AutoModelForCausalLM, AutoTokenizer

from minigpt.cli import main
from minigpt.errors import ModelError
from minigpt.export.command import export_checkpoint
from minigpt.runner import run_stage
from minigpt.stages.stage_config import StageConfig

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
BATCH = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 64]])
MODEL_FILES = [
    "README.md",
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
]


def _cfg(out: Path, stage: str, init: str, tokenizer: str | None, train: Path, **extra) -> StageConfig:
    return StageConfig.model_validate(
        {
            "stage": stage,
            "output_dir": str(out),
            "model": {
                "init": init,
                "tokenizer": tokenizer,
                **({"overrides": SMALL} if init == "tiny" else {}),
            },
            "data": {"train": [str(train)], "val_fraction": 0.1, "max_length": 64},
            # save_interval: the folder keeps its checkpoints, which the export must leave behind
            "train": {"max_steps": 4, "batch_size": 8, "log_interval": 1, "save_interval": 2},
            **extra,
        }
    )


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=BATCH).logits


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_tokenizer_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trained")
    text = write_jsonl(root / "text.jsonl", [{"text": t} for t in synthetic_sentences(200, seed=1)])
    conv = write_jsonl(root / "conv.jsonl", addition_conversations(100, seed=2))
    run_stage(_cfg(root / "pre", "pretrain", "tiny", str(tiny_tokenizer_dir), text), console=False)
    return {"root": root, "pre": root / "pre", "conv": conv}


def test_the_export_holds_exactly_the_publishable_files_and_loads(trained, tmp_path):
    pre = trained["pre"]
    assert {"checkpoints", "metrics.jsonl", "stage.json", "config.yaml"} <= {p.name for p in pre.iterdir()}
    out = export_checkpoint(pre, "hf", tmp_path / "upload")
    assert out == tmp_path / "upload"
    assert sorted(p.name for p in out.iterdir()) == MODEL_FILES
    assert (out / "README.md").read_bytes() == (pre / "README.md").read_bytes()
    for name in MODEL_FILES:
        assert (out / name).read_bytes() == (pre / name).read_bytes(), name
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(out, trust_remote_code=False)
    assert tokenizer.chat_template and len(tokenizer) == len(AutoTokenizer.from_pretrained(pre))
    torch.testing.assert_close(
        logits(model), logits(AutoModelForCausalLM.from_pretrained(pre)), atol=0, rtol=0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upload"]  # no staging folder left beside it


def test_the_output_must_be_new_or_empty(trained, tmp_path):
    pre = trained["pre"]
    (tmp_path / "empty").mkdir()
    assert sorted(p.name for p in export_checkpoint(pre, "hf", tmp_path / "empty").iterdir()) == MODEL_FILES
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="already exists and is not an empty folder"):
        export_checkpoint(pre, "hf", full)
    assert sorted(p.name for p in full.iterdir()) == ["notes.txt"]
    with pytest.raises(ModelError, match="outside the stage folder"):
        export_checkpoint(pre, "hf", pre / "upload")
    with pytest.raises(ModelError, match="copies the weights as saved"):
        export_checkpoint(pre, "hf", tmp_path / "x", dtype="f16")
    with pytest.raises(ModelError, match="no such stage folder"):
        export_checkpoint(tmp_path / "missing", "hf", tmp_path / "y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "full"]


def test_cli_writes_beside_the_stage_folder_and_builds_a_missing_card(trained, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(trained["pre"], old)
    (old / "README.md").unlink()  # a stage trained before cards were written
    assert main(["export", str(old), "--format", "hf"]) == 0
    assert f"written: {tmp_path / 'old-hf'}" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "old-hf").iterdir()) == MODEL_FILES
    assert "library_name: transformers" in (tmp_path / "old-hf" / "README.md").read_text()
    assert main(["export", str(old), "--format", "hf"]) == 2  # it exists now
    assert "not an empty folder" in capsys.readouterr().err


def test_a_folder_with_its_own_code_needs_trust(trained, tmp_path):
    folder = tmp_path / "coded"
    shutil.copytree(trained["pre"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_x.py").write_text("# the folder's own model code\n")
    with pytest.raises(ModelError, match="auto_map"):
        export_checkpoint(folder, "hf", tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    out = export_checkpoint(folder, "hf", tmp_path / "trusted", trust_remote_code=True)
    assert sorted(p.name for p in out.iterdir()) == sorted([*MODEL_FILES, "modeling_x.py"])


def _hub_snapshot(trained, root: Path) -> tuple[Path, Path]:
    """(cache folder, snapshot) holding the pretrain stage's model as huggingface_hub caches org/base."""
    cache = root / "hub"
    snapshot = cache / "models--org--base" / "snapshots" / COMMIT
    shutil.copytree(
        trained["pre"], snapshot, ignore=shutil.ignore_patterns("checkpoints", "*.jsonl", "*.txt")
    )
    for name in ("stage.json", "config.yaml", "README.md"):
        (snapshot / name).unlink()
    return cache, snapshot


def test_an_adapter_on_a_hub_snapshot_is_exported_naming_its_hub_base(trained, tmp_path):
    from peft import AutoPeftModelForCausalLM, PeftModel

    cache, snapshot = _hub_snapshot(trained, tmp_path)
    cfg = _cfg(tmp_path / "sft", "sft", str(snapshot), None, trained["conv"], lora={"r": 4, "merge": False})
    run_stage(cfg, console=False)
    folder = tmp_path / "sft"
    local = json.loads((folder / "adapter_config.json").read_text())
    assert local["base_model_name_or_path"] == str(
        snapshot.resolve()
    )  # loadable here, as the runner loads it
    meta = yaml.safe_load((folder / "README.md").read_text().split("---\n")[1])
    assert meta["library_name"] == "peft"
    assert (meta["base_model"], meta["base_model_relation"]) == ("org/base", "adapter")

    out = export_checkpoint(folder, "hf", tmp_path / "upload")
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors",
        "chat_template.jinja", "tokenizer.json", "tokenizer_config.json",
    ]  # fmt: skip
    published = json.loads((out / "adapter_config.json").read_text())
    assert (published["base_model_name_or_path"], published["revision"]) == ("org/base", COMMIT)
    assert {k: v for k, v in published.items() if k not in ("base_model_name_or_path", "revision")} == {
        k: v for k, v in local.items() if k not in ("base_model_name_or_path", "revision")
    }
    # Resolved as anyone else would: the base by hub id and commit (here from the offline cache).
    loaded = AutoPeftModelForCausalLM.from_pretrained(out, cache_dir=str(cache))
    here = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(snapshot), str(folder))
    torch.testing.assert_close(logits(loaded), logits(here), atol=0, rtol=0)


def test_an_adapter_on_a_local_stage_folder_is_refused(trained, tmp_path):
    cfg = _cfg(
        tmp_path / "sft", "sft", str(trained["pre"]), None, trained["conv"], lora={"r": 4, "merge": False}
    )
    run_stage(cfg, console=False)
    meta = yaml.safe_load((tmp_path / "sft" / "README.md").read_text().split("---\n")[1])
    assert "base_model" not in meta  # no hub id to name
    assert (
        "is the local folder `pre`, which is not on the hub" in (tmp_path / "sft" / "README.md").read_text()
    )
    with pytest.raises(ModelError, match="local folder .*pre, which is not on the hub"):
        export_checkpoint(tmp_path / "sft", "hf", tmp_path / "upload")
    assert not (tmp_path / "upload").exists()


def test_a_hub_id_base_records_its_revision(trained, tmp_path):
    from peft import get_peft_model

    from minigpt.lora import export_lora, peft_config

    cfg = _cfg(tmp_path / "sft", "sft", "org/base", None, trained["conv"], lora={"r": 4, "merge": False})
    cfg.model.revision = "v2"
    model = AutoModelForCausalLM.from_pretrained(trained["pre"])
    export_lora(get_peft_model(model, peft_config(cfg.lora, model)), cfg)
    saved = json.loads((tmp_path / "sft" / "adapter" / "adapter_config.json").read_text())
    assert (saved["base_model_name_or_path"], saved["revision"]) == ("org/base", "v2")  # peft loads that
