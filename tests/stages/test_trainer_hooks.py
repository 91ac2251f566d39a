"""The trainer hooks layer: every private transformers/TRL method the project overrides is listed in
``PRIVATE_OVERRIDES`` and still has the listed parameters in the installed versions (an incompatible upgrade
fails here, by name, instead of mid-run); stages build hooked trainers with the run state at construction."""

from __future__ import annotations

import inspect

import pytest

from minigpt.registry import STAGES, import_object
from minigpt.stages.rl.onpolicy.onpolicy_loop import OnPolicyTrainer
from minigpt.stages.rl.trl_group_stage import RLTrainerMixin
from minigpt.stages.trainer_hooks import PRIVATE_OVERRIDES, MiniGPTTrainerMixin, hooked

PINNED = [
    (base, name, params) for base, methods in PRIVATE_OVERRIDES.items() for name, params in methods.items()
]


@pytest.mark.parametrize(("base", "name", "params"), PINNED, ids=[f"{b}.{n}" for b, n, _ in PINNED])
def test_overridden_private_methods_keep_their_signature(base, name, params):
    cls = import_object(base, "trainer")
    method = getattr(cls, name, None)
    assert method is not None, f"{base} has no {name} any more: the override in trainer_hooks is dead"
    assert tuple(inspect.signature(method).parameters) == params, f"{base}.{name} changed its parameters"


def test_every_private_override_is_pinned():
    from transformers import Trainer
    from trl import GRPOTrainer, RLOOTrainer

    listed = {(b, n) for b, n, _ in PINNED}
    ours = [
        (MiniGPTTrainerMixin, {"transformers:Trainer": Trainer}),
        (OnPolicyTrainer, {"transformers:Trainer": Trainer}),
        (RLTrainerMixin, {"trl:GRPOTrainer": GRPOTrainer, "trl:RLOOTrainer": RLOOTrainer}),
    ]
    missing = []
    for cls, bases in ours:
        for name, value in vars(cls).items():
            if not callable(value) or not name.startswith("_") or name.startswith("__"):
                continue
            for label, base in bases.items():
                if hasattr(base, name) and (label, name) not in listed:
                    missing.append(f"{cls.__name__}.{name} overrides {label}")
    assert not missing, missing


def test_hooked_classes_are_one_per_combination_and_hooks_come_first():
    from trl import DPOTrainer, GRPOTrainer

    assert hooked(DPOTrainer) is hooked(DPOTrainer)
    grpo = hooked(GRPOTrainer, RLTrainerMixin, completions_index=3)
    assert grpo.__mro__[1:4] == (MiniGPTTrainerMixin, RLTrainerMixin, GRPOTrainer)
    assert grpo.completions_index == 3


@pytest.mark.parametrize("name", ["grpo", "rloo", "ppo", "spo"])
def test_rl_stage_trainers_carry_the_hooks(name):
    trainer_class = STAGES.get(name).load().trainer_class
    assert issubclass(trainer_class, MiniGPTTrainerMixin)
