"""The layering that keeps the command line fast: validating configs and planning recipes is torch-free (the
stage registry resolves names lazily), and the package has no import cycle, type-checking imports included."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "minigpt"
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "matplotlib")


def _imported_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint('loaded:', *(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(out.splitlines()[-1].split()[1:])


@pytest.mark.parametrize(
    "code",
    [
        "from minigpt.cli import main; main(['list'])",
        # a whole recipe validated, keyed and planned: every stage's algo checked against its Params
        "from minigpt.cli import main; main(['run', 'recipes/tictactoe.yaml', '--dry-run', "
        "'--set', 'output_dir=/tmp/minigpt-dry-run-probe'])",
        # every evaluation task's args, and the eval command with the flags tasks bring
        "from minigpt.registry import EVAL_TASKS; [EVAL_TASKS.get(n).params() for n in ('tictactoe', 'gsm8k')]; "
        "from minigpt.cli import build_parser; build_parser().parse_args(['eval', 'x', '--task', 'samples'])",
        "from minigpt.stages.stage_config import StageConfig; "
        "StageConfig.model_validate({'stage': 'grpo', 'output_dir': 'o', 'model': {'init': 'tiny'}, "
        "'data': {'train': ['x']}, 'algo': {'rewards': ['format']}})",
    ],
)
def test_planning_imports_no_training_stack(code):
    assert _imported_after(code) == set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(tree: ast.Module) -> list[str]:
    """Names imported at module level, in ``if TYPE_CHECKING:`` blocks too (function-level imports are lazy
    on purpose and excluded)."""
    found: list[str] = []
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        elif isinstance(node, ast.If | ast.Try):
            stack += node.body + node.orelse + getattr(node, "handlers", []) + getattr(node, "finalbody", [])
        elif isinstance(node, ast.ExceptHandler):
            stack += node.body
    return found


def test_no_import_cycle():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
