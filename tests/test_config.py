import pytest

from minigpt.errors import ConfigError
from minigpt.stages.stage_config import StageConfig, load_stage_config
from minigpt.typed_config import apply_overrides, load_config, read_yaml

GOOD = """\
stage: sft
output_dir: runs/x
model:
  init: tiny
  tokenizer: tok
data:
  train: [a.jsonl]
train:
  max_steps: 10
  lr: 0.001
"""


def _write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_config_loads_with_defaults(tmp_path):
    cfg = load_config(StageConfig, _write(tmp_path, GOOD))
    assert cfg.train.max_steps == 10 and cfg.train.batch_size == 8 and cfg.model.trust_remote_code is False


def test_typo_names_file_line_key_and_suggestion(tmp_path):
    path = _write(tmp_path, GOOD.replace("  lr: 0.001", "  lerning_rate: 0.001"))
    with pytest.raises(ConfigError) as err:
        load_config(StageConfig, path)
    msg = str(err.value)
    assert f"{path}:10" in msg and "train.lerning_rate" in msg and "Did you mean 'lr'?" in msg


def test_stage_algo_typo_is_caught(tmp_path):
    path = _write(tmp_path, GOOD + "algo:\n  bogus: 1\n")
    with pytest.raises(ConfigError, match="algo.bogus"):
        load_stage_config(path)


def test_wrong_type_and_missing_field(tmp_path):
    with pytest.raises(ConfigError, match=r"c.yaml:9: key 'train.max_steps'.*integer"):
        load_config(StageConfig, _write(tmp_path, GOOD.replace("max_steps: 10", "max_steps: ten")))
    with pytest.raises(ConfigError, match="missing required key 'output_dir'"):
        load_config(StageConfig, _write(tmp_path, GOOD.replace("output_dir: runs/x\n", "")))


def test_malformed_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"c.yaml:3: malformed YAML"):
        read_yaml(_write(tmp_path, "a: 1\nb: [1, 2\nc: 3\n"))
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "nope.yaml")


def test_byte_order_mark_and_non_utf8(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeff".encode() + GOOD.encode())
    assert load_config(StageConfig, path).stage == "sft"
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"stage: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        read_yaml(bad)


def test_yaml_is_loaded_safely(tmp_path):
    with pytest.raises(ConfigError, match="malformed YAML"):
        read_yaml(_write(tmp_path, "x: !!python/object/apply:os.system ['echo hi']\n"))


def test_overrides_set_nested_values_with_yaml_types(tmp_path):
    data = apply_overrides(
        {"train": {"lr": 1.0}}, ["train.lr=3e-4", "train.report_to=[tensorboard]", "seed=7"]
    )
    assert data == {"train": {"lr": 3e-4, "report_to": ["tensorboard"]}, "seed": 7}
    cfg = load_config(StageConfig, _write(tmp_path, GOOD), ["train.batch_size=4"])
    assert cfg.train.batch_size == 4
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        apply_overrides({}, ["novalue"])


def test_unknown_stage_suggests(tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'sft'"):
        load_stage_config(_write(tmp_path, GOOD.replace("stage: sft", "stage: sfft")))


def test_overrides_index_lists():
    data = apply_overrides({"sources": [{"weight": 1}, {"weight": 2}]}, ["sources.1.weight=5"])
    assert data["sources"][1]["weight"] == 5
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides({"sources": [{"weight": 1}]}, ["sources.3.weight=5"])
