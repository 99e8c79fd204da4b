"""Scorers: plain registered functions over stored trajectories (see :mod:`simworld.scoring.base`).

Importing this package registers the built-in scorers (`simworld.registry.load_builtins` does).
"""

from simworld.scoring import builtin  # noqa: F401  (registers the built-in scorers)
from simworld.scoring.base import Score, ScoringContext, role_kinds, score_trajectory, summary_value

__all__ = ["Score", "ScoringContext", "role_kinds", "score_trajectory", "summary_value"]
