"""The ``minigpt serve`` command: its options, one-line errors, the remote-code refusal, a real run as a
subprocess, and that the other commands never import the web stack."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import transformers
from serve_support import SCRIPTED_ANSWER

from minigpt.cli import build_parser, main
from minigpt.serving.serve_command import build_app

ROOT = Path(__file__).resolve().parents[2]


def test_options_and_their_defaults():
    args = build_parser().parse_args(["serve", "runs/x/sft"])
    assert (args.host, args.port, args.queue_limit, args.max_tokens) == ("127.0.0.1", 8000, 8, 256)
    assert (args.temperature, args.top_p, args.model_name, args.trust_remote_code) == (0.7, 0.9, None, False)
    args = build_parser().parse_args(
        ["serve", "ckpt", "--port", "0", "--queue-limit", "0", "--model-name", "m", "--trust-remote-code"]
    )
    assert (args.port, args.queue_limit, args.model_name, args.trust_remote_code) == (0, 0, "m", True)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--top-p", "2"], "error: --top-p must be in (0, 1]\n"),
        (["--temperature", "-1"], "error: --temperature must be >= 0 (0 decodes greedily)\n"),
        (["--max-tokens", "0"], "error: --max-tokens must be at least 1\n"),
        (["--queue-limit", "-1"], "error: --queue-limit must be >= 0\n"),
        (["--port", "70000"], "error: --port 70000: must be in 0..65535\n"),
    ],
)
def test_bad_options_are_one_error_line(scripted_model_dir, capsys, extra, message):
    assert main(["serve", str(scripted_model_dir), *extra]) == 2
    assert capsys.readouterr().err == message


def test_a_missing_folder_is_one_error_line(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope'}: no such checkpoint folder\n"


def test_a_folder_shipping_code_is_refused_unless_trusted(scripted_model_dir, tmp_path, capsys, monkeypatch):
    folder = Path(shutil.copytree(scripted_model_dir, tmp_path / "custom"))
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["serve", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {folder}: config.json has an auto_map (AutoConfig)")
    assert "pass --trust-remote-code" in err
    # The flag reaches both loads: the chat model and (on the first move) the tic-tac-toe player.
    seen: list[tuple[str, object]] = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, **kwargs):
            seen.append((klass.__name__, kwargs.get("trust_remote_code")))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    app = build_app(scripted_model_dir, device="cpu", trust_remote_code=True)
    app.state.served.player_factory()
    assert seen == [("AutoTokenizer", True), ("AutoModelForCausalLM", True)] * 2


def test_building_the_cli_does_not_import_the_web_stack():
    code = (
        "import sys; from minigpt.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'openai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_the_command_serves_until_interrupted(scripted_model_dir):
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "minigpt", "serve", str(scripted_model_dir), "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--device", "cpu", "--model-name", "ttt", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                models = httpx.get(f"{url}/v1/models", timeout=2).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        assert [m["id"] for m in models["data"]] == ["ttt"]
        body = {"model": "ttt", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).json()
        assert reply["choices"][0]["message"]["content"] == SCRIPTED_ANSWER
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"serving 'ttt' on http://127.0.0.1:{port}/" in out
