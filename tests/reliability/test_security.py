"""Security: no remote code unless a config asks for it, safetensors-only weights, ``torch.load`` only with
``weights_only=True``, safe YAML, user code imported only when a config names it, and secrets (HF_TOKEN,
WANDB_API_KEY) kept out of every file a run writes and of what it prints."""

from __future__ import annotations

import ast
import re
import secrets
from pathlib import Path

import pytest
import torch
import transformers
import yaml

import minigpt
from minigpt.cli import main
from minigpt.data.mixture_config import load_mixture
from minigpt.errors import ConfigError, ModelError
from minigpt.models.loading import build_model, check_model_folder, load_tokenizer
from minigpt.models.model_config import ModelConfig
from minigpt.registry import load_plugins
from minigpt.stages.stage_config import StageConfig, load_stage_config
from minigpt.typed_config import parse_override, read_yaml

from .helpers import SMALL, stage_dict, write_rows, write_yaml

PACKAGE = Path(minigpt.__file__).resolve().parent
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _calls(predicate) -> list[tuple[str, int, ast.Call]]:
    """(file, line, call) for every call in the package source that ``predicate(call)`` selects."""
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and predicate(node):
                found.append((str(path.relative_to(PACKAGE.parent)), node.lineno, node))
    return found


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _attr_call(call: ast.Call, attr: str) -> bool:
    return isinstance(call.func, ast.Attribute) and call.func.attr == attr


# ---------------------------------------------------------------- remote code and weights


def test_trust_remote_code_is_off_unless_a_config_says_so(tmp_path: Path) -> None:
    assert ModelConfig(init="tiny").trust_remote_code is False
    cfg = StageConfig.model_validate({"stage": "sft", "output_dir": "o", "model": {"init": "x"},
                                      "data": {"train": ["t.jsonl"]}})  # fmt: skip
    assert cfg.model.trust_remote_code is False
    # Nowhere in the package is it switched on by a literal: only a config value is ever passed through.
    literal = _calls(lambda c: _is_true(_keyword(c, "trust_remote_code")))
    assert literal == [], literal


@pytest.fixture()
def model_folder(tmp_path: Path, tiny_tokenizer_dir: Path) -> Path:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    model = build_model(ModelConfig(init="tiny", overrides=SMALL), tok, torch.device("cpu"))
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("trust", [False, True])
def test_build_model_passes_the_config_through_and_asks_for_safetensors(
    trust: bool, model_folder: Path, monkeypatch
) -> None:
    seen: list[dict] = []
    original = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    tok = load_tokenizer(str(model_folder))
    build_model(ModelConfig(init=str(model_folder), trust_remote_code=trust), tok, torch.device("cpu"))
    assert seen[-1]["trust_remote_code"] is trust and seen[-1]["use_safetensors"] is True


def test_a_folder_with_only_pickle_weights_is_refused(model_folder: Path) -> None:
    (model_folder / "model.safetensors").unlink()
    (model_folder / "pytorch_model.bin").write_bytes(b"a pickle would run code here")
    with pytest.raises(ModelError, match="only pickle weights .* safetensors only"):
        check_model_folder(model_folder)
    tok = load_tokenizer(str(model_folder))
    with pytest.raises(ModelError, match="safetensors only"):
        build_model(ModelConfig(init=str(model_folder)), tok, torch.device("cpu"))


def test_every_model_load_in_the_package_asks_for_safetensors() -> None:
    loads = _calls(
        lambda c: (
            _attr_call(c, "from_pretrained")
            and isinstance(c.func.value, ast.Name)
            and c.func.value.id.startswith("AutoModel")
        )
    )
    assert loads, "the scan found no model loads at all"
    missing = [f"{f}:{line}" for f, line, call in loads if not _is_true(_keyword(call, "use_safetensors"))]
    assert missing == []


def test_every_torch_load_uses_weights_only() -> None:
    loads = _calls(
        lambda c: (
            (_attr_call(c, "load") and isinstance(c.func.value, ast.Name) and c.func.value.id == "torch")
            or (isinstance(c.func, ast.Name) and c.func.id == "load")
        )  # `from torch import load`
    )
    unsafe = [f"{f}:{line}" for f, line, call in loads if not _is_true(_keyword(call, "weights_only"))]
    assert unsafe == []
    # The same by plain text, so a call the AST scan misses (e.g. aliased) is still seen.
    for path in SOURCES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\btorch\.load\(", line):
                assert "weights_only=True" in line, f"{path}:{number}: {line.strip()}"
            assert not re.search(r"\bpickle\.loads?\(", line), f"{path}:{number}: {line.strip()}"


# ---------------------------------------------------------------- YAML


def test_yaml_never_constructs_python_objects(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for tag in ("!!python/object/apply:os.system ['touch pwned']", "!!python/object:builtins.dict {}",
                "!!python/name:os.system"):  # fmt: skip
        path = tmp_path / "c.yaml"
        path.write_text(f"stage: {tag}\n")
        with pytest.raises(ConfigError, match="could not determine a constructor"):
            read_yaml(path)
    # An override is YAML too: a tag is kept as the plain string it is, never run.
    _, value = parse_override("stage=!!python/object/apply:os.system ['touch pwned']")
    assert isinstance(value, str)
    assert not (tmp_path / "pwned").exists()
    # Every yaml.load in the package names a safe loader (yaml.SafeLoader or a subclass of it).
    loads = _calls(
        lambda c: _attr_call(c, "load") and isinstance(c.func.value, ast.Name) and c.func.value.id == "yaml"
    )
    for file, line, call in loads:
        loader = _keyword(call, "Loader")
        name = getattr(loader, "id", None) or getattr(loader, "attr", None)
        assert name in ("SafeLoader", "CSafeLoader", "_LineLoader"), f"{file}:{line}"
    assert _calls(lambda c: _attr_call(c, "unsafe_load") or _attr_call(c, "full_load")) == []
    from minigpt import typed_config as config

    assert issubclass(config._LineLoader, yaml.SafeLoader) and issubclass(config.SafeLoader, yaml.SafeLoader)


# ---------------------------------------------------------------- user code only when named


PROBE = """
from pathlib import Path
Path({marker!r}).write_text("imported")

def convert(row, **kwargs):
    return {{"text": str(row.get("body", "x"))}}

def score(completions, **kwargs):
    return [0.0 for _ in completions]
"""


def test_user_modules_are_imported_only_when_a_config_names_them(tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "imported.txt"
    module = f"reliability_probe_{secrets.token_hex(4)}"  # a name nothing else could import
    (tmp_path / f"{module}.py").write_text(PROBE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    data = write_rows(tmp_path / "rows.jsonl", [{"body": "hello"}])

    load_plugins()  # every built-in registry entry
    mixture = {"name": "m", "stage": "pretrain", "schema": "text",
               "sources": [{"name": "a", "path": str(data), "converter": "text"}]}  # fmt: skip
    load_mixture(mixture)
    grpo = {"stage": "grpo", "output_dir": "o", "model": {"init": "tiny"}, "data": {"train": [str(data)]},
            "algo": {"rewards": ["format"]}}  # fmt: skip
    load_stage_config(write_yaml(tmp_path / "grpo.yaml", grpo))
    assert not marker.exists(), "a module no config names was imported"

    mixture["sources"][0]["converter"] = f"{module}:convert"
    load_mixture(mixture)
    assert marker.read_text() == "imported"
    marker.unlink()
    monkeypatch.delitem(__import__("sys").modules, module)
    grpo["algo"] = {"rewards": [f"{module}:score"]}
    load_stage_config(write_yaml(tmp_path / "grpo.yaml", grpo))
    assert marker.exists()


# ---------------------------------------------------------------- secrets


def test_tokens_never_reach_logs_configs_metrics_reports_or_the_console(
    tmp_path: Path, tiny_tokenizer_dir: Path, lm_data: dict[str, Path], monkeypatch, capsys
) -> None:
    hf_token = "hf_" + secrets.token_hex(17)
    wandb_key = secrets.token_hex(20)
    monkeypatch.setenv("HF_TOKEN", hf_token)
    monkeypatch.setenv("WANDB_API_KEY", wandb_key)
    # The secrets sit in innocuous places: a data file's name (printed in the log and saved in config.yaml)
    # and the model revision (saved in config.yaml; unused for a preset).
    data = tmp_path / f"rows-{wandb_key}.jsonl"
    data.write_bytes(lm_data["conv"].read_bytes())
    run = tmp_path / "run"
    out = run / "sft"
    cfg = stage_dict(out, tiny_tokenizer_dir, data, max_steps=2, save_interval=1)
    cfg["model"]["revision"] = hf_token
    assert main(["train", "--config", str(write_yaml(tmp_path / "stage.yaml", cfg))]) == 0
    assert main(["report", str(run)]) == 0
    # An error message that would quote a secret is redacted too.
    cfg["data"]["train"] = [str(tmp_path / f"missing-{hf_token}.jsonl")]
    cfg["output_dir"] = str(tmp_path / "other")
    assert main(["train", "--config", str(write_yaml(tmp_path / "bad.yaml", cfg))]) == 2
    printed = capsys.readouterr()

    written = [p for p in run.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"config.yaml", "metrics.jsonl", "stage.json", "report.md"} <= names
    assert any(n.startswith("sft_training_logs_") for n in names) and "trainer_state.json" in names
    for secret in (hf_token, wandb_key):
        for path in written:  # every file, binary ones (checkpoints, training_args.bin) included
            assert secret.encode() not in path.read_bytes(), f"{secret[:6]}… found in {path}"
        assert secret not in printed.out and secret not in printed.err
    assert "***" in (out / "config.yaml").read_text()  # redacted, not dropped
    assert "error: " in printed.err and "***" in printed.err
