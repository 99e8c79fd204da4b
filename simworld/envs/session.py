"""What the Gymnasium and PettingZoo environments share: one scenario, its episodes, the spaces.

An :class:`EpisodeSession` loads a scenario once and starts engine episodes
(:class:`simworld.episode.Episode`) from seeds; it renders each role's observation as a ``Dict``
of printable ``Text`` fields, turns outcomes into per-role rewards, and drives the scenario's own
agents (async ``act``) without an event loop when they never await.
"""

from __future__ import annotations

import asyncio
import dis
import json
import math
import os
import re
import string
import threading
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from gymnasium import spaces

from simworld.agent import Agent
from simworld.episode import Episode, EpisodeSpec, episode_specs
from simworld.errors import SimworldError, suggest
from simworld.llama3.format import render_messages as render_llama3
from simworld.llama3.format import render_tool_calls
from simworld.scenario import Scenario, load_scenario, scenario_from_data
from simworld.types import Message, Outcome, Trajectory

CHARSET = string.printable
OBSERVATION_FIELDS = ("system", "tools", "conversation", "last", "prompt")
"""Observation keys: the role's system prompt, its tools (JSON list of OpenAI-style function
specs), the conversation so far from its perspective, what it was told since it last acted, and
the Llama 3.1 prompt of its next turn (system message with tool definitions, the conversation,
an open assistant header: feed it to a model and step with the completion)."""

MAX_CHARS: dict[str, int] = {"system": 16_384, "tools": 65_536, "conversation": 65_536, "last": 16_384,
                             "prompt": 131_072}
"""Default length limits of the observation fields (characters). Longer text is truncated:
`conversation`, `last` and `prompt` keep their end, `system` and `tools` their start, with a
`[...]` mark. `EpisodeSession.prompt` gives the exact prompt, neither cut nor made printable."""

MAX_ACTION_CHARS = 4_096
"""Length limit of the `Text` action space (what `sample()` draws); longer actions are accepted."""

RENDER_FPS = 4
"""``metadata["render_fps"]`` of the envs: their only render mode is ``ansi`` (text, returned, never
shown), so the value only answers the checkers that ask for one."""

EXTERNAL = "external"
"""`provenance.agent_ids` entry of a role whose actions came from outside the scenario's agent."""

TRUNCATED = "[...]"

# Typographic characters with an obvious ASCII spelling; NFKD handles accents, ligatures and '…'.
_ASCII_SPELLING = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201c": '"', "\u201d": '"',
                                 "\u201e": '"', "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u00a0": " ",
                                 "\u2022": "*", "\u20ac": "EUR"})
_NOT_PRINTABLE = re.compile("[^" + re.escape(CHARSET) + "]")


def printable(text: str) -> str:
    """`text` in `string.printable`: accents stripped, typographic marks spelt in ASCII, other
    characters replaced by '?'. Deterministic, so equal text always gives equal observations."""
    if text.isascii() and _NOT_PRINTABLE.search(text) is None:
        return text
    text = unicodedata.normalize("NFKD", text.translate(_ASCII_SPELLING))
    return _NOT_PRINTABLE.sub(lambda m: "" if unicodedata.combining(m.group()) else "?", text)


def fit(text: str, limit: int, keep_end: bool) -> str:
    """`text` cut to at most `limit` characters (at least 7), marking the cut with `[...]`."""
    if len(text) <= limit:
        return text
    room = limit - len(TRUNCATED) - 1
    return TRUNCATED + "\n" + text[-room:] if keep_end else text[:room] + "\n" + TRUNCATED


def render_messages(messages: Sequence[Message]) -> str:
    """One role's perspective as plain text: a ``[role]`` header line per message, blank-line separated.

    Tool results are headed ``[tool NAME]``; tool calls appear in Meta's Llama 3.1 JSON encoding,
    which is also a valid action.
    """
    blocks = []
    for m in messages:
        if m.role == "system":
            continue
        head = f"[tool {m.name}]" if m.role == "tool" else f"[{m.role}]"
        body = m.content
        if m.tool_calls:
            body = (body + "\n" if body else "") + render_tool_calls(m.tool_calls)
        blocks.append(head + "\n" + body)
    return "\n\n".join(blocks)


def load_any_scenario(scenario: Any) -> Scenario:
    """A validated Scenario from a path, a `Scenario` or a dict. Raises SimworldError otherwise."""
    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, (str, os.PathLike)):
        return load_scenario(scenario)
    if isinstance(scenario, Mapping):
        return scenario_from_data(dict(scenario))
    if scenario is None:
        raise SimworldError("no scenario given: pass scenario='scenarios/....yaml', a Scenario or a dict")
    raise SimworldError(f"scenario must be a path, a Scenario or a dict, not {type(scenario).__name__}")


def role_rewards(sc: Scenario, outcome: Outcome) -> dict[str, float]:
    """Each role's reward for a finished episode.

    A world that reports per-role utilities (``outcome.metrics["utilities"] = {role: u}``, e.g. a
    negotiation) gives each role its utility; otherwise the episode is cooperative and every role
    gets 1.0 when it succeeded, else 0.0. Non-finite values become 0.0.
    """
    utilities = outcome.metrics.get("utilities")
    if isinstance(utilities, Mapping):
        raw = {role: utilities.get(role, 0.0) for role in sc.roles}
    else:
        raw = dict.fromkeys(sc.roles, 1.0 if outcome.success else 0.0)
    out = {}
    for role, value in raw.items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = 0.0
        out[role] = value if math.isfinite(value) else 0.0
    return out


# ----------------------------------------------------------------------------------------------
# Driving async agents from synchronous env code

_AWAIT_OPS = frozenset({"GET_AWAITABLE", "GET_AITER", "GET_ANEXT", "BEFORE_ASYNC_WITH", "SEND", "YIELD_FROM",
                        "YIELD_VALUE"})


@lru_cache(maxsize=None)
def never_awaits(act: Callable[..., Any]) -> bool:
    """True if the coroutine function's own body contains no await (nor async for/with).

    Such a coroutine finishes on its first `send(None)`, so it runs without an event loop. Anything
    that awaits (an LLM agent, a scripted agent awaiting a helper) runs on a private event loop.
    """
    code = getattr(act, "__code__", None)
    return code is not None and not any(ins.opname in _AWAIT_OPS for ins in dis.get_instructions(code))


class AgentDriver:
    """Runs `agent.act(view)` to completion from synchronous code.

    Agents whose `act` never awaits are driven directly (no event loop). Others run on one private
    event loop in a daemon thread, kept for the driver's lifetime so that clients bound to a loop
    (litellm's HTTP sessions) stay valid across turns, and so that it works even when the calling
    thread already runs an event loop (a notebook).
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def act(self, agent: Agent, view: Any) -> Any:
        if never_awaits(type(agent).act):
            coro = agent.act(view)
            try:
                coro.send(None)
            except StopIteration as stop:
                return stop.value
            coro.close()  # cannot happen without an await; refuse rather than hang
            raise RuntimeError(f"{type(agent).__name__}.act suspended without awaiting")
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="simworld-agents", daemon=True)
            self._thread.start()
        return asyncio.run_coroutine_threadsafe(agent.act(view), self._loop).result()

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()


# ----------------------------------------------------------------------------------------------


RESET_OPTIONS = ("episode", "spec")
"""The keys of ``reset(options=...)``: ``episode`` (an index of the run seed's episodes) or ``spec``
(an :class:`~simworld.episode.EpisodeSpec`)."""

# PettingZoo's api_test and parallel_api_test call reset(seed=0, options={"options": 1}) to check the
# signature: a probe, not a request, so it must not fail the conformance test.
_PETTINGZOO_PROBE = "options"


def check_reset_options(options: Any) -> Mapping[str, Any]:
    """`options` of a reset, checked: None or a mapping of RESET_OPTIONS keys; raises SimworldError
    naming an unknown key (with the nearest accepted one) or a value that is no mapping."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise SimworldError(f"reset(options=...) must be a dict, not {type(options).__name__}")
    for key in options:
        if key not in RESET_OPTIONS and key != _PETTINGZOO_PROBE:
            raise SimworldError(f"reset(options=...): unknown option {key!r}{suggest(str(key), RESET_OPTIONS)} "
                                f"(accepted: {', '.join(map(repr, RESET_OPTIONS))})")
    return options


class EpisodeSession:
    """A scenario and its current engine episode, as the environments see it.

    Episodes are numbered like a run's: `start(seed=S)` begins episode 0 of run seed S (the same
    spec as episode 0 of ``simworld run --seed S``, with the per-path variation draw; an episode of
    a run recorded as ``simworld.run/1`` is played by passing its spec, from
    ``episode_specs(..., legacy_draw=True)``); `start()` without a seed continues with the
    next index (starting from the scenario's own seed). ``options={"episode": i}`` picks index i,
    ``options={"spec": EpisodeSpec(...)}`` a spec directly; any other key raises SimworldError
    (a misspelt key would otherwise play another episode than the one asked for), except
    ``"options"``, the key PettingZoo's ``api_test`` passes to check that reset takes options.
    """

    def __init__(self, scenario: Any, max_chars: Mapping[str, int] | None = None,
                 max_action_chars: int = MAX_ACTION_CHARS) -> None:
        self.scenario = load_any_scenario(scenario)
        self.roles = list(self.scenario.roles)
        limits = dict(MAX_CHARS)
        for key, value in (max_chars or {}).items():
            if key not in limits:
                raise SimworldError(f"max_chars: unknown observation field {key!r}{suggest(key, limits)}")
            if not isinstance(value, int) or value < len(TRUNCATED) + 2:
                raise SimworldError(f"max_chars[{key!r}] must be an integer of at least {len(TRUNCATED) + 2}")
            limits[key] = value
        self.max_chars = limits
        if not isinstance(max_action_chars, int) or max_action_chars < 1:
            raise SimworldError("max_action_chars must be a positive integer")
        self.max_action_chars = max_action_chars
        self.run_seed = self.scenario.seed
        self.next_index = 0
        self.episode: Episode | None = None
        self.external: set[str] = set()
        self.driver = AgentDriver()
        self._suggested: tuple[str, Any] | None = None
        self._outcome: Outcome | None = None
        self._system_text: dict[str, str] = {}
        self._tools_text: dict[str, str] = {}
        self._obs_cache: dict[str, tuple[int, dict[str, str]]] = {}

    # -- spaces
    def observation_space(self) -> spaces.Dict:
        return spaces.Dict({key: spaces.Text(max_length=self.max_chars[key], min_length=0, charset=CHARSET)
                            for key in OBSERVATION_FIELDS})

    def action_space(self) -> spaces.Text:
        return spaces.Text(max_length=self.max_action_chars, min_length=0, charset=CHARSET)

    # -- episodes
    def start(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> Episode:
        options = check_reset_options(options)
        spec = options.get("spec")
        if spec is not None and not isinstance(spec, EpisodeSpec):
            raise SimworldError(f"options['spec'] must be an EpisodeSpec, not {type(spec).__name__}")
        if spec is None:
            if seed is not None:
                if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
                    raise SimworldError(f"seed must be an integer, not {seed!r}")
                self.run_seed = int(seed)
                self.next_index = 0
            index = options.get("episode", self.next_index)
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise SimworldError(f"options['episode'] must be a non-negative integer, not {index!r}")
            spec = episode_specs(self.scenario, 1, seed=self.run_seed, start=index)[0]
            self.next_index = index + 1
        self.close_episode()
        self.episode = ep = Episode(self.scenario, spec)
        self.external = set()
        self._system_text = {role: fit(printable(ep.system[role]), self.max_chars["system"], keep_end=False)
                             for role in self.roles}
        self._tools_text = {role: fit(json.dumps([t.openai() for t in ep.tools_of(role)], ensure_ascii=True),
                                      self.max_chars["tools"], keep_end=False) for role in self.roles}
        return ep

    def close_episode(self) -> None:
        self.episode = None
        self._suggested = None
        self._outcome = None
        self._obs_cache.clear()

    def require_episode(self) -> Episode:
        """The current episode; a one-line SimworldError before the first `start` (an env's `reset`)."""
        if self.episode is None:
            raise SimworldError("the environment has no episode: call reset() first")
        return self.episode

    def step(self, action: Any) -> None:
        """Apply the current role's action (any object: the engine makes garbage an invalid move)."""
        ep = self.require_episode()
        role = ep.current
        suggested, self._suggested = self._suggested, None
        if ep.done:
            return
        if suggested is None or suggested[0] != role or suggested[1] is not action:
            self.external.add(role)
        ep.step(action)

    def agent_action(self) -> Any:
        """The action the scenario's own agent takes as the current role (advancing that agent).

        Passing exactly this object to `step` records the role as played by its scenario agent;
        any other action marks the role `external` in the trajectory's provenance. Raises
        :class:`~simworld.episode.AgentFailure` when the agent cannot act.
        """
        ep = self.require_episode()
        role = ep.current
        if ep.done:
            raise SimworldError("the episode is over: no role is to act")
        action = self.driver.act(ep.agents[role], ep.view(role))
        self._suggested = (role, action)
        return action

    def fail(self, reason: str) -> None:
        """End the episode as failed (the current role's agent could not act); no-op once over."""
        ep = self.require_episode()
        if not ep.done:
            ep.fail(reason)

    def outcome(self) -> Outcome:
        """The episode's outcome (computed once, when the episode is over)."""
        ep = self.require_episode()
        if not ep.done:
            return ep.outcome()
        if self._outcome is None:
            self._outcome = ep.outcome()
        return self._outcome

    def rewards(self) -> dict[str, float]:
        return role_rewards(self.scenario, self.outcome())

    def trajectory(self) -> Trajectory:
        """The episode's trajectory; roles acted for from outside are marked `external`."""
        traj = self.require_episode().trajectory()
        if self.external:
            prov = traj.provenance
            ids = {r: (EXTERNAL if r in self.external else a) for r, a in prov.agent_ids.items()}
            models = {r: m for r, m in prov.models.items() if r not in self.external}
            traj = traj.model_copy(update={"provenance": prov.model_copy(update={"agent_ids": ids, "models": models})})
        return traj

    # -- observations
    def observe(self, role: str) -> dict[str, str]:
        """`role`'s observation (a new dict each call): every value lies in `observation_space()`."""
        ep = self.require_episode()
        cached = self._obs_cache.get(role)
        if cached is None or cached[0] != len(ep.events):
            messages = ep.perspective(role)
            body = [m for m in messages if m.role != "system"]
            own = [i for i, m in enumerate(body) if m.role == "assistant"]
            since = body[own[-1] + 1:] if own else body
            obs = {
                "system": self._system_text[role],
                "tools": self._tools_text[role],
                "conversation": fit(printable(render_messages(body)), self.max_chars["conversation"], keep_end=True),
                "last": fit(printable(render_messages(since)), self.max_chars["last"], keep_end=True),
                "prompt": fit(printable(self._prompt(ep, role, messages)), self.max_chars["prompt"], keep_end=True),
            }
            cached = (len(ep.events), obs)
            self._obs_cache[role] = cached
        return dict(cached[1])

    @staticmethod
    def _prompt(ep: Episode, role: str, messages: Sequence[Message]) -> str:
        return render_llama3(messages, ep.tools_of(role), ep.sc.today, add_generation_prompt=True)

    def prompt(self, role: str) -> str:
        """The exact Llama 3.1 prompt of `role`'s next turn (not truncated, not made printable)."""
        ep = self.require_episode()
        return self._prompt(ep, role, ep.perspective(role))

    def info(self) -> dict[str, Any]:
        """Step information shared by every role (a new dict each call)."""
        ep = self.require_episode()
        info: dict[str, Any] = {"episode_id": ep.spec.episode_id, "active_agent": ep.current, "turn": ep.turns,
                                "invalid_moves": ep.invalid_moves, "tool_errors": ep.tool_errors}
        if ep.done:
            info["termination"] = ep.termination
            info["outcome"] = self.outcome().model_dump(mode="json")
        return info

    def render_text(self) -> str:
        """The global event log as a person reads it (every role, tool calls and results), made
        printable as the observations are: escape and control characters that the actions or tool
        results hold reach no terminal (they show as '?')."""
        ep = self.require_episode()
        lines = [f"episode {ep.spec.episode_id}  turn {ep.turns}/{ep.sc.max_turns}"
                 + (f"  done: {ep.termination}" if ep.done else f"  next: {ep.current}")]
        for e in ep.events:
            if e.role == "tool":
                lines.append(f"  {e.speaker} <- {e.name}: {e.content}")
            elif e.speaker == "world":
                lines.append(f"[world -> {e.audience or 'all'}] {e.content}")
            else:
                text = e.content
                if e.tool_calls:
                    text = (text + " " if text else "") + render_tool_calls(e.tool_calls)
                lines.append(f"[{e.speaker}] {text}" + (f"  (invalid: {e.invalid})" if e.invalid else ""))
        if ep.done:
            out = self.outcome()
            lines.append(f"outcome: success={out.success} state_match={out.state_match} "
                         f"invalid_moves={out.invalid_moves} tool_errors={out.tool_errors}")
        return printable("\n".join(lines) + "\n")

    def close(self) -> None:
        self.close_episode()
        self.driver.close()
