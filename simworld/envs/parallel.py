"""PettingZoo Parallel form of :class:`~simworld.envs.aec.SimworldAEC`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pettingzoo.utils.conversions import turn_based_aec_to_parallel_wrapper

from simworld.envs.aec import SimworldAEC


class SimworldParallel(turn_based_aec_to_parallel_wrapper):
    """Parallel API over the AEC game. Turn order is part of the protocol: there are no
    simultaneous moves. Each `step(actions)` applies only the action of the role whose turn it is
    (``infos[role]["active_agent"]`` names it); the other roles' actions are ignored. A missing
    action for the active role, or `actions` that is not a dict, is an invalid move. `step` before
    `reset` raises a one-line :class:`~simworld.errors.SimworldError`; once the episode is over it
    returns empty dicts."""

    def step(self, actions: Any) -> tuple[dict, dict, dict, dict, dict]:
        self.aec_env.session.require_episode()  # before reset the wrapper has no `agents` yet
        if not self.agents:
            return {}, {}, {}, {}, {}
        current = self.aec_env.agent_selection
        action = actions.get(current) if isinstance(actions, Mapping) else None
        return super().step({current: action})


def make_parallel_env(scenario: Any, **kwargs: Any) -> SimworldParallel:
    """Parallel environment of a scenario (path, Scenario or dict); kwargs go to SimworldAEC."""
    return SimworldParallel(SimworldAEC(scenario, **kwargs))
