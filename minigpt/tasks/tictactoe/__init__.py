"""Tic-tac-toe, the built-in task: rules, solver, prompt format, data generators, rewards, arena, play.

Importing this package registers the generators (``tictactoe_sft``, ``tictactoe_dpo``,
``tictactoe_dpo_onpolicy``, ``tictactoe_rl``, ``tictactoe_rl_onpolicy``, ``tictactoe_games``) and rewards
(``tictactoe_shaped``, ``tictactoe_solver``, ``tictactoe_format``).
"""

from minigpt.tasks.tictactoe import (  # noqa: F401  (imported for registration)
    generators,
    onpolicy_pairs,
    onpolicy_prompts,
    rewards,
)
from minigpt.tasks.tictactoe.arena import (
    Agent,
    MinimaxAgent,
    MixedAgent,
    RandomAgent,
    exhaustive_check,
    play_match,
)
from minigpt.tasks.tictactoe.engine import all_positions, legal_moves, play, side_to_move, winner
from minigpt.tasks.tictactoe.evaluate import (
    evaluate_checkpoint,
    evaluate_player,
    exact_reference,
    format_report,
    wilson_interval,
)
from minigpt.tasks.tictactoe.format import ParseFailure, ParseResult, build_prompt, format_answer, parse_move
from minigpt.tasks.tictactoe.play import play_checkpoint, play_terminal
from minigpt.tasks.tictactoe.player import NO_MOVE, ModelPlayer, load_player
from minigpt.tasks.tictactoe.solver import move_values, optimal_moves

__all__ = [
    "NO_MOVE",
    "Agent",
    "MinimaxAgent",
    "MixedAgent",
    "ModelPlayer",
    "ParseFailure",
    "ParseResult",
    "RandomAgent",
    "all_positions",
    "build_prompt",
    "evaluate_checkpoint",
    "evaluate_player",
    "exact_reference",
    "exhaustive_check",
    "format_answer",
    "format_report",
    "legal_moves",
    "load_player",
    "move_values",
    "optimal_moves",
    "parse_move",
    "play",
    "play_checkpoint",
    "play_match",
    "play_terminal",
    "side_to_move",
    "wilson_interval",
    "winner",
]
