"""The switches of the lm-evaluation-harness task (torch-free; lm-eval itself is imported only to run)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from minigpt.config_paths import canonical
from minigpt.typed_config import Strict


def is_task_file(name: str) -> bool:
    """A task given as a YAML file rather than by an lm-eval task name."""
    return name.endswith((".yaml", ".yml"))


class HarnessEvalArgs(Strict):
    tasks: list[str] = Field(min_length=1)
    """lm-eval task or group names (``arc_easy``, ``hellaswag``) or paths of task YAML files."""
    include_path: list[str] = []
    """Folders of more task YAMLs (custom tasks named in ``tasks``)."""
    include_defaults: bool | None = None
    """Index lm-eval's own tasks; default: unless every task is a YAML file (indexing them takes seconds)."""
    limit: int | float | None = Field(None, gt=0)
    """Items per task: a count, or a fraction (< 1) of each task's items; default all."""
    num_fewshot: int | None = Field(None, ge=0)
    """Few-shot examples per prompt; default each task's own."""
    apply_chat_template: bool | None = None
    """Prompts through the chat template; default: when the folder is a chat model (not pretrain /
    midtrain). Few-shot examples are then turns of the conversation (lm-eval's ``fewshot_as_multiturn``)."""
    batch_size: int = Field(8, ge=1)
    max_length: int | None = Field(None, ge=1)
    """Context length lm-eval may use; default the model's."""
    bootstrap_iters: int = Field(1000, ge=0)
    """Bootstrap resamples for the standard errors of metrics without a closed form (0: none)."""
    seed: int = 0
    samples: int = Field(0, ge=0)
    """Per-item records (prompt, target, response, scores) kept in the result for each task."""
    trust_remote_code: bool = False

    def resolved(self, base: Path) -> HarnessEvalArgs:
        """Task files and ``include_path`` folders relative to ``base``: the folder of the recipe that names
        them, or the working directory for the command line (docs/recipes.md, one rule for every path)."""
        tasks = [canonical(t, base) if is_task_file(t) else t for t in self.tasks]
        include = [canonical(p, base) for p in self.include_path]
        return self.model_copy(update={"tasks": tasks, "include_path": include})
