"""Remote code: every ``from_pretrained`` in the package takes ``trust_remote_code`` from one helper
(``minigpt.models.loading.remote_code``), so a folder shipping its own Python code (``auto_map``) is refused,
never asked about, by every loader: chat, eval/play, training, mixtures. ``--trust-remote-code`` allows it."""

from __future__ import annotations

import ast
import builtins
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import transformers

import minigpt
from minigpt.chat import load_chat_model
from minigpt.cli import build_parser, main
from minigpt.data.tokens import load_tokenizer as load_mixture_tokenizer
from minigpt.errors import ModelError
from minigpt.models.loading import build_model, load_tokenizer
from minigpt.models.model_config import ModelConfig
from minigpt.tasks.tictactoe.player import load_player

from .helpers import SMALL

PACKAGE = Path(minigpt.__file__).resolve().parent
# peft runs no code from a folder (adapter_config.json names library classes only); the base model it wraps
# is loaded by a checked call (minigpt/lora.py::load_adapter_folder).
EXEMPT_RECEIVERS = {"PeftModel"}
CLI = "pass --trust-remote-code (trust_remote_code=True from Python) if you trust this folder"
STAGE = "set model.trust_remote_code: true in the stage config if you trust this folder"
CODE = 'from pathlib import Path\nPath({marker!r}).write_text("ran")\n'


def _refusal(folder: Path, allow: str, name: str = "config.json") -> str:
    return (
        f"{folder}: {name} has an auto_map (AutoConfig, AutoModelForCausalLM): the folder ships Python code "
        f"that loading it would run; miniGPT does not run it unless you allow it: {allow}"
    )


def _from_pretrained_calls() -> list[tuple[str, int, ast.Call]]:
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        for node in ast.walk(tree):
            where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', 0)}"
            # A loader reached any other way (an alias, getattr) would escape the scan below: refuse those.
            if isinstance(node, ast.Attribute) and node.attr == "from_pretrained":
                assert id(node) in called, f"{where}: from_pretrained referenced without being called"
            if isinstance(node, ast.Constant) and node.value == "from_pretrained":
                raise AssertionError(f"{where}: from_pretrained named in a string (getattr?)")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained":
                calls.append((where.split(":")[0], node.lineno, node))
    return calls


def test_every_from_pretrained_takes_trust_remote_code_from_the_helper() -> None:
    calls = _from_pretrained_calls()
    files = {f for f, _, _ in calls}
    # The loaders that exist today; a new one is held to the same rule by the loop below.
    assert {
        "minigpt/models/loading.py", "minigpt/tasks/tictactoe/player.py",
        "minigpt/stages/rl/ppo.py", "minigpt/lora.py", "minigpt/data/tokens.py", "minigpt/perf/synth.py",
    } <= files, files  # fmt: skip
    unchecked = []
    for file, line, call in calls:
        receiver = call.func.value
        if isinstance(receiver, ast.Name) and receiver.id in EXEMPT_RECEIVERS:
            continue
        value = next((k.value for k in call.keywords if k.arg == "trust_remote_code"), None)
        helper = isinstance(value, ast.Call) and getattr(value.func, "id", None) == "remote_code"
        if not helper:
            unchecked.append(f"{file}:{line}")
    assert unchecked == [], "from_pretrained without trust_remote_code=remote_code(...): " + ", ".join(
        unchecked
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer_dir: Path) -> Path:
    """A tiny saved model + tokenizer with the chat template: loadable by chat, eval and training."""
    tok = transformers.AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    model = build_model(ModelConfig(init="tiny", overrides=SMALL), tok, torch.device("cpu"))
    folder = tmp_path_factory.mktemp("plain")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _with_custom_code(model_dir: Path, dest: Path, model_type: str | None = None) -> Path:
    """``model_dir`` copied with an auto_map naming code files that leave a marker if they are ever run."""
    folder = Path(shutil.copytree(model_dir, dest))
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_custom.CustomConfig",
        "AutoModelForCausalLM": "modeling_custom.CustomModel",
    }
    if model_type is not None:
        config["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(config))
    for module in ("configuration_custom", "modeling_custom"):
        (folder / f"{module}.py").write_text(CODE.format(marker=str(dest.parent / "ran.txt")))
    return folder


@pytest.fixture(params=["known", "unknown"])
def custom_dir(request, model_dir: Path, tmp_path: Path, monkeypatch) -> Iterator[Path]:
    """With the model's own type transformers would quietly swap in its class; with a type it does not know,
    it would ask on the terminal (trust_remote_code=None) whether to run the folder's code."""
    asked: list[str] = []

    def no_prompt(prompt: str = "") -> str:
        asked.append(prompt)
        raise EOFError  # a test has no terminal; the assertion below is what reports it

    monkeypatch.setattr(builtins, "input", no_prompt)
    folder = _with_custom_code(
        model_dir, tmp_path / "custom", None if request.param == "known" else "shipped"
    )
    yield folder
    assert asked == [], "the user was asked whether to run the folder's code"
    assert not (tmp_path / "ran.txt").exists(), "the folder's code ran"


def test_chat_loader_refuses_a_folder_with_custom_code(custom_dir: Path) -> None:
    with pytest.raises(ModelError) as caught:
        load_chat_model(custom_dir, device="cpu")
    assert str(caught.value) == _refusal(custom_dir, CLI)


def test_load_player_refuses_a_folder_with_custom_code(custom_dir: Path) -> None:
    with pytest.raises(ModelError) as caught:
        load_player(custom_dir, device="cpu")
    assert str(caught.value) == _refusal(custom_dir, CLI)


# Every command that loads a model folder, with the options it needs besides the folder.
LOADERS = {"eval": [], "chat": [], "play": [], "serve": [], "export": ["--format", "gguf"]}


@pytest.mark.parametrize("command", list(LOADERS))
def test_the_cli_refuses_it_in_one_error_line(command: str, custom_dir: Path, capsys) -> None:
    assert main([command, str(custom_dir), *LOADERS[command]]) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err == f"error: {_refusal(custom_dir, CLI)}\n"
    assert not (custom_dir / "task_eval.json").exists()


def test_training_and_mixture_loaders_refuse_it_too(custom_dir: Path, model_dir: Path) -> None:
    with pytest.raises(ModelError) as caught:
        load_tokenizer(str(custom_dir))
    assert str(caught.value) == _refusal(custom_dir, STAGE)
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    with pytest.raises(ModelError) as caught:
        build_model(ModelConfig(init=str(custom_dir)), tok, torch.device("cpu"))
    assert str(caught.value) == _refusal(custom_dir, STAGE)
    with pytest.raises(ModelError) as caught:
        load_mixture_tokenizer(custom_dir)
    assert str(caught.value) == _refusal(
        custom_dir, "set trust_remote_code: true in the mixture config if you trust this folder"
    )


def test_an_auto_map_in_the_tokenizer_config_is_refused(model_dir: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(model_dir, tmp_path / "tok"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["tokenization_custom.Slow", "tokenization_custom.Fast"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError) as caught:
        load_player(folder, device="cpu")
    assert str(caught.value) == _refusal(folder, CLI, "tokenizer_config.json").replace(
        "AutoConfig, AutoModelForCausalLM", "AutoTokenizer"
    )


@pytest.mark.parametrize("trust", [False, True])
def test_the_flag_reaches_every_load(trust: bool, model_dir: Path, monkeypatch) -> None:
    seen: list[tuple[str, object]] = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, **kwargs):
            seen.append((klass.__name__, kwargs.get("trust_remote_code")))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    load_chat_model(model_dir, device="cpu", trust_remote_code=trust)
    load_player(model_dir, device="cpu", trust_remote_code=trust)
    assert seen == [("AutoTokenizer", trust), ("AutoModelForCausalLM", trust)] * 2
    parser = build_parser()
    for command, extra in LOADERS.items():
        assert parser.parse_args([command, "x", *extra]).trust_remote_code is False
        assert parser.parse_args([command, "x", *extra, "--trust-remote-code"]).trust_remote_code is True
