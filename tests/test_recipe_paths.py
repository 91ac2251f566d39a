"""Relative paths follow one rule (relative to the file that names them; --set values to the working
directory), and a recipe's stage keys do not depend on how its paths are spelled."""

import os
import shutil
from pathlib import Path

import pytest
import yaml
from support import SMALL

from minigpt.data.mixture_config import load_mixture
from minigpt.errors import ConfigError
from minigpt.pipeline import read_manifest, run_recipe
from minigpt.recipe_plan import load_recipe
from minigpt.stages.stage_config import load_stage_config


def _write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _project(tmp_path: Path, lm_data: dict[str, Path]) -> Path:
    """proj/{data,recipes,recipes/stages}, proj/linkdata -> data, tmp/link -> proj, tmp/elsewhere."""
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    shutil.copy(lm_data["text"], proj / "data" / "text.jsonl")
    shutil.copy(lm_data["conv"], proj / "data" / "conv.jsonl")
    mixture = {
        "name": "m",
        "stage": "sft",
        "schema": "conversations",
        "sources": [{"name": "c", "path": "conv.jsonl"}],
    }
    _write(proj / "data" / "mix.yaml", mixture)
    (proj / "linkdata").symlink_to(proj / "data", target_is_directory=True)
    (tmp_path / "link").symlink_to(proj, target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    return proj


def _recipe(proj: Path, name: str, spell: dict[str, str]) -> Path:
    """The same three-stage recipe; ``spell`` picks how each path in it is written."""
    _write(
        proj / "recipes" / "stages" / spell["sft_file"],
        {
            "stage": "sft",
            "model": {"init": spell["sft_init"]},
            "data": {"data_config": spell["mixture"], "max_length": 64},
            "train": {"max_steps": 2},
        },
    )
    recipe = {
        "name": "r",
        "output_dir": spell["output_dir"],
        "seed": 3,
        "defaults": {
            "model": {"overrides": SMALL},
            "train": {"batch_size": 8, "lr": 3e-3, "log_interval": 1},
        },
        "stages": [
            {
                "name": "tokenizer",
                "kind": "tokenizer",
                "config": {"files": spell["tokenizer_files"], "vocab_size": 400, "min_frequency": 1},
            },
            {
                "name": "pretrain",
                "config": {
                    "stage": "pretrain",
                    "model": {"init": "tiny"},
                    "data": {"train": spell["pretrain_train"], "max_length": 64},
                    "train": {"max_steps": 2},
                },
            },
            {"name": "sft", "config": spell["sft_config"]},
        ],
    }
    return _write(proj / "recipes" / name, recipe)


PLAIN = {
    "output_dir": "../runs/r",
    "tokenizer_files": ["../data/text.jsonl", "../data/conv.jsonl"],
    "pretrain_train": ["../data/text.jsonl"],
    "sft_config": "stages/sft.yaml",
    "sft_file": "sft.yaml",
    "sft_init": "../../runs/r/pretrain",
    "mixture": "../../data/mix.yaml",
}


def _odd(proj: Path) -> dict[str, str]:
    """PLAIN's paths spelled otherwise: ./, x/../x, trailing slashes, absolute, a symlinked folder."""
    return {
        "output_dir": "./../runs/./r/",
        "tokenizer_files": ["../data/../data/text.jsonl", str(proj / "data" / "conv.jsonl")],
        "pretrain_train": "../linkdata/text.jsonl",  # a lone string: a one-item list
        "sft_config": "./stages/../stages/sft2.yaml",
        "sft_file": "sft2.yaml",
        "sft_init": "../../runs/r/pretrain/",
        "mixture": "../../linkdata/mix.yaml",
    }


def test_stage_keys_do_not_depend_on_how_paths_are_spelled(tmp_path, lm_data, monkeypatch):
    proj = _project(tmp_path, lm_data)
    _recipe(proj, "r.yaml", PLAIN)
    _recipe(proj, "r2.yaml", _odd(proj))
    link, elsewhere = tmp_path / "link", tmp_path / "elsewhere"
    spellings = [  # (working directory, recipe path)
        (proj, "recipes/r.yaml"),
        (proj, str(proj / "recipes" / "r.yaml")),
        (proj, "./recipes/r.yaml"),
        (proj, "recipes/../recipes/r.yaml"),
        (proj, "../link/recipes/r.yaml"),
        (link / "recipes", "r.yaml"),
        (proj / "recipes", "r.yaml"),
        (elsewhere, "../proj/recipes/r.yaml"),
        (proj, "recipes/r2.yaml"),  # the same recipe, its own paths spelled otherwise
        (elsewhere, str(link / "recipes" / "r2.yaml")),
    ]

    def plan(cwd: Path, recipe: str) -> tuple[str, list[str], list[str]]:
        monkeypatch.chdir(cwd)
        result = run_recipe(recipe, dry_run=True, console=False)
        keys = [p.key for p in load_recipe(recipe)[1]]
        return result["run_dir"], keys, [action for _, action, _ in result["plan"]]

    run_dir, keys, actions = plan(*spellings[0])
    assert run_dir == str((proj / "runs" / "r").resolve()) and actions == ["run"] * 3
    for cwd, recipe in spellings[1:]:
        assert plan(cwd, recipe) == (run_dir, keys, actions), (cwd, recipe)

    monkeypatch.chdir(proj)
    done = run_recipe("recipes/r.yaml", console=False)
    assert [a for _, a, _ in done["plan"]] == ["run"] * 3
    assert [s["key"] for s in read_manifest(Path(run_dir))["stages"].values()] == keys
    for cwd, recipe in spellings:
        assert plan(cwd, recipe) == (run_dir, keys, ["skip"] * 3), (cwd, recipe)


def test_relative_paths_are_relative_to_the_file_that_names_them(tmp_path, lm_data, monkeypatch):
    proj = _project(tmp_path, lm_data)
    path = _recipe(proj, "r.yaml", PLAIN)
    recipe = yaml.safe_load(path.read_text())
    recipe["defaults"]["data"] = {"prepared_dir": "../prepared"}  # defaults: the recipe file
    recipe["stages"][1]["set"] = ["data.validation=[../data/conv.jsonl]"]  # a stage's set: the recipe file
    _write(path, recipe)
    monkeypatch.chdir(tmp_path / "elsewhere")  # the working directory plays no part
    loaded, planned = load_recipe(path)
    tokenizer, pretrain, sft = (p.config for p in planned)
    data = proj / "data"
    assert loaded.output_dir == str(proj / "runs" / "r")  # the recipe's output_dir: the recipe file
    assert tokenizer.files == [str(data / "text.jsonl"), str(data / "conv.jsonl")]
    assert tokenizer.output_dir == str(proj / "runs" / "r" / "tokenizer")
    assert pretrain.data.train == [str(data / "text.jsonl")]  # inline stage config: the recipe file
    assert pretrain.data.validation == [str(data / "conv.jsonl")]
    assert pretrain.data.prepared_dir == sft.data.prepared_dir == str(proj / "prepared")
    assert pretrain.model.init == "tiny"  # a preset stays a name
    # a stage config file's own paths: that file (proj/recipes/stages/sft.yaml)
    assert sft.data.data_config == str(data / "mix.yaml")
    assert sft.model.init == str(proj / "runs" / "r" / "pretrain")
    # a mixture's sources: the mixture file
    assert load_mixture(data / "mix.yaml").sources[0].path == str(data / "conv.jsonl")
    # a stage config used alone (minigpt train --config): paths in it, output_dir too, are relative to it
    alone = load_stage_config(proj / "recipes" / "stages" / "sft.yaml", ["output_dir=out"])
    assert alone.data.data_config == str(data / "mix.yaml")
    _write(
        proj / "recipes" / "stages" / "own.yaml",
        {**yaml.safe_load((proj / "recipes/stages/sft.yaml").read_text()), "output_dir": "o"},
    )
    assert load_stage_config(proj / "recipes" / "stages" / "own.yaml").output_dir == str(
        proj / "recipes" / "stages" / "o"
    )


def test_command_line_paths_are_relative_to_the_working_directory(tmp_path, lm_data, monkeypatch):
    proj = _project(tmp_path, lm_data)
    path = _recipe(proj, "r.yaml", PLAIN)
    elsewhere = tmp_path / "elsewhere"
    _write(elsewhere / "mine.yaml", {"stage": "sft", "data": {"train": ["conv.jsonl"]}})
    monkeypatch.chdir(elsewhere)
    sets = [
        "output_dir=out",
        "stages.1.config.data.train=[local.jsonl]",
        "stages.1.set=['data.validation=[val.jsonl]']",
        "stages.2.config=mine.yaml",  # a stage config file named on the command line: the working directory
    ]
    loaded, planned = load_recipe(path, sets)
    assert loaded.output_dir == str(elsewhere / "out")
    pretrain, sft = planned[1].config, planned[2].config
    assert pretrain.data.train == [str(elsewhere / "local.jsonl")]
    assert pretrain.data.validation == [str(elsewhere / "val.jsonl")]
    assert sft.data.train == [str(elsewhere / "conv.jsonl")]  # mine.yaml's own path: mine.yaml's folder
    # paths the command line did not touch keep the file's rule
    assert planned[0].config.files[0] == str(proj / "data" / "text.jsonl")
    # minigpt train --config FILE --set ...: FILE and the --set values from the working directory
    stage = load_stage_config(
        "../proj/recipes/stages/sft.yaml", ["data.train=[local.jsonl]", "output_dir=o/"]
    )
    assert stage.data.train == [str(elsewhere / "local.jsonl")] and stage.output_dir == str(elsewhere / "o")
    assert stage.data.data_config == str(proj / "data" / "mix.yaml")
    # without output_dir, a recipe runs in runs/<name> under the working directory
    recipe = yaml.safe_load(path.read_text())
    del recipe["output_dir"]
    loaded, _ = load_recipe(_write(proj / "recipes" / "no_out.yaml", recipe))
    assert loaded.output_dir == str(elsewhere / "runs" / "r")


def test_a_path_that_exists_only_from_the_working_directory_is_refused(tmp_path, lm_data, monkeypatch):
    """No fallback: a path written for the working directory names the file, line and the spelling to use."""
    proj = _project(tmp_path, lm_data)
    path = _recipe(proj, "r.yaml", {**PLAIN, "pretrain_train": ["data/text.jsonl"]})
    monkeypatch.chdir(proj)  # data/text.jsonl exists from here, not beside the recipe
    line = next(
        i + 1 for i, text in enumerate(path.read_text().splitlines()) if text.strip() == "- data/text.jsonl"
    )
    with pytest.raises(
        ConfigError,
        match=rf"r\.yaml:{line}: stages\.1\.config\.data\.train\.0 'data/text\.jsonl'.*write '\.\./data/text\.jsonl'",
    ):
        load_recipe(path)
    # a name-or-path field too: loaded as a hub id, it would be found from the working directory again
    (proj / "base-model").mkdir()
    stage = _write(
        proj / "recipes" / "stages" / "sft.yaml",
        {"stage": "sft", "model": {"init": "base-model"}, "data": {"train": ["../../data/conv.jsonl"]}},
    )
    line = next(i + 1 for i, text in enumerate(stage.read_text().splitlines()) if "init:" in text)
    with pytest.raises(
        ConfigError, match=rf"sft\.yaml:{line}: model\.init 'base-model'.*write '\.\./\.\./base-model'"
    ):
        load_stage_config(proj / "recipes" / "stages" / "sft.yaml")
    # spelled as a path, or a hub id that is no folder, it is taken as written
    _write(
        proj / "recipes" / "stages" / "sft.yaml",
        {"stage": "sft", "model": {"init": "./m", "tokenizer": "org/name"}, "data": {"train": ["x.jsonl"]}},
    )
    cfg = load_stage_config(proj / "recipes" / "stages" / "sft.yaml", ["output_dir=o"])
    assert cfg.model.init == str(proj / "recipes" / "stages" / "m") and cfg.model.tokenizer == "org/name"


@pytest.mark.parametrize("recipe", sorted(Path("recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_recipes_plan_the_same_keys_from_any_working_directory(recipe, tmp_path, monkeypatch):
    out = f"output_dir={tmp_path / 'run'}"
    keys = [p.key for p in load_recipe(recipe, [out])[1]]
    absolute = recipe.resolve()
    monkeypatch.chdir(tmp_path)
    assert [p.key for p in load_recipe(absolute, [out])[1]] == keys
    assert [p.key for p in load_recipe(os.path.relpath(absolute), [out])[1]] == keys
