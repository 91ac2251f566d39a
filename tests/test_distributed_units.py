"""Fast checks of the pieces that make several processes work (the launched runs are in test_distributed.py):
metric aggregation over processes, the global token count, data preparation with worker processes and its
read-only mode for non-main processes, checkpoint recognition for FSDP / DeepSpeed, and the shipped accelerate
configs read by accelerate's own launcher code (DeepSpeed itself need not be installed)."""

from __future__ import annotations

import json
import os
import types
from pathlib import Path

import pytest
from transformers import TrainerState

from minigpt.checkpoints import is_complete
from minigpt.data import prepare_dataset
from minigpt.data.parallel import map_chunks, worker_count
from minigpt.distributed import broadcast_from_main, combine_sums, merge_sums, sum_over_processes
from minigpt.errors import DataError
from minigpt.metrics import Throughput, mfu_percent
from minigpt.stages import trainer_hooks as trainer_module
from minigpt.stages import trainer_logging as logging_module
from minigpt.stages.stage import RunState
from minigpt.stages.trainer_hooks import MiniGPTTrainerMixin
from minigpt.stages.trainer_logging import MetricsCallback

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ metric aggregation


def test_throughput_sums_tokens_and_samples_over_processes_not_steps():
    seen = []

    def reduce(values):  # a second process that counted as much as this one
        seen.append(values)
        return [2 * v for v in values]

    t = Throughput()
    t.add(300, 3)
    window = t.window(step=4, max_steps=8, reduce=reduce)
    assert seen == [[300.0, 3.0]]  # the window's own counts, in one call
    elapsed = 4 / window["train/steps_per_second"]  # steps are not summed: every process takes them all
    assert window["train/tokens_per_second"] * elapsed == pytest.approx(600)
    assert window["train/samples_per_second"] * elapsed == pytest.approx(6)
    t.add(100, 1)
    assert t.window(step=8, max_steps=8, reduce=reduce)["train/eta_minutes"] == 0.0
    assert seen[-1] == [100.0, 1.0]  # counts since the previous window only


def test_mfu_of_the_summed_rate_over_all_devices_equals_one_device_mfu():
    per_device = 1.0e6
    one = mfu_percent(per_device, 1e8, 989e12, 1)
    assert mfu_percent(per_device * 4, 1e8, 989e12, 4) == pytest.approx(one)


def test_means_are_weighted_over_processes():
    # process 0: 3 correct of 4 tokens; process 1: 1 of 12; process 1 alone has eval numbers
    parts = [{"train/acc": (3.0, 4.0)}, {"train/acc": (1.0, 12.0), "eval/x": (2.0, 1.0)}]
    assert combine_sums(parts) == {"eval/x": (2.0, 1.0), "train/acc": (4.0, 16.0)}
    state = RunState(log=None)
    state.accumulate("train/acc", 0.75, 4)
    state.accumulate("eval/x", 5.0)
    merged = state.pop_means("train/", merge=lambda pairs: combine_sums([pairs, {"train/acc": (1.0, 12.0)}]))
    assert merged == {"train/acc": pytest.approx(4 / 16)}
    assert state.pop_means("eval/") == {"eval/x": 5.0}  # prefixes are popped separately
    assert state.pop_means("train/") == {}


def test_single_process_helpers_are_identities():
    assert sum_over_processes([1, 2.5]) == [1.0, 2.5]
    assert merge_sums({"a": (1.0, 2.0)}) == {"a": (1.0, 2.0)}
    assert broadcast_from_main({"x": 1}) == {"x": 1}


class _Log:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def log(self, metrics: dict, step: int) -> None:
        self.records.append(metrics)


def _fake_trainer(processes: int, local_tokens: int, seen: int) -> types.SimpleNamespace:
    fake = types.SimpleNamespace(
        accelerator=types.SimpleNamespace(num_processes=processes, device="cpu"),
        state=types.SimpleNamespace(num_input_tokens_seen=seen),
        _minigpt_local_tokens=local_tokens,
        minigpt_stage=types.SimpleNamespace(ctx=types.SimpleNamespace(cfg=None)),
    )
    fake.minigpt_sync_tokens = lambda: MiniGPTTrainerMixin.minigpt_sync_tokens(fake)
    return fake


def test_metrics_callback_reports_global_counts_with_two_processes(monkeypatch):
    """Two processes simulated by reducers that add an identical second process: the logged rates and the
    token count are the sums, accuracy the weighted mean, MFU divides the summed rate by peak × devices."""

    def doubled(values, device=None):
        return [2 * v for v in values]

    for module in (trainer_module, logging_module):  # token count (hooks) and the rates (logging)
        monkeypatch.setattr(module, "sum_over_processes", doubled)
    other = {"train/mean_token_accuracy": (0.0, 4.0)}  # the second process got 0 of 4 tokens right
    monkeypatch.setattr(logging_module, "merge_sums", lambda pairs: combine_sums([pairs, other]))
    log = _Log()
    state = RunState(log=log, flops_per_token=1e6, peak_flops=1e12, n_devices=2)
    state.throughput.add(640, 10)
    state.accumulate("train/mean_token_accuracy", 1.0, 4)
    fake = _fake_trainer(processes=2, local_tokens=640, seen=1000)
    fake.minigpt_stage.ctx.cfg = types.SimpleNamespace(train=types.SimpleNamespace(max_bad_steps=0))
    fake.minigpt_state = state
    callback = MetricsCallback(fake)
    trainer_state = TrainerState(global_step=4, max_steps=8)
    callback.on_log(None, trainer_state, None, logs={"loss": 2.0, "grad_norm": 1.0, "learning_rate": 1e-3})
    (metrics,) = log.records
    assert metrics["train/num_tokens"] == 1000 + 2 * 640
    assert fake.state.num_input_tokens_seen == 1000 + 2 * 640 and fake._minigpt_local_tokens == 0
    rate = metrics["train/tokens_per_second"]
    assert rate / metrics["train/samples_per_second"] == pytest.approx(64.0)
    assert metrics["train/mean_token_accuracy"] == pytest.approx(0.5)
    assert metrics["train/mfu_percent"] == pytest.approx(100 * rate * 1e6 / (1e12 * 2))


def test_token_count_sync_is_a_plain_add_in_one_process(monkeypatch):
    monkeypatch.setattr(trainer_module, "sum_over_processes", lambda *a, **k: pytest.fail("no collective"))
    fake = _fake_trainer(processes=1, local_tokens=7, seen=3)
    assert fake.minigpt_sync_tokens() == 10 and fake.minigpt_sync_tokens() == 10


# ------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize(
    ("files", "complete"),
    [
        (["model.safetensors", "trainer_state.json", "optimizer.pt"], True),  # one process, DDP
        (["model.safetensors", "trainer_state.json", "optimizer.bin"], True),  # FSDP, full state dict
        (["model.safetensors", "trainer_state.json", "global_step8/"], True),  # DeepSpeed ZeRO
        (["model.safetensors", "trainer_state.json", "global_step8"], False),  # a file, not ZeRO's folder
        (["model.safetensors", "optimizer.bin"], False),
    ],
)
def test_checkpoint_completeness_for_each_backend(tmp_path, files, complete):
    for name in files:
        if name.endswith("/"):
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_text("x")
    assert is_complete(tmp_path) is complete


# ------------------------------------------------------------------ data preparation


def test_map_chunks_uses_worker_processes_and_keeps_order():
    items = list(range(2500))  # three chunks of CHUNK_ROWS

    def task(chunk):
        return os.getpid(), [x * 2 for x in chunk]

    results = list(map_chunks(task, items, workers=2))
    assert [y for _, ys in results for y in ys] == [x * 2 for x in items]
    assert os.getpid() not in {pid for pid, _ in results}
    small = list(map_chunks(task, items[:10], workers=2))  # one chunk: no pool
    assert small == [(os.getpid(), [x * 2 for x in range(10)])]
    assert worker_count(3) == 3 and worker_count(None) >= 1


def _mixture(path: Path, num_proc: int | None) -> dict:
    return {
        "name": "text",
        "stage": "pretrain",
        "schema": "text",
        "on_error": "skip",
        "num_proc": num_proc,
        "validation": {"fraction": 0.1},
        "sources": [{"name": "t", "path": str(path)}],
    }


def test_prepare_with_worker_processes_writes_the_same_files(tmp_path):
    lines = [json.dumps({"text": f"row {i} says {'ab' * (i % 7)}"}) for i in range(2400)]
    lines[5] = "{torn"  # a bad row, skipped and counted
    lines[900] = lines[901]  # a duplicate, dropped
    source = tmp_path / "t.jsonl"
    source.write_text("\n".join(lines) + "\n")
    one = prepare_dataset(_mixture(source, 1), tmp_path / "one")
    two = prepare_dataset(_mixture(source, 2), tmp_path / "two")
    assert one.train_path.read_bytes() == two.train_path.read_bytes()
    assert one.val_path.read_bytes() == two.val_path.read_bytes()
    for key in ("fingerprint", "train", "val", "sources", "dropped"):
        assert one.manifest[key] == two.manifest[key], key
    assert one.manifest["dropped"] == {"error: malformed JSON": 1, "duplicate": 1}
    # num_proc is not part of the fingerprint: a set prepared with 2 processes is reused with 1
    again = prepare_dataset(_mixture(source, 1), tmp_path / "two", use_prepared=True)
    assert again.reused


def test_reuse_only_never_writes(tmp_path):
    source = tmp_path / "t.jsonl"
    source.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(50)))
    out = tmp_path / "out"
    with pytest.raises(DataError, match="no prepared data"):
        prepare_dataset(_mixture(source, 1), out, reuse_only=True)
    assert not out.exists()
    prepare_dataset(_mixture(source, 1), out)
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    assert prepare_dataset(_mixture(source, 1), out, reuse_only=True).reused
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before


# ------------------------------------------------------------------ shipped accelerate configs


def _launch_env(name: str) -> dict[str, str]:
    """The environment ``accelerate launch --config_file config/accelerate/<name>.yaml`` gives the
    processes, computed by accelerate's own launcher code (nothing is started)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    path = ROOT / "config" / "accelerate" / f"{name}.yaml"
    argv = ["--config_file", str(path), "--num_processes", "2", "-m", "minigpt", "train", "--config", "x"]
    args, defaults, mixed_from_config = _validate_launch_command(launch_command_parser().parse_args(argv))
    if args.use_deepspeed:
        fields = [*defaults.deepspeed_config, *(["mixed_precision"] if mixed_from_config else [])]
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        return prepare_deepspeed_cmd_env(args)[1]
    return prepare_multi_gpu_env(args)


@pytest.mark.parametrize("name", ["ddp", "fsdp2", "zero2", "zero3"])
def test_shipped_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "config" / "accelerate" / f"{name}.yaml"))
    assert (
        config.num_machines == 1 and config.mixed_precision == "no"
    )  # precision: the stage's train.precision
    env = _launch_env(name)
    assert env["ACCELERATE_MIXED_PRECISION"] == "no"


def test_fsdp2_config_gives_a_version_2_plugin_with_full_state_dicts():
    from accelerate.utils import FullyShardedDataParallelPlugin, patch_environment

    env = _launch_env("fsdp2")
    assert env["ACCELERATE_USE_FSDP"] == "true"
    with patch_environment(**env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)
    assert plugin.transformer_cls_names_to_wrap == ["Qwen3DecoderLayer"]
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3ForCausalLM

    assert Qwen3DecoderLayer.__name__ in Qwen3ForCausalLM._no_split_modules


@pytest.mark.parametrize(("name", "stage"), [("zero2", 2), ("zero3", 3)])
def test_deepspeed_configs_leave_accumulation_and_clipping_to_the_stage(name, stage):
    from accelerate.utils import DeepSpeedPlugin, patch_environment

    env = _launch_env(name)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    with patch_environment(**env):
        plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == stage
    # "auto": transformers fills them from train.grad_accum / train.max_grad_norm, so they cannot disagree
    assert plugin.gradient_accumulation_steps == "auto" and plugin.gradient_clipping == "auto"
    gather = plugin.deepspeed_config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    assert gather is (stage == 3)  # ZeRO-3 checkpoints and the export hold full weights
