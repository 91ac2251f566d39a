"""A model folder's greedy answers, kept by its evaluation and read back by the on-policy generators.

A recipe evaluates every stage's folder (the 4,520-position sweep and the exhaustive check, greedily), and the
next stage's on-policy generators (``tictactoe_dpo_onpolicy``, ``tictactoe_rl_onpolicy``) start by asking the
same folder the same positions greedily again: ~20-35 s per stage on a 2-core CPU for answers that are
already known. The evaluation writes them to ``greedy_answers.json`` in the folder, and a generator loading
that folder starts its player's greedy cache from them.

The file is only used for the exact inputs it was made from: a digest of the files ``from_pretrained`` reads
for the model and the tokenizer (weights, configs, tokenizer files, chat template), the answer length limit,
and the device kind (a GPU's kernels may round differently). A folder retrained in place, or a generator
asking with another ``max_new_tokens``, gets none of them and generates as before. Greedy answers are a
function of the board (the player's own cache rests on that, tested against one ``generate`` per board), so
reading them changes which boards are generated, never an answer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minigpt.errors import ConfigError

if TYPE_CHECKING:
    from minigpt.tasks.tictactoe.player import ModelPlayer

ANSWERS_FILE = "greedy_answers.json"
FORMAT = 1
# What from_pretrained reads for the model and its tokenizer; the files a stage or an evaluation adds later
# (stage.json, task_eval.json, the model card, this file) are not among them and do not change the digest.
_MODEL_FILES = ("config.json", "generation_config.json")
_MODEL_PREFIXES = ("tokenizer", "special_tokens_map", "added_tokens", "vocab", "merges", "chat_template")


def _inputs(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and (p.suffix == ".safetensors" or p.name in _MODEL_FILES or p.name.startswith(_MODEL_PREFIXES))
    )


def answers_key(folder: Path, player: ModelPlayer) -> dict[str, Any]:
    """What the greedy answers of ``player`` (loaded from ``folder``) depend on."""
    from minigpt.data.sources import hash_files

    device = next(player.model.parameters()).device.type
    return {
        "files": hash_files(_inputs(folder), folder),
        "max_new_tokens": player.max_new_tokens,
        "device": device,
    }


def save_greedy_answers(player: ModelPlayer, folder: str | Path) -> Path | None:
    """Write the greedy answers ``player`` has made so far to ``folder``/greedy_answers.json; None (nothing
    written) when the player samples or ``folder`` is not a local folder this process may write to (a
    read-only model is evaluated all the same, only its next reader generates its answers again)."""
    from minigpt.checkpoints import write_json_atomic

    folder = Path(folder)
    answers = player.greedy_answers()
    if player.sampling or not answers or not folder.is_dir() or not os.access(folder, os.W_OK):
        return None
    path = folder / ANSWERS_FILE
    write_json_atomic(path, {"format": FORMAT, "key": answers_key(folder, player), "answers": answers})
    return path


def load_greedy_answers(player: ModelPlayer, folder: str | Path) -> int:
    """Start ``player``'s greedy cache from ``folder``/greedy_answers.json when it was made from the same
    inputs (module docstring); the number of answers taken (0 without a matching file). A file that is not
    what this module writes is an error naming it (delete it: it is only a cache)."""
    from minigpt.checkpoints import read_json_file

    path = Path(folder) / ANSWERS_FILE
    if player.sampling or not path.is_file():
        return 0
    data = read_json_file(path, "file of greedy answers")
    answers = data.get("answers")
    if data.get("format") != FORMAT or not isinstance(answers, dict):
        raise ConfigError(
            f"{path}: not a file of greedy answers (format {FORMAT}); delete it, it is only a cache"
        )
    if data.get("key") != answers_key(Path(folder), player):
        return 0
    bad = next((k for k, v in answers.items() if not isinstance(v, str)), None)
    if bad is not None:
        raise ConfigError(
            f"{path}: answers.{bad}: expected the answer's text; delete the file, it is only a cache"
        )
    player.add_greedy_answers(answers)
    return len(answers)
