"""Gymnasium and PettingZoo environments over the episode engine.

* :class:`ToolUseEnv`: one role as a Gymnasium env, the other roles played inside it by their
  agents; registered as ``simworld/ToolUse-v0`` (``gymnasium.make("simworld/ToolUse-v0",
  scenario="scenarios/...yaml")`` works once ``simworld`` has been imported, in either order).
* :class:`SimworldAEC`: PettingZoo AEC env whose agents are the scenario's roles.
* :func:`make_parallel_env`: its PettingZoo Parallel form (turn-based; only the active role's
  action is applied).

An action is text as a Llama 3 model emits its turn, or a Message; garbage is an invalid move.
"""

from simworld import register_gymnasium_envs
from simworld.envs.aec import SimworldAEC
from simworld.envs.gym_env import ToolUseEnv
from simworld.envs.parallel import SimworldParallel, make_parallel_env
from simworld.envs.session import EpisodeSession, printable, render_messages, role_rewards

__all__ = ["EpisodeSession", "SimworldAEC", "SimworldParallel", "ToolUseEnv", "make_parallel_env", "printable",
           "render_messages", "role_rewards"]

register_gymnasium_envs()
