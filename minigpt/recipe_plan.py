"""A recipe file → its typed :class:`Recipe` and the planned stages: the stage tree (``from``), each stage's
config resolved (defaults merged, paths absolute, start folder and tokenizer filled in, task evaluation during
training attached) and its key (``minigpt.pipeline_keys``). What runs and in which order is
``minigpt.pipeline``'s job; nothing here trains or writes. docs/recipes.md describes the file.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from minigpt.config_paths import canonical, resolve_recipe_paths, resolve_stage_paths, value_at
from minigpt.errors import ConfigError
from minigpt.models.tokenizer_cli import TokenizerConfig
from minigpt.pipeline_keys import StageKeys, user_code_digests
from minigpt.stages.stage_config import StageConfig
from minigpt.tasks.eval_spec import EvaluationSpec, check_labels, evaluation_list, resolve_evaluation_paths
from minigpt.typed_config import Strict, read_yaml, validate


class StageEntry(Strict):
    name: str
    """Folder name of this stage's output under the run folder; unique in the recipe."""
    kind: Literal["tokenizer", "train"] = "train"
    config: str | dict[str, Any] = {}
    """A stage config file or the config inline (without output_dir: the pipeline sets it)."""
    set: list[str] = []
    """--set style overrides for this stage."""
    from_stage: str | None = Field(None, alias="from")
    """``from: NAME``: start from that earlier training stage's output (siblings that name one stage share its
    checkpoint: the recipe is a tree). Default: the training stage before this one."""


class Recipe(Strict):
    name: str
    output_dir: str | None = None
    """Default ``runs/<name>``."""
    seed: int = 42
    defaults: dict[str, Any] = {}
    """Merged under every training stage's config (e.g. shared model overrides, train.precision)."""
    stages: list[StageEntry] = Field(min_length=1)
    evaluation: list[EvaluationSpec] = []
    """Evaluation tasks run after every training stage (minigpt/tasks/eval_catalog.py); a single mapping
    (``{task: NAME, args: ...}``, the older form) is one."""

    @field_validator("evaluation", mode="before")
    @classmethod
    def _evaluation_list(cls, value: Any) -> Any:
        return evaluation_list(value)

    @field_validator("evaluation")
    @classmethod
    def _unique_labels(cls, value: list[EvaluationSpec]) -> list[EvaluationSpec]:
        during = [s.label for s in value if s.during_training is not None]
        if len(during) > 1:
            raise ValueError(
                f"evaluations {', '.join(during)} both have during_training: one task evaluation runs "
                "during training (its metrics are eval/task/*)"
            )
        return check_labels(value)

    def training_evaluation(self) -> EvaluationSpec | None:
        """The evaluation stages run while they train (the entry with ``during_training``), if any."""
        return next((s.training_spec() for s in self.evaluation if s.during_training is not None), None)


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class PlannedStage:
    def __init__(
        self,
        entry: StageEntry,
        config: Any,
        key: str,
        output_dir: Path,
    ):
        self.entry, self.config, self.key, self.output_dir = entry, config, key, output_dir
        self.parent: int | None = None
        """Index of the stage this one starts from (the tree's edge); None for the first."""
        self.action = "run"
        self.reason = ""

    def key_matches(self, record: dict[str, Any]) -> bool:
        return record.get("key") is not None and record.get("key") == self.key


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> tuple[Recipe, list[PlannedStage]]:
    """The recipe and its planned stages, every path in them absolute (``minigpt.config_paths``): relative
    to the file that names it, or to the working directory for ``overrides`` and the default run folder."""
    from minigpt.typed_config import apply_overrides

    path = Path(path)
    raw, lines = read_yaml(path)
    cwd = Path.cwd()
    recipe_dir = Path(canonical(path, cwd)).parent
    raw = resolve_recipe_paths(raw, recipe_dir, source=str(path), lines=lines)
    written = copy.deepcopy(raw)
    raw = apply_overrides(raw, overrides)
    raw = resolve_recipe_paths(raw, cwd, previous=written, source="--set")
    recipe = validate(Recipe, raw, str(path), lines)
    resolve_evaluation_paths(recipe.evaluation, recipe_dir)
    names = [s.name for s in recipe.stages]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ConfigError(f"{path}: stage names must be unique; repeated: {', '.join(sorted(duplicates))}")
    recipe.output_dir = recipe.output_dir or canonical(f"runs/{recipe.name}", cwd)
    run_dir = Path(recipe.output_dir)
    planned: list[PlannedStage] = []
    keys = StageKeys(run_dir)
    training_eval = recipe.training_evaluation()
    for index, entry in enumerate(recipe.stages):
        out = run_dir / entry.name
        parent = _parent_index(recipe.stages, index, path, lines)
        model_dir = _start_folder(recipe.stages, planned, parent, run_dir)
        kind = "tokenizer" if entry.kind == "tokenizer" else "train"
        if isinstance(entry.config, str):
            cfg_path = Path(entry.config)  # absolute already
            data, cfg_lines = read_yaml(cfg_path)
            data = resolve_stage_paths(
                data, cfg_path.parent, kind=kind, source=str(cfg_path), lines=cfg_lines
            )
            source = str(cfg_path)
        else:
            data, cfg_lines = (
                copy.deepcopy(entry.config),
                {k[4:]: v for k, v in lines.items() if k[:4] == ("stages", index, "config") and len(k) > 3},
            )
            source = f"{path} (stages[{index}] '{entry.name}')"
        # A stage's `set` is written in the recipe file, unless --set replaced it on the command line.
        written_set = value_at(written, ("stages", index, "set")) or []
        set_base = recipe_dir if entry.set == written_set else cwd
        before_set = copy.deepcopy(data)
        data = apply_overrides(data, entry.set)
        data = resolve_stage_paths(data, set_base, kind=kind, previous=before_set, source=f"{path} (set)")
        if entry.kind == "tokenizer":
            data.setdefault("output_dir", str(out))
            cfg = validate(TokenizerConfig, data, source, cfg_lines)
            key = keys.add(
                cfg, set(), cfg.files, cfg.output_dir, cfg.data_config, cfg.generator, parent=parent
            )
            planned.append(PlannedStage(entry, cfg, key, out))
            planned[-1].parent = parent
        else:
            data = deep_merge(recipe.defaults, data)
            data["output_dir"] = str(out)
            data.setdefault("seed", recipe.seed)
            model = data.setdefault("model", {})
            if entry.from_stage is not None and "init" in model and model["init"] != model_dir:
                raise ConfigError(
                    f"{source}: 'from: {entry.from_stage}' and model.init '{model['init']}' name two starting "
                    "points: keep one"
                )
            # the tokenizer a stage gets by default is the nearest tokenizer stage on its own chain
            tokenizer_dir = next(
                (
                    str(run_dir / recipe.stages[i].name)
                    for i in keys.ancestors(parent)
                    if recipe.stages[i].kind == "tokenizer"
                ),
                None,
            )
            if "init" not in model:
                if model_dir is None:
                    raise ConfigError(
                        f"{source}: the first training stage needs model.init (a preset or folder)"
                    )
                model["init"] = model_dir
            if "tokenizer" not in model and tokenizer_dir and model["init"] != model_dir:
                model["tokenizer"] = tokenizer_dir
            if training_eval is not None and "task_eval" not in data and _evaluates_while_training(data):
                data["task_eval"] = training_eval.model_dump(mode="json")
            _refuse_later_outputs(data, run_dir, recipe.stages, index, source)
            _refuse_other_branches(data, run_dir, recipe.stages, keys.ancestors(parent), index, source)
            cfg = validate(StageConfig, data, source, cfg_lines)
            files = cfg.data.train + cfg.data.validation
            if cfg.data.data_config:
                files = [*files, cfg.data.data_config]
            key = keys.add(
                cfg,
                {"resume"},
                files,
                str(out),
                cfg.data.data_config,
                code=user_code_digests(cfg.algo),
                parent=parent,
            )
            planned.append(PlannedStage(entry, cfg, key, out))
            planned[-1].parent = parent
    return recipe, planned


def _evaluates_while_training(data: dict[str, Any]) -> bool:
    """A stage gets the recipe's task evaluation during training when it sets ``train.eval_interval`` and
    its model answers prompts (not the reward model)."""
    from minigpt.registry import STAGES

    train = data.get("train")
    interval = train.get("eval_interval") if isinstance(train, dict) else None
    stage = data.get("stage")
    if not isinstance(interval, int) or interval <= 0 or not isinstance(stage, str) or stage not in STAGES:
        return False
    return STAGES.get(stage).generates_text


def _parent_index(stages: list[StageEntry], index: int, path: Path, lines: dict) -> int | None:
    """The stage ``stages[index]`` starts from: its ``from``, else the stage before it."""
    entry = stages[index]
    if entry.from_stage is None:
        return index - 1 if index else None
    line = lines.get(("stages", index, "from"))
    where = f"{path}:{line}" if line else str(path)
    before = {s.name: i for i, s in enumerate(stages[:index])}
    if entry.from_stage not in before:
        later = any(s.name == entry.from_stage for s in stages[index:])
        why = "runs at or after it" if later else "is no stage of the recipe"
        raise ConfigError(
            f"{where}: stages[{index}] '{entry.name}': from '{entry.from_stage}' {why}; a stage can start "
            f"only from a training stage before it ({', '.join(before) or 'none'})"
        )
    parent = before[entry.from_stage]
    if entry.kind == "tokenizer" or stages[parent].kind == "tokenizer":
        raise ConfigError(
            f"{where}: stages[{index}] '{entry.name}': from '{entry.from_stage}': 'from' joins training "
            "stages (a model starts from another stage's model)"
        )
    return parent


def _start_folder(
    stages: list[StageEntry], planned: list[PlannedStage], parent: int | None, run_dir: Path
) -> str | None:
    """The output of the nearest training stage up the chain from ``parent``: what a stage without
    ``model.init`` starts from."""
    while parent is not None:
        if stages[parent].kind != "tokenizer":
            return str(run_dir / stages[parent].name)
        parent = planned[parent].parent
    return None


def _refuse_other_branches(
    data: dict[str, Any],
    run_dir: Path,
    stages: list[StageEntry],
    ancestors: list[int],
    index: int,
    source: str,
) -> None:
    """``model.init`` / ``model.tokenizer`` naming an earlier stage's output that this stage does not start
    from (another branch): its key would not follow that stage, so a change there would go unnoticed."""
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    others = {
        os.path.abspath(run_dir / s.name): s.name
        for i, s in enumerate(stages[:index])
        if i not in ancestors and s.kind != "tokenizer"
    }
    for key in ("init", "tokenizer"):
        value = model.get(key)
        if isinstance(value, str) and (name := others.get(os.path.abspath(value))) is not None:
            raise ConfigError(
                f"{source}: model.{key} '{value}' is the output of stage '{name}', which this stage "
                f"'{stages[index].name}' does not start from: write `from: {name}` in its recipe entry"
            )


def _refuse_later_outputs(
    data: dict[str, Any], run_dir: Path, stages: list[StageEntry], index: int, source: str
) -> None:
    """A stage cannot start from the output of itself or of a stage that runs after it: that folder does
    not exist yet on a first run, and on a rerun it holds the previous run's result."""
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    later = {os.path.abspath(run_dir / s.name): s.name for s in stages[index:]}
    for key in ("init", "tokenizer"):
        value = model.get(key)
        if isinstance(value, str) and (name := later.get(os.path.abspath(value))) is not None:
            what = "its own output" if name == stages[index].name else f"the output of stage '{name}'"
            raise ConfigError(
                f"{source}: model.{key} '{value}' is {what}, which runs "
                f"{'as' if name == stages[index].name else 'after'} this stage '{stages[index].name}'. "
                "A stage can start only from a stage before it in the recipe"
            )
