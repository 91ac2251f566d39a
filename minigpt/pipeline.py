"""Recipes: run every stage in order, each reading the output folder of the stage it starts from.
Reading the recipe and planning its stages (tree, configs, keys) is ``minigpt.recipe_plan``.

A manifest (``<run>/manifest.json``) records each stage's key (a hash of its resolved config chained with
the keys of the stages before it) and status. A rerun skips finished stages whose key is unchanged, reruns a
changed stage and everything after it, and resumes an interrupted stage from its newest checkpoint.

Keys are computed with paths inside the run folder written as ``<run>/...``, so a run folder that is copied or
moved keeps its keys and its finished stages are still skipped there.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from minigpt.checkpoints import read_done, read_json_file, write_json_atomic
from minigpt.errors import ConfigError
from minigpt.models.tokenizer_cli import train_from_config
from minigpt.recipe_plan import PlannedStage, load_recipe
from minigpt.tasks.eval_spec import EvaluationSpec


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
