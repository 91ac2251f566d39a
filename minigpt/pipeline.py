"""Recipes: run every stage of a pipeline in order, each reading the previous stage's output folder.

A manifest (``<run>/manifest.json``) records each stage's key (a hash of its resolved config chained with
the keys of the stages before it) and status. A rerun skips finished stages whose key is unchanged, reruns a
changed stage and everything after it, and resumes an interrupted stage from its newest checkpoint.

Keys are computed with paths inside the run folder written as ``<run>/...``, so a run folder that is copied or
moved keeps its keys and its finished stages are still skipped there.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from minigpt.checkpoints import read_done, read_json_file, write_json_atomic
from minigpt.config_paths import canonical, resolve_recipe_paths, resolve_stage_paths, value_at
from minigpt.errors import ConfigError
from minigpt.models.tokenizer_cli import TokenizerConfig, train_from_config
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


def _manifest_path(run_dir: Path) -> Path:
    return run_dir / "manifest.json"


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = _manifest_path(run_dir)
    if not path.exists():
        return {"stages": {}}
    manifest = read_json_file(path, "recipe manifest")
    if not isinstance(manifest.get("stages", {}), dict):
        raise ConfigError(f"{path}: the recipe manifest is corrupt ('stages' is not a mapping)")
    manifest.setdefault("stages", {})
    return manifest


def plan_actions(
    planned: list[PlannedStage], manifest: dict[str, Any], from_stage: str | None, only: str | None
) -> None:
    names = [p.entry.name for p in planned]
    for name in (from_stage, only):
        if name is not None and name not in names:
            raise ConfigError(f"no stage named '{name}' in the recipe (stages: {', '.join(names)})")

    def chain(p: PlannedStage) -> list[PlannedStage]:  # the stages p starts from, nearest first
        out, parent = [], p.parent
        while parent is not None:
            out.append(planned[parent])
            parent = planned[parent].parent
        return out

    for p in planned:
        record = manifest["stages"].get(p.entry.name, {})
        ancestors = chain(p)
        # --from NAME reruns NAME and the stages that start from it (its branch), not its siblings
        forced = from_stage is not None and (
            p.entry.name == from_stage or any(a.entry.name == from_stage for a in ancestors)
        )
        changed_before = any(a.action != "skip" for a in ancestors)
        if only is not None and p.entry.name != only:
            p.action, p.reason = "skip", "not selected (--only)"
            continue
        done = record.get("status") == "done" and p.key_matches(record) and _output_complete(p)
        if forced or p.entry.name == only:
            p.action, p.reason = "rerun", "--from / --only"
        elif done and not changed_before:
            p.action, p.reason = "skip", "finished, inputs unchanged"
        elif p.key_matches(record) and record.get("status") == "running" and _output_complete(p):
            # killed after the stage wrote stage.json (during its task evaluation): never train it again
            p.action, p.reason = (
                "finish",
                "trained earlier, interrupted before it was recorded: evaluate only",
            )
        elif p.key_matches(record) and record.get("status") == "running":
            p.action, p.reason = "resume", "interrupted earlier: resume from the newest checkpoint"
        elif record:
            p.action, p.reason = (
                "rerun",
                "config or inputs changed" if not changed_before else "a stage it starts from reran",
            )
        else:
            p.action, p.reason = "run", "new"


def _output_complete(p: PlannedStage) -> bool:
    if p.entry.kind == "tokenizer":
        return (p.output_dir / "tokenizer.json").exists()
    return read_done(p.output_dir) is not None


def run_recipe(
    path: str | Path,
    *,
    from_stage: str | None = None,
    only: str | None = None,
    dry_run: bool = False,
    overrides: list[str] | None = None,
    console: bool = True,
    callbacks: list | None = None,
) -> dict[str, Any]:
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1  # launched by torchrun / accelerate launch
    if several or not dry_run:  # a plan alone on one process needs neither torch nor a process group
        from minigpt.distributed import broadcast_from_main, distributed_state

        # On several processes, every process runs every training stage together; only the main one trains
        # the tokenizer, writes the manifest and evaluates (docs/distributed.md).
        is_main = distributed_state().is_main_process
    else:
        is_main = True
    recipe, planned = load_recipe(path, overrides)
    run_dir = Path(recipe.output_dir)  # absolute: set by load_recipe
    manifest = read_manifest(run_dir)
    plan_actions(planned, manifest, from_stage, only)
    if several:
        # The main process's plan for all: another process reading the manifest a moment later (after the
        # main one marked a stage running) would otherwise decide "resume" where the main one decided "run".
        for p, (action, reason) in zip(
            planned, broadcast_from_main([(p.action, p.reason) for p in planned]), strict=True
        ):
            p.action, p.reason = action, reason
    lines = [f"{p.entry.name:<12} {p.action:<7} {p.reason}" for p in planned]
    if console and is_main:
        print(f"recipe {recipe.name} → {run_dir}\n" + "\n".join(lines), flush=True)
    if dry_run:
        return {"run_dir": str(run_dir), "plan": [(p.entry.name, p.action, p.reason) for p in planned]}
    from minigpt.distributed import barrier
    from minigpt.runner import run_stage

    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    manifest.setdefault("stages", {})
    manifest["recipe"] = recipe.name
    for p in planned:
        if p.action == "skip":
            continue
        previous = manifest["stages"].get(p.entry.name)
        record = {"key": p.key, "status": "running", "kind": p.entry.kind, "started": time.time()}
        if p.action == "finish":
            record["started"] = previous.get("started", record["started"])
        manifest["stages"][p.entry.name] = record
        if is_main:
            write_json_atomic(_manifest_path(run_dir), manifest)
        started = time.time()
        if p.entry.kind == "tokenizer":
            if is_main:
                train_from_config(p.config)
            barrier()  # the next stage loads this tokenizer on every process
            summary: dict[str, Any] = {"output_dir": str(p.output_dir)}
        else:
            cfg = p.config
            cfg.resume = p.action in ("resume", "finish")
            try:
                summary = run_stage(
                    cfg,
                    overwrite=not cfg.resume,
                    console=console,
                    callbacks=callbacks or [],
                )
            except BaseException as exc:
                # Refused before training (a bad input): the old output is back in place (run_stage), so
                # its record is too, and undoing the change finds the stage finished again.
                if is_main and not getattr(exc, "minigpt_training_started", False) and not cfg.resume:
                    if previous is None:
                        manifest["stages"].pop(p.entry.name, None)
                    else:
                        manifest["stages"][p.entry.name] = previous
                    write_json_atomic(_manifest_path(run_dir), manifest)
                raise
            if recipe.evaluation and is_main:
                summary["evaluations"] = evaluate_stage(recipe.evaluation, p.output_dir)
                drops = collapse_warnings(p.entry.name, Path(cfg.model.init), summary["evaluations"])
                if drops:
                    record["warnings"] = drops
            barrier()  # the others wait while the main process evaluates
        record.update(status="done", seconds=round(time.time() - started, 2), finished=time.time())
        if is_main:
            write_json_atomic(_manifest_path(run_dir), manifest)
    if is_main:
        write_json_atomic(_manifest_path(run_dir), manifest)
    return {
        "run_dir": str(run_dir),
        "plan": [(p.entry.name, p.action, p.reason) for p in planned],
        "manifest": manifest,
    }


def collapse_warnings(name: str, start: Path, evaluations: dict[str, Any]) -> list[str]:
    """Headline scores of this stage that fell sharply below its start's (docs/report.md, "Warnings"),
    printed as warnings; the start is the folder it trained from, when that was evaluated too."""
    from minigpt.tasks.eval_drops import sharp_drops
    from minigpt.tasks.eval_runner import read_evaluations

    if not start.is_dir():
        return []
    drops = sharp_drops(read_evaluations(start), evaluations)
    for drop in drops:
        print(f"warning: stage {name}: {drop} (its start: {start.name}); see the report", file=sys.stderr)
    return drops


def evaluate_stage(specs: list[EvaluationSpec], model_dir: Path) -> dict[str, Any]:
    """The recipe's evaluations of one stage folder (each writes its result file there), then the folder's
    model card again, which reports them."""
    from minigpt.model_card import refresh_model_card
    from minigpt.tasks.eval_runner import run_evaluations

    results = run_evaluations(specs, model_dir)
    refresh_model_card(model_dir)
    return results
