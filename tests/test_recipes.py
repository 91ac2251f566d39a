"""Every shipped recipe validates (each stage's config and algo section) and plans offline."""

from pathlib import Path

import pytest

from minigpt.pipeline import load_recipe, run_recipe

RECIPES = sorted(Path("recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_shipped_recipe_validates(recipe, tmp_path):
    _, planned = load_recipe(recipe, overrides=[f"output_dir={tmp_path / 'run'}"])
    assert planned and planned[0].entry.kind == "tokenizer"
    plan = run_recipe(recipe, dry_run=True, console=False, overrides=[f"output_dir={tmp_path / 'run'}"])
    assert all(action == "run" for _, action, _ in plan["plan"])


def test_tictactoe_recipe_is_the_default_demo():
    makefile = Path("Makefile").read_text()
    assert "RECIPE ?= recipes/tictactoe.yaml" in makefile
