import json
import math
import sys
import types

import pytest

from minigpt.cli import main
from minigpt.metrics import RunLog, Throughput, flops_per_token, mfu_percent, peak_flops, rename
from minigpt.secrets import redact


def test_rename_maps_trainer_keys_to_design_names():
    out = rename(
        {
            "loss": 1.0,
            "learning_rate": 0.1,
            "grad_norm": 2.0,
            "eval_loss": 3.0,
            "rewards/chosen": 0.5,
            "eval_rewards/accuracies": 0.7,
            "train_runtime": 9.0,
        },
        extra={"eval_rewards/accuracies": "eval/preference_accuracy"},
    )
    assert out == {
        "train/loss": 1.0,
        "train/learning_rate": 0.1,
        "train/grad_norm": 2.0,
        "eval/loss": 3.0,
        "rewards/chosen": 0.5,
        "eval/preference_accuracy": 0.7,
        "summary/runtime_seconds": 9.0,
    }


def test_mfu_formula_and_peak_table():
    # 26M-shaped model: N=25.8M, L=8, d=512, T=512 → 6N + 12·L·d·T
    fpt = flops_per_token(25_830_000, 8, 512, 512)
    assert fpt == 6 * 25_830_000 + 12 * 8 * 512 * 512
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and peak_flops("NVIDIA A100-SXM4-40GB") == 312e12
    assert peak_flops("some cpu") is None
    assert math.isclose(mfu_percent(1.5e6, fpt, 989e12, 1), 100 * 1.5e6 * fpt / 989e12)
    assert math.isclose(mfu_percent(1.5e6, fpt, 989e12, 2), mfu_percent(1.5e6, fpt, 989e12, 1) / 2)


def test_throughput_window_and_eta():
    t = Throughput()
    t.add(1000, 10)
    w = t.window(step=10, max_steps=20)
    assert w["train/tokens_per_second"] > 0 and w["train/eta_minutes"] >= 0
    t.add(500, 5)
    w2 = t.window(step=20, max_steps=20)
    assert w2["train/eta_minutes"] == 0.0 and w2["train/tokens_per_second"] > 0


def test_throughput_window_leaves_out_pauses_and_keeps_its_counts(monkeypatch):
    """An evaluation or a save between two logs is left out of the window's time, while the window still
    counts every step, token and sample since the previous log (restarting the clock alone divided the whole
    window's tokens by part of its time: 6e7 tokens/s and 0 steps/s when an evaluation came just before a log)."""
    clock = [100.0]
    monkeypatch.setattr("minigpt.metrics.time.perf_counter", lambda: clock[0])
    t = Throughput()
    clock[0] += 30.0  # building the trainer and tokenizing: not in any window
    t.start(step=500)  # a resumed run: the steps before 500 were taken by an earlier process
    t.add(1000, 10)
    clock[0] += 2.0
    t.mark()  # end of step 510
    clock[0] += 5.0  # the task evaluation at step 510
    assert t.exclude_since_mark() == pytest.approx(5.0)
    w = t.window(step=510, max_steps=600)
    assert w["train/steps_per_second"] == pytest.approx(10 / 2.0)
    assert w["train/tokens_per_second"] == pytest.approx(1000 / 2.0)
    assert w["train/samples_per_second"] == pytest.approx(10 / 2.0)
    assert w["train/eta_minutes"] == pytest.approx(90 * 0.2 / 60)
    clock[0] += 4.0  # a checkpoint written right after the log: the pause starts at the log, not the mark
    assert t.exclude_since_mark() == pytest.approx(4.0)
    t.add(300, 3)
    clock[0] += 1.0
    w = t.window(step=513, max_steps=600)
    assert w["train/tokens_per_second"] == pytest.approx(300.0)
    assert w["train/steps_per_second"] == pytest.approx(3.0)
    assert t.window(step=513, max_steps=600) == {}  # no step in the window: no rate at all


def test_report_to_backend_gets_exact_names_and_custom_metrics(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(("init", kw))
    fake.log = lambda metrics, step: calls.append(("log", dict(metrics), step))
    fake.finish = lambda: calls.append(("finish",))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-value-123")
    log = RunLog(
        tmp_path,
        "sft",
        report_to=["wandb"],
        console=False,
        config={"wandb_api_key": "wandb-secret-value-123", "train": {"lr": 1e-3}},
    )
    log.log({"train/loss": 1.5, "train/mean_token_accuracy": 0.25, "note": "text"}, step=3)
    log.note("key is wandb-secret-value-123")
    log.close()
    init = calls[0][1]
    assert init["config"]["wandb_api_key"] == "***"  # secrets never reach a backend
    assert ("log", {"train/loss": 1.5, "train/mean_token_accuracy": 0.25}, 3) in calls
    assert calls[-1] == ("finish",)
    text = next(tmp_path.glob("sft_training_logs_*.txt")).read_text()
    assert "wandb-secret-value-123" not in text and "***" in text
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert record["step"] == 3 and record["train/loss"] == 1.5


def test_unknown_backend_is_a_config_error(tmp_path):
    from minigpt.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown backend 'wandbb'"):
        RunLog(tmp_path, "sft", report_to=["wandbb"], console=False)


def test_redact_keeps_non_secret_token_fields():
    assert redact({"max_tokens": 5, "hf_token": "abc", "nested": {"api_key": "k"}}) == {
        "max_tokens": 5,
        "hf_token": "***",
        "nested": {"api_key": "***"},
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["train", "--help"],
        ["run", "--help"],
        ["data", "--help"],
        ["eval", "--help"],
        ["play", "--help"],
        ["tokenizer", "train", "--help"],
    ],
)
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage: minigpt" in capsys.readouterr().out


def test_user_error_exits_2_with_one_clear_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "stage: sft\noutput_dir: x\nmodel: {init: tiny, tokenizer: t}\ndata: {train: [a.jsonl]}\n"
        "train: {lerning_rate: 0.1}\n"
    )
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "c.yaml:5" in err and "Traceback" not in err


def test_list_shows_stages_and_presets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "sft" in out and "minimind-26m" in out
