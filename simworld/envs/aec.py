"""PettingZoo AEC environment over the episode engine: the agents are the scenario's roles."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gymnasium import logger, spaces
from pettingzoo import AECEnv

from simworld.envs.session import MAX_ACTION_CHARS, RENDER_FPS, EpisodeSession
from simworld.errors import SimworldError
from simworld.types import Trajectory


class SimworldAEC(AECEnv):
    """A scenario as a PettingZoo AEC game whose agents are its roles.

    `agent_selection` is the engine's current role: turn order is the scenario's protocol (a role
    that calls tools acts again to see the results; a text turn hands over), so one role may act
    several times in a row.

    * **Action**: text exactly as a Llama 3 model emits its turn (plain text, or a JSON tool call
      such as ``{"name": "get_order_details", "parameters": {"order_id": "#W0001"}}``), or a
      structured :class:`~simworld.types.Message`. Anything else (malformed JSON, None, bytes, a
      number) is an invalid move: recorded, answered with an error in the role's next observation,
      counted in ``infos[role]["invalid_moves"]``; never an exception. A terminated agent's action
      is ignored (PettingZoo expects None). `step` before `reset`, or once every agent is done and
      removed, raises a one-line :class:`~simworld.errors.SimworldError`.
    * **Observation** of a role: a ``Dict`` of ``Text(charset=string.printable)`` fields ``system``,
      ``tools`` (JSON list of function specs), ``conversation`` (its perspective so far) and
      ``last`` (what it was told since it last acted); see :mod:`simworld.envs.session`.
    * **Rewards** arrive when the episode ends: each role's utility where the world reports
      per-role utilities (negotiation), else 1.0 for every role when the task succeeded.
      `terminations` are set when the episode ends (a user stop, a tool ending it, a failure);
      `truncations` when it hits `max_turns`.
    * ``reset(seed=S)`` plays episode 0 of run seed S (the spec ``simworld run --seed S`` gives
      episode 0 today; a run recorded as ``simworld.run/1`` drew variations another way: pass its
      spec); ``reset()`` the next episode; ``options={"episode": i}`` episode i (an unknown
      option key raises :class:`~simworld.errors.SimworldError`).

    `episode` is the running engine episode; `trajectory()` its record. `agent_action()` is what
    the scenario's own agent would do now, for baselines, teachers and mixed play.
    """

    metadata = {"render_modes": ["ansi"], "name": "simworld_v0", "is_parallelizable": True, "render_fps": RENDER_FPS}

    def __init__(self, scenario: Any, render_mode: str | None = None, max_chars: Mapping[str, int] | None = None,
                 max_action_chars: int = MAX_ACTION_CHARS) -> None:
        super().__init__()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise SimworldError(f"render_mode must be one of {self.metadata['render_modes']}, not {render_mode!r}")
        self.render_mode = render_mode
        self.session = EpisodeSession(scenario, max_chars, max_action_chars)
        self.scenario = self.session.scenario
        self.possible_agents = list(self.session.roles)
        self.agents = []
        self._observation_spaces = {role: self.session.observation_space() for role in self.possible_agents}
        self._action_spaces = {role: self.session.action_space() for role in self.possible_agents}
        self.rewards, self._cumulative_rewards, self.terminations, self.truncations, self.infos = {}, {}, {}, {}, {}
        self.agent_selection = self.possible_agents[0]

    def observation_space(self, agent: str) -> spaces.Dict:
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Text:
        return self._action_spaces[agent]

    @property
    def episode(self) -> Any:
        """The running :class:`~simworld.episode.Episode` (None before the first reset)."""
        return self.session.episode

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        ep = self.session.start(seed, options)
        self.agents = list(self.possible_agents)
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.agent_selection = ep.current
        self._sync()

    def observe(self, agent: str) -> dict[str, str]:
        return self.session.observe(agent)

    def step(self, action: Any) -> None:
        """Apply `action` for `agent_selection` (None for a done agent, which is then removed).
        Raises SimworldError before `reset` and once every agent is done and removed."""
        self.session.require_episode()
        if not self.agents:
            raise SimworldError("the episode is over and every agent is done: call reset() first")
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(None)
            return
        self._cumulative_rewards[agent] = 0.0
        self.session.step(action)
        ep = self.session.episode
        if not ep.done:
            self.agent_selection = ep.current
        self._sync()

    def _sync(self) -> None:
        """Mirror the engine: rewards, done flags and infos (dead agents stay selected until stepped)."""
        ep = self.session.episode
        self.rewards = dict.fromkeys(self.agents, 0.0)
        if ep.done:
            truncated = ep.termination == "max_turns"
            final = self.session.rewards()
            for role in self.agents:
                self.rewards[role] = final[role]
                self.terminations[role] = not truncated
                self.truncations[role] = truncated
        self.infos = {role: self.session.info() for role in self.agents}
        self._accumulate_rewards()

    def agent_action(self) -> Any:
        """The scenario agent's action for `agent_selection` (pass it to `step`). Raises
        :class:`~simworld.episode.AgentFailure` when it cannot act: then call `fail(reason)`."""
        return self.session.agent_action()

    def fail(self, reason: str) -> None:
        """End the episode as failed (an agent could not act): every role is terminated."""
        if not self.session.require_episode().done:
            self.session.fail(reason)
            self._sync()

    def trajectory(self) -> Trajectory:
        """The episode's trajectory so far (complete once every agent is done)."""
        return self.session.trajectory()

    def render(self) -> str | None:
        if self.render_mode is None:
            logger.warn("render() called without a render_mode; use SimworldAEC(..., render_mode='ansi')")
            return None
        return self.session.render_text()

    def close(self) -> None:
        self.session.close()
