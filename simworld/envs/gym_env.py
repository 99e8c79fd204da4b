"""Gymnasium environment for one role of a scenario; the other roles are played by their agents."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym

from simworld.envs.session import MAX_ACTION_CHARS, RENDER_FPS, EpisodeSession
from simworld.episode import AgentFailure
from simworld.errors import SimworldError, suggest
from simworld.types import Trajectory


class ToolUseEnv(gym.Env):
    """One role of a scenario as a Gymnasium environment (registered as ``simworld/ToolUse-v0``).

    ``gymnasium.make("simworld/ToolUse-v0", scenario="scenarios/retail/cancel_pending_order.yaml")``
    or ``simworld.make_env(scenario, role=...)``. `scenario` is a path, a
    :class:`~simworld.scenario.Scenario` or a dict; `role` defaults to the first role of kind
    ``assistant``. The other roles act inside `step` with the scenario's own agents (scripted
    agents synchronously; agents that await, such as LLM agents, on a private event loop) until
    it is `role`'s turn again or the episode ends.

    * **Action**: text exactly as a Llama 3 model emits its turn (plain text, or a JSON tool call
      ``{"name": ..., "parameters": {...}}``), or a :class:`~simworld.types.Message`. Garbage of any
      type is an invalid move with an error in the next observation, never an exception.
    * **Observation**: ``Dict`` of printable ``Text`` fields ``system``, ``tools``,
      ``conversation``, ``last`` (see :mod:`simworld.envs.session`).
    * **Reward**: 0 until the episode ends, then the role's utility where the world reports one
      (negotiation) or 1.0 if the task succeeded. `terminated` when the episode ends, `truncated`
      when it reaches `max_turns`. `info` holds the turn, invalid moves, tool errors, the role whose
      turn it is and, at the end, the outcome.
    * ``reset(seed=S)`` plays episode 0 of run seed S (as ``simworld run --seed S`` draws it today;
      a run recorded as ``simworld.run/1`` drew variations another way: pass its spec); ``reset()``
      the next episode; ``options={"episode": i}`` episode i (an unknown option key raises
      :class:`~simworld.errors.SimworldError`).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": RENDER_FPS}

    def __init__(self, scenario: Any = None, role: str | None = None, render_mode: str | None = None,
                 max_chars: Mapping[str, int] | None = None, max_action_chars: int = MAX_ACTION_CHARS) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise SimworldError(f"render_mode must be one of {self.metadata['render_modes']}, not {render_mode!r}")
        self.render_mode = render_mode
        self.session = EpisodeSession(scenario, max_chars, max_action_chars)
        self.scenario = sc = self.session.scenario
        if role is None:
            role = next((r for r, spec in sc.roles.items() if spec.kind == "assistant"), next(iter(sc.roles)))
        elif role not in sc.roles:
            raise SimworldError(f"scenario {sc.name!r} has no role {role!r}{suggest(str(role), sc.roles)} "
                                f"(roles: {', '.join(sc.roles)})")
        self.role = role
        self.observation_space = self.session.observation_space()
        self.action_space = self.session.action_space()

    @property
    def episode(self) -> Any:
        """The running :class:`~simworld.episode.Episode` (None before the first reset)."""
        return self.session.episode

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, str], dict[str, Any]]:
        super().reset(seed=seed)
        self.session.start(seed, options)
        self._play_others()
        return self.session.observe(self.role), self.session.info()

    def step(self, action: Any) -> tuple[dict[str, str], float, bool, bool, dict[str, Any]]:
        ep = self.session.require_episode()
        if not ep.done:
            self.session.step(action)
            self._play_others()
        reward = self.session.rewards()[self.role] if ep.done else 0.0
        truncated = ep.done and ep.termination == "max_turns"
        return self.session.observe(self.role), reward, ep.done and not truncated, truncated, self.session.info()

    def _play_others(self) -> None:
        ep = self.session.episode
        while not ep.done and ep.current != self.role:
            try:
                action = self.session.agent_action()
            except AgentFailure as exc:
                self.session.fail(str(exc) or type(exc).__name__)
                return
            self.session.step(action)

    def agent_action(self) -> Any:
        """What the scenario's own agent for `role` would do now (a teacher or baseline action).
        Passing it to `step` keeps the role's agent id in the trajectory's provenance."""
        return self.session.agent_action()

    def trajectory(self) -> Trajectory:
        """The episode's trajectory so far (`role` is recorded as `external` unless it only ever
        took `agent_action()`)."""
        return self.session.trajectory()

    def render(self) -> str | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; use render_mode='ansi'")
            return None
        return self.session.render_text()

    def close(self) -> None:
        self.session.close()
        super().close()
