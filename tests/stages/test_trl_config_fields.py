"""Stages on TRL build their TRL config from their ``algo`` fields generically (``TRLParams.trl_kwargs``):
every such field must exist, by name, on the stage's TRL config class of the installed TRL version."""

from __future__ import annotations

import dataclasses

import pytest

from minigpt.registry import STAGES
from minigpt.stages.stage_params import TRLParams

ON_TRL = [name for name in STAGES.names() if issubclass(STAGES.get(name).params, TRLParams)]


def test_the_trl_stages_are_the_expected_ones():
    assert sorted(ON_TRL) == ["dpo", "grpo", "reward", "rloo"]


@pytest.mark.parametrize("name", ON_TRL)
def test_every_passed_field_is_a_field_of_the_trl_config(name):
    spec = STAGES.get(name)
    config_class = spec.load().config_class
    trl_fields = {f.name for f in dataclasses.fields(config_class)}
    passed = set(spec.params.model_fields) - spec.params.not_trl
    assert passed and passed <= trl_fields, f"{name}: not on {config_class.__name__}: {passed - trl_fields}"
    assert spec.params.not_trl <= set(spec.params.model_fields)  # no stale names in the exclusions


@pytest.mark.parametrize("name", ON_TRL)
def test_the_defaults_build_a_trl_config(name, tmp_path):
    spec = STAGES.get(name)
    algo = {"rewards": ["format"]} if "rewards" in spec.params.model_fields else {}
    params = spec.params.model_validate(algo)
    kwargs = params.trl_kwargs()
    config = spec.load().config_class(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], **kwargs
    )
    for key, value in kwargs.items():
        assert getattr(config, key) == value or key == "loss_type", key  # DPO may normalise loss_type
