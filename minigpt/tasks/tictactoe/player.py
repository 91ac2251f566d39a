"""A checkpoint as a tic-tac-toe agent: chat-template prompt, batched generation, strict parsing.

torch and transformers are imported inside the functions so that importing the task package (which the
plugin loader does for every registry lookup) stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minigpt.errors import ModelError
from minigpt.tasks.tictactoe.format import ParseFailure, ParseResult, build_prompt, parse_move, to_failure

# What ``move`` returns when the model's answer is unparseable or illegal; never a cell, so a caller
# cannot mistake it for a move. The detailed answer is available from ``answer``/``answers``.
NO_MOVE = -1


@dataclass(frozen=True)
class MoveAnswer:
    board: str
    completion: str
    result: ParseResult


class ModelPlayer:
    """Agent backed by a causal LM folder. Greedy by default; ``sampling=True`` samples at ``temperature``
    with the global torch RNG reseeded from ``seed`` and a call counter before each batch (reproducible)."""

    name = "model"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        sampling: bool = False,
        temperature: float = 1.0,
        seed: int = 0,
        batch_size: int = 256,
        max_new_tokens: int = 64,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.sampling, self.temperature, self.seed = sampling, temperature, seed
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self._calls = 0
        self._greedy_cache: dict[str, str] = {}
        stop = [tokenizer.eos_token_id]
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
            stop.append(im_end)
        self.stop_ids = [t for t in dict.fromkeys(stop) if t is not None]
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        # Left padding keeps every prompt's last token at the end, where generation continues.
        tokenizer.padding_side = "left"

    def prompt_texts(self, boards: Sequence[str]) -> list[str]:
        return [
            self.tokenizer.apply_chat_template(build_prompt(b), add_generation_prompt=True, tokenize=False)
            for b in boards
        ]

    def completions(self, boards: Sequence[str]) -> list[str]:
        """Raw decoded completions (special tokens stripped), in batches of ``batch_size``.

        Greedy answers are cached per board: an evaluation asks about the same positions many times (the
        4,520-position sweep, then games and the exhaustive check), and greedy decoding is a function of the
        board. Sampled answers are never cached."""
        if self.sampling:
            return self._generate(boards)
        missing = list(dict.fromkeys(b for b in boards if b not in self._greedy_cache))
        if missing:
            self._greedy_cache.update(zip(missing, self._generate(missing), strict=True))
        return [self._greedy_cache[b] for b in boards]

    def greedy_answers(self) -> dict[str, str]:
        """The greedy answers made so far, per board (a copy)."""
        return dict(self._greedy_cache)

    def add_greedy_answers(self, answers: dict[str, str]) -> None:
        """Greedy answers made earlier by this same model (greedy_answers.py checks that), so that asking
        those boards again generates nothing."""
        self._greedy_cache.update(answers)

    def _generate(self, boards: Sequence[str]) -> list[str]:
        import torch

        out: list[str] = []
        device = next(self.model.parameters()).device
        for start in range(0, len(boards), self.batch_size):
            texts = self.prompt_texts(boards[start : start + self.batch_size])
            # The chat template already wrote every special token it wants; do not add a BOS again.
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
                device
            )
            kwargs: dict[str, Any] = {"do_sample": self.sampling}
            if self.sampling:
                torch.manual_seed(self.seed + self._calls)
                kwargs.update(temperature=self.temperature, top_k=0, top_p=1.0)
            self._calls += 1
            with torch.inference_mode():
                generated = self.model.generate(
                    **enc,
                    max_new_tokens=self.max_new_tokens,
                    eos_token_id=self.stop_ids,
                    pad_token_id=self.tokenizer.pad_token_id,
                    # a model being trained has its KV cache turned off (transformers' Trainer does so)
                    use_cache=True,
                    **kwargs,
                )
            new_tokens = generated[:, enc["input_ids"].shape[1] :]
            out.extend(self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        return out

    def answers(self, boards: Sequence[str]) -> list[MoveAnswer]:
        return [
            MoveAnswer(b, text, parse_move(text, b))
            for b, text in zip(boards, self.completions(boards), strict=True)
        ]

    def answer(self, board: str) -> MoveAnswer:
        return self.answers([board])[0]

    def moves(self, boards: Sequence[str]) -> list[int | ParseFailure]:
        results: list[int | ParseFailure] = []
        for a in self.answers(boards):
            failure = to_failure(a.result, a.completion)
            results.append(failure if failure is not None else a.result.move)  # type: ignore[arg-type]
        return results

    def move(self, board: str) -> int:
        """The model's move on ``board``, or ``NO_MOVE`` (-1) when its answer is unparseable or illegal."""
        result = self.answer(board).result
        return result.move if result.ok and result.move is not None else NO_MOVE


def load_player(
    model_dir: str | Path,
    sampling: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
    max_new_tokens: int = 64,
    device: str | None = None,
    trust_remote_code: bool = False,
) -> ModelPlayer:
    """Load a saved model + tokenizer folder as a :class:`ModelPlayer`; a folder shipping its own code
    (``auto_map``) is refused unless ``trust_remote_code``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from minigpt.models.loading import ALLOW_ON_CLI, check_model_folder, remote_code

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: not a model folder (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, trust_remote_code=remote_code(path, trust_remote_code, ALLOW_ON_CLI)
        )
        check_model_folder(path)
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=torch.float32,
            use_safetensors=True,
            trust_remote_code=remote_code(path, trust_remote_code, ALLOW_ON_CLI),
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load model or tokenizer: {exc}") from exc
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"{path}: the tokenizer has no chat template")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    return ModelPlayer(model, tokenizer, sampling, temperature, seed, batch_size, max_new_tokens)
