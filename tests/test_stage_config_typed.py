"""One typed config per stage: ``algo`` is the stage's Params, it cannot drift from ``stage``, a config
pickles (spawned workers), and a finished stage's snapshot written with fewer fields still counts as the same
config on --resume."""

from __future__ import annotations

import pickle

import pytest
import yaml
from pydantic import ValidationError

from minigpt.output_folder import same_config
from minigpt.stages.preference.preference_params import DPOParams
from minigpt.stages.stage_config import StageConfig

BASE = {"output_dir": "o", "model": {"init": "tiny"}, "data": {"train": ["x.jsonl"]}}


def test_algo_is_typed_and_tied_to_the_stage():
    cfg = StageConfig.model_validate({"stage": "dpo", **BASE, "algo": {"beta": 0.3}})
    assert isinstance(cfg.algo, DPOParams) and cfg.algo.beta == 0.3
    with pytest.raises(ValidationError, match="algo is not the fields of stage 'grpo'"):
        cfg.stage = "grpo"


def test_a_stage_config_pickles():
    cfg = StageConfig.model_validate({"stage": "grpo", **BASE, "algo": {"rewards": ["format"]}})
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and type(again) is type(cfg)


def test_a_snapshot_with_only_the_given_fields_is_thesame_config(tmp_path):
    cfg = StageConfig.model_validate(
        {"stage": "dpo", **BASE, "output_dir": str(tmp_path), "algo": {"beta": 0.3}}
    )
    written = {"stage": "dpo", **BASE, "output_dir": str(tmp_path), "algo": {"beta": 0.3}}  # no defaults
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(written))
    assert same_config(tmp_path, cfg)
    written["algo"]["beta"] = 0.2
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(written))
    assert not same_config(tmp_path, cfg)
