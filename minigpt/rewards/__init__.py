"""Reward functions for the RL stages, registered in ``minigpt.registry.REWARDS``, and their config wiring.

Built in: ``gsm8k_answer``, ``format``, ``length`` (``minigpt.rewards.general``); tic-tac-toe rewards live in
``minigpt.tasks.tictactoe.rewards``. A config may also name ``package.module:function`` (imported only then).

A config entry is a :class:`RewardSpec` ``{name, weight, args, label}``; :func:`build_rewards` turns a list of
them into the callables and weights TRL's RL trainers take.

Every call of a configured reward goes through :class:`NamedReward` (TRL's GRPO/RLOO trainers and the ppo/spo
rollout alike), which is where a reward that raises, or returns anything but one finite number per completion,
is caught (:class:`RewardFault`); the trainer (``minigpt.stages.trainer_hooks``) then stops or skips the step.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import reprlib
from typing import Any

from pydantic import field_validator, model_validator

from minigpt.errors import ConfigError, TrainingError
from minigpt.registry import REWARDS
from minigpt.rewards import general  # noqa: F401  (imported for registration)
from minigpt.rewards.general import completion_text, extract_final_number
from minigpt.typed_config import Strict

# Keyword names TRL itself passes to reward functions: a dataset column or a config arg with one of these
# names would collide with them.
RESERVED_NAMES = (
    "prompts",
    "completions",
    "completion",
    "completion_ids",
    "trainer_state",
    "log_extra",
    "log_metric",
    "environments",
)


def check_reward_args(fn: Any, name: str, args: dict[str, Any]) -> None:
    """Config ``args`` must be named parameters of the reward function (a typo is not swallowed by its
    ``**kwargs``), and pass the function's own ``validate_args`` hook when it has one."""
    if not callable(fn):
        raise ValueError(f"reward function '{name}' is not callable")
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check
        params = None
    if params is not None:
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        named = [p.name for p in params if p.kind in kinds and p.name not in RESERVED_NAMES]
        for key in args:
            if key in RESERVED_NAMES:
                raise ValueError(
                    f"reward '{name}': args.{key} is passed by the trainer, not set in the config"
                )
            if key not in named:
                close = difflib.get_close_matches(key, named, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ValueError(
                    f"reward '{name}' has no argument '{key}'.{hint} "
                    f"Its arguments: {', '.join(named) or '(none)'}"
                )
    validate = getattr(fn, "validate_args", None)
    if validate is not None:
        validate(args)


class RewardSpec(Strict):
    name: str
    """A registered reward (``gsm8k_answer``, ``format``, ``length``, ``tictactoe_solver``, ...) or
    ``package.module:function``."""
    weight: float = 1.0
    args: dict[str, Any] = {}
    """Keyword arguments bound to the function (e.g. ``{target: 64, unit: tokens}`` for ``length``)."""
    label: str | None = None
    """The name in metrics (``train/reward/<label>``); default the function's name."""

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        try:
            REWARDS.get(name)
        except ConfigError as exc:  # re-raised as ValueError so the message carries file, line and key
            raise ValueError(str(exc)) from None
        return name

    @model_validator(mode="after")
    def _args(self) -> RewardSpec:
        check_reward_args(REWARDS.get(self.name), self.name, self.args)
        return self


class RewardFault(TrainingError):
    """A reward function raised, or did not return one finite number per completion."""

    def __init__(self, label: str, problem: str):
        self.label, self.problem = label, problem
        super().__init__(f"reward '{label}' {problem}")


_SHORT = reprlib.Repr()  # keyword arguments need Python 3.12
_SHORT.maxstring = _SHORT.maxother = 40


def reward_problem(values: Any, n: int) -> tuple[list[float], str | None]:
    """(the rewards as floats, None), or ([], what is wrong) when ``values`` is not ``n`` finite numbers.

    None is refused too: TRL reads it as "this reward does not apply" and its weighted sum then counts the
    sample as 0 (or, when no reward applies, drops it), so a reward that fails on some inputs would be
    trained on silently. A function meant to abstain should return a neutral number."""
    not_a_list = f"returned {type(values).__name__}, not a list of {n} numbers"
    if isinstance(values, (str, bytes, dict)):
        return [], not_a_list
    try:
        items = list(values)
    except TypeError:  # not iterable (None, a number, a 0-d tensor)
        return [], not_a_list
    if len(items) != n:
        return [], f"returned {len(items)} values for {n} completions"
    rewards: list[float] = []
    kinds: dict[str, int] = {}  # what was wrong → how many completions, in order of first sight
    for value in items:
        kind = None
        if value is None:
            kind = "None"
        elif isinstance(value, (str, bytes)):  # float("1") would parse it
            kind = f"a {type(value).__name__} ({_SHORT.repr(value)})"
        else:
            try:
                number = float(value)
            except (TypeError, ValueError, OverflowError):
                kind = f"a {type(value).__name__} ({_SHORT.repr(value)})"
            else:
                if math.isnan(number):
                    kind = "nan"
                elif math.isinf(number):
                    kind = "inf" if number > 0 else "-inf"
                rewards.append(number)
        if kind is not None:
            kinds[kind] = kinds.get(kind, 0) + 1
    if kinds:
        return [], f"returned {', '.join(kinds)} for {sum(kinds.values())} of {n} completions"
    return rewards, None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class NamedReward:
    """A reward function with its config args bound and a display name.

    TRL names its per-reward metrics after ``__name__`` and unwraps a bare ``functools.partial`` to the
    wrapped function's name, so two differently configured uses of one function would share a name.

    A call returns one float per completion or fails with a :class:`RewardFault` naming the label. With
    ``skip_faults`` (set by the trainer when ``train.max_bad_steps`` > 0) the fault is appended to ``faults``
    instead and the call returns NaN for every completion (TRL's "no reward"): every process then runs the
    step's collectives to the end and the trainer skips the step (``MiniGPTTrainerMixin``).
    """

    def __init__(self, fn: Any, args: dict[str, Any], name: str):
        self.func = functools.partial(fn, **args) if args else fn
        self.args = dict(args)
        self.__name__ = name
        self.skip_faults = False
        self.faults: list[RewardFault] = []

    def __call__(self, **kwargs: Any) -> list[float]:  # TRL passes everything by keyword
        n = len(kwargs["completions"])
        try:
            values = self.func(**kwargs)
        except Exception as exc:  # any failure of user code is this reward's fault, reported as one line
            detail = _one_line(str(exc))
            problem = f"raised {type(exc).__name__}" + (f": {detail}" if detail else "")
        else:
            rewards, problem = reward_problem(values, n)
            if problem is None:
                return rewards
        fault = RewardFault(self.__name__, problem)
        if not self.skip_faults:
            raise fault
        self.faults.append(fault)
        return [math.nan] * n

    def __repr__(self) -> str:
        return f"NamedReward({self.__name__}, args={self.args})"


def build_rewards(specs: list[RewardSpec]) -> tuple[list[NamedReward], list[float]]:
    """(reward functions for TRL, their weights) from the config; labels are made unique (``name_2``)."""
    funcs: list[NamedReward] = []
    seen: dict[str, int] = {}
    for spec in specs:
        base = spec.label or spec.name.rsplit(":", 1)[-1]
        seen[base] = seen.get(base, 0) + 1
        label = base if seen[base] == 1 else f"{base}_{seen[base]}"
        funcs.append(NamedReward(REWARDS.get(spec.name), spec.args, label))
    return funcs, [spec.weight for spec in specs]


__all__ = [
    "RESERVED_NAMES",
    "NamedReward",
    "RewardFault",
    "RewardSpec",
    "build_rewards",
    "check_reward_args",
    "completion_text",
    "extract_final_number",
    "reward_problem",
]
