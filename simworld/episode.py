"""The episode engine: one turn-based conversation over a world, recorded as a Trajectory.

Every front end drives this one engine: the batch runner (`run_episode`), the PettingZoo AEC and
Parallel environments, and the Gymnasium single-role environment.

Turn rules
----------
* Only the current role acts. Its action is a Message or text (parsed as a Llama 3 turn).
* A message with tool calls: each call runs against the world (errors are results); the same
  role acts again and sees the results, unless a tool ends the turn or the episode.
* A message without tool calls passes the turn to the next role (scenario order, starting with
  `first_speaker`; worlds may override `next_speaker`).
* A role of kind `user` ends the episode by including ``###STOP###``. It can only speak when the
  assistant has handed over the turn, so no tool call is ever left pending when it stops.
* An unparseable action is an invalid move: recorded, answered with an error notice to the same
  role, counted. `max_turns` bounds the number of actions. Garbage of any type is an invalid move,
  never an exception (even an object whose ``repr`` raises). An invalid move did not happen in the
  conversation: no other role sees it or its notice (:mod:`simworld.perspective`), so none reacts
  to it, and only its maker's view and sample hold it.
* A Llama 3 special token (``<|eot_id|>``, ``<|start_header_id|>``, ...), or anything shaped like
  another template's control token (``<|im_end|>``, ``<|eot|>``, ``<|foo|>``), in an action's text, a
  tool name or an argument makes it an invalid move, whatever the role and whether the action is
  text or a Message (text may still carry the structural ``<|python_tag|>`` and end tokens that
  :mod:`simworld.llama3.parse` accepts). An invalid move is recorded with its text and reason
  written so that they hold no special token (:func:`~simworld.llama3.parse.escape_special_tokens`),
  so that no role's later prompt holds a forged turn.
"""

from __future__ import annotations

import re
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

import simworld
from simworld import registry
from simworld.agent import Agent, View
from simworld.llama3.parse import ParseError, escape_special_tokens, parse_assistant_turn, special_token_problem
from simworld.perspective import perspective
from simworld.scenario import Scenario, _memo, apply_variation
from simworld.task import TaskInstance
from simworld.types import Message, Outcome, Provenance, ToolCall, Trajectory, argument_problem, text_problem
from simworld.world import World

STOP = "###STOP###"


class AgentFailure(Exception):
    """An agent could not produce a turn (e.g. a model still failing after retries).

    The episode is recorded as failed with this reason; a resumed run retries it.
    """


@dataclass(frozen=True)
class EpisodeSpec:
    """What one episode depends on besides the scenario.

    `seed` seeds the episode's agents and tools. `task_seed`, when set (a scenario with
    ``repeats`` > 1), seeds the task and was used to draw the variation instead: the episodes of a
    group share it, so they retry the same task. None means `seed` does both.
    """

    episode_id: str
    index: int
    seed: int
    variation: dict[str, Any] = field(default_factory=dict)
    task_seed: int | None = None


def episode_seed(run_seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(run_seed) & 0xFFFFFFFFFFFFFFFF, int(index)]).generate_state(1, np.uint64)[0] >> 1)


def episode_id(name: str, run_seed: int, index: int) -> str:
    """The id of episode `index` of a run of scenario `name` with seed `run_seed`."""
    return f"{name}-s{run_seed}-{index:06d}"


def episode_specs(sc: Scenario, episodes: int | None = None, seed: int | None = None,
                  start: int = 0, *, legacy_draw: bool = False) -> list[EpisodeSpec]:
    """The independent episode specs of a run: ids, seeds and drawn variations.

    With ``sc.repeats`` = K > 1, episode i belongs to task group i // K: its task and variation
    come from the seed of the group's first episode (`task_seed`), its agents and tools from its
    own seed. With K = 1 every episode is its own group (and `task_seed` stays None).

    Each variation path draws its value from its own stream (:func:`draw_variation`), so a path
    that ``--set`` removes or overrides leaves every other path's draws as they were.
    `legacy_draw`: draw as runs of manifest format ``simworld.run/1`` did, one stream walking the
    sorted paths (:func:`draw_variation_legacy`), to resume those runs as they began.
    """
    n = sc.episodes if episodes is None else episodes
    run_seed = sc.seed if seed is None else seed
    repeats = sc.repeats
    draw = draw_variation_legacy if legacy_draw else draw_variation
    out = []
    for i in range(start, start + n):
        s = episode_seed(run_seed, i)
        task_seed = s if repeats == 1 else episode_seed(run_seed, i - i % repeats)
        out.append(EpisodeSpec(episode_id=episode_id(sc.name, run_seed, i), index=i, seed=s,
                               variation=draw(sc.variations, task_seed) if sc.variations else {},
                               task_seed=None if repeats == 1 else task_seed))
    return out


def draw_variation(variations: dict[str, list[Any]], task_seed: int) -> dict[str, Any]:
    """One value per path, each uniformly from the generator of ``SeedSequence([task_seed, 1,
    crc32(path)])`` (the path's UTF-8 bytes; a hash that is the same in every process)."""
    out: dict[str, Any] = {}
    for path in sorted(variations):
        values = variations[path]
        key = zlib.crc32(path.encode("utf-8", "surrogatepass"))
        rng = np.random.default_rng(np.random.SeedSequence([task_seed, 1, key]))
        out[path] = values[int(rng.integers(len(values)))]
    return out


def draw_variation_legacy(variations: dict[str, list[Any]], task_seed: int) -> dict[str, Any]:
    """The draw of manifest format ``simworld.run/1``: one generator, ``SeedSequence([task_seed,
    1])``, walks the sorted paths (removing a path re-draws every later one)."""
    rng = np.random.default_rng(np.random.SeedSequence([task_seed, 1]))
    out: dict[str, Any] = {}
    for path in sorted(variations):
        values = variations[path]
        out[path] = values[int(rng.integers(len(values)))]
    return out


def make_agent(sc: Scenario, role: str, rng: np.random.Generator) -> Agent:
    spec = sc.roles[role].agent
    cls = registry.get_agent(spec.type)
    params = cls.Params.model_validate(spec.model_dump())
    return cls(params, role, rng)


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def output_stated(required: str, text: str) -> bool:
    """Is `required` stated in `text`? Numbers match by value (1,234.5 == $1234.50)."""
    try:
        value = float(required.replace(",", "").replace("$", ""))
    except ValueError:
        return required.lower() in text.lower()
    for m in _NUMBER.finditer(text):
        try:
            if abs(float(m.group().replace(",", "")) - value) < 0.005:
                return True
        except ValueError:
            continue
    return False


def _world_and_task(sc: Scenario) -> tuple[World, Any]:
    """The world and task generator of a (varied) scenario: validated once, shared by its episodes."""
    world_cls: type[World] = registry.get_world(sc.world.type)
    world_seed = sc.world.seed if sc.world.seed is not None else sc.seed
    world = world_cls.load(sc.world.params, world_seed)
    task_cls = registry.get_task(sc.world.type, sc.task.type)
    return world, task_cls(task_cls.Params.model_validate(sc.task.params))


def unrecordable(msg: Message) -> str | None:
    """Why `msg` could not be written to a trajectory line exactly, or None. Agents and models can
    produce text with lone surrogates, integers beyond 64 bits, NaN or infinity, or nesting deeper
    than a JSON writer takes; none of them may stop a run or change in the record."""
    problem = text_problem(msg.content, "content")
    if problem is not None:
        return problem
    for call in msg.tool_calls:
        problem = text_problem(call.name, "the tool name") or argument_problem(call.arguments, call.name)
        if problem is not None:
            return problem
    return None


def _shown_action(action: Any) -> str:
    """The start of `action`'s repr, or its type's name when repr fails (raises, recurses)."""
    try:
        return repr(action)[:500]
    except Exception:  # noqa: BLE001 - any __repr__ of any garbage: the action is refused either way
        return f"<{type(action).__name__} object>"


def _storable_text(text: str) -> str:
    """`text` with lone surrogates replaced (U+FFFD), so the invalid move can be recorded."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


class Episode:
    """A running episode. Build it, then alternate `view(current)` / `step(action)` until `done`."""

    def __init__(self, scenario: Scenario, spec: EpisodeSpec, agents: dict[str, Agent] | None = None,
                 make_agents: bool = True) -> None:
        self.started = time.perf_counter()
        self.base_scenario = scenario
        self.spec = spec
        self.sc = sc = apply_variation(scenario, spec.variation)
        ss = np.random.SeedSequence(spec.seed)
        task_ss, tool_ss, *agent_ss = ss.spawn(2 + len(sc.roles))
        if spec.task_seed is not None:
            task_ss = np.random.SeedSequence(spec.task_seed).spawn(1)[0]  # what episode task_seed's own would be
        self.world, generator = _memo(sc, "world+task", lambda: _world_and_task(sc))
        self.state = self.world.new_state()
        self.task: TaskInstance = generator.sample(self.world, self.state, np.random.default_rng(task_ss))
        self.tool_rng = np.random.default_rng(tool_ss)
        self.roles = sc.role_order()
        self.agent_rngs = {role: np.random.default_rng(s) for role, s in zip(sc.roles, agent_ss)}
        if agents is not None:
            self.agents = dict(agents)
        elif make_agents:
            self.agents = {role: make_agent(sc, role, self.agent_rngs[role]) for role in sc.roles}
        else:
            self.agents = {}
        self.events: list[Message] = []
        self.current = sc.first_speaker
        self.turns = 0
        self.done = False
        self.termination = ""
        self.error: str | None = None
        self.invalid_moves = 0
        self.tool_errors = 0
        self.system = {role: self._system_prompt(role) for role in sc.roles}
        self._tools = {role: self.world.tool_specs(spec_.tools) for role, spec_ in sc.roles.items()}
        self._allowed = {role: frozenset(spec_.tools) for role, spec_ in sc.roles.items()}
        self._persp: dict[str, tuple[int, list[Message]]] = {}

    # -- prompts and views
    def _system_prompt(self, role: str) -> str:
        spec = self.sc.roles[role]
        parts = [spec.system_prompt.strip() or self.world.default_system_prompt(spec.kind, tuple(spec.tools))]
        if spec.persona.strip():
            parts.append("Persona: " + spec.persona.strip())
        brief = self.task.private_for(role, spec.kind).get("brief")
        if brief:
            parts.append(str(brief).strip())
        return "\n\n".join(p for p in parts if p)

    def view(self, role: str | None = None) -> View:
        role = role or self.current
        spec = self.sc.roles[role]
        return View(role=role, kind=spec.kind, system=self.system[role], tools=self._tools[role],
                    private=self.task.private_for(role, spec.kind), persona=spec.persona, turn=self.turns,
                    max_turns=self.sc.max_turns, episode=self, task=self.task)

    def perspective(self, role: str, with_system: bool = True) -> list[Message]:
        cached = self._persp.get(role)
        if cached is not None and cached[0] == len(self.events):
            return cached[1]
        msgs = perspective(self.events, role, self.system[role] if with_system else None)
        self._persp[role] = (len(self.events), msgs)
        return msgs

    def tools_of(self, role: str) -> list[Any]:
        return self._tools[role]

    # -- stepping
    def _coerce(self, action: Any) -> Message:
        if isinstance(action, Message):
            return action
        if isinstance(action, str):
            try:
                return parse_assistant_turn(action)
            except ParseError as exc:
                return Message(role="assistant", content=action, invalid=str(exc))
        if isinstance(action, dict):
            try:
                return Message.model_validate(action)
            except Exception as exc:  # a garbage dict is an invalid move, not a crash
                return Message(role="assistant", content=_shown_action(action),
                               invalid=f"malformed message: {exc}"[:300])
        return Message(role="assistant", content=_shown_action(action),
                       invalid=f"an action must be text or a Message, not {type(action).__name__}")

    def step(self, action: Any) -> None:
        """Apply the current role's action. Never raises for a bad action."""
        if self.done:
            return
        role = self.current
        kind = self.sc.roles[role].kind
        msg = self._coerce(action)
        problem = unrecordable(msg)
        if problem is not None:  # kept as an invalid move the record can hold, never a dead run
            msg = Message(role="assistant", content=_storable_text(msg.content),
                          invalid=f"the action cannot be recorded: {problem}")
        elif not msg.invalid and not isinstance(action, str) and (problem := special_token_problem(msg)) is not None:
            # (text was parsed, and the parser refuses the same tokens)
            msg = Message(role="assistant", content=msg.content, invalid=problem)
        if msg.invalid:  # its text and reason reach prompts (this role's, the others'): no forged structure
            msg = msg.model_copy(update={"content": escape_special_tokens(msg.content),
                                         "invalid": escape_special_tokens(msg.invalid)})
        # Call ids are per-episode and deterministic, whatever the agent sent.
        n = len(self.events)
        calls = [ToolCall(id=f"call_{n}_{k}", name=c.name, arguments=c.arguments)
                 for k, c in enumerate(msg.tool_calls)]
        msg = Message(role="user" if kind == "user" else "assistant", content=msg.content, tool_calls=calls,
                     speaker=role, invalid=msg.invalid)
        self.turns += 1
        self.events.append(msg)
        if msg.invalid:
            self.invalid_moves += 1
            self.events.append(Message(role="user", speaker="world", audience=role,
                                       content=f"Error: invalid action: {msg.invalid}"))
        elif msg.tool_calls:
            self._run_calls(role, msg.tool_calls)
        elif kind == "user" and STOP in msg.content:
            self._finish("user_stop")
        elif not msg.content.strip():
            self.invalid_moves += 1
            self.events.append(Message(role="user", speaker="world", audience=role,
                                       content="Error: invalid action: empty turn"))
        else:
            self.current = self.world.next_speaker(self.state, role, self.roles)
        if not self.done and self.turns >= self.sc.max_turns:
            self._finish("max_turns")

    def _run_calls(self, role: str, calls: list[ToolCall]) -> None:
        end_turn = False
        for call in calls:
            if call.name not in self._allowed[role]:
                from simworld.errors import suggest

                hint = suggest(call.name, self._allowed[role])
                content = f"Error: tool {call.name!r} is not available{hint}"
                self.events.append(Message(role="tool", speaker=role, audience=role, tool_call_id=call.id,
                                           name=call.name, content=content, error=True))
                self.tool_errors += 1
                continue
            result = self.world.call(self.state, call, self.tool_rng, caller=role)
            self.events.append(Message(role="tool", speaker=role, audience=role, tool_call_id=call.id,
                                       name=call.name, content=result.content, error=result.error))
            if result.error:
                self.tool_errors += 1
            for target, text in result.notices:
                self.events.append(Message(role="user", speaker="world", audience=target, content=text))
            if result.end_episode:
                self._finish(result.end_episode)
                return
            end_turn = end_turn or result.end_turn
        if end_turn:
            self.current = self.world.next_speaker(self.state, role, self.roles)

    def _finish(self, termination: str) -> None:
        self.done = True
        self.termination = termination

    def fail(self, reason: str) -> None:
        """End the episode as failed (an agent could not act)."""
        self.error = reason
        self._finish("error")

    # -- result
    def outcome(self, final_hash: str | None = None, expected_hash: str | None = None) -> Outcome:
        expected = self.task.expected_state
        state_match = None
        diff = []
        if expected is not None:
            final_hash = final_hash or self.state.state_hash()
            state_match = final_hash == (expected_hash or expected.state_hash())
            if not state_match:
                diff = self.state.diff(expected, self.world.row_label)
        said = "\n".join(e.content for e in self.events
                         if e.role == "assistant" and self.sc.roles.get(e.speaker) is not None
                         and self.sc.roles[e.speaker].kind == "assistant" and not e.invalid)
        missing = [r for r in self.task.required_outputs if not self.world.output_stated(r, said)]
        outputs_stated = not missing if self.task.required_outputs else None
        success = self.error is None and state_match is not False and not missing
        out = Outcome(success=success, termination=self.termination, state_match=state_match, diff=diff,
                      outputs_stated=outputs_stated, missing_outputs=missing, error=self.error,
                      invalid_moves=self.invalid_moves, tool_errors=self.tool_errors)
        return self.world.finalize_outcome(self, out)

    def trajectory(self) -> Trajectory:
        sc = self.sc
        duration = time.perf_counter() - self.started
        models = {role: p for role, a in self.agents.items() if (p := a.provenance())}
        task = self.task.record()
        final_hash = self.state.state_hash()
        return Trajectory(
            episode_id=self.spec.episode_id,
            scenario=self.base_scenario.name,
            scenario_hash=self.base_scenario.content_hash,
            seed=self.spec.seed,
            task_seed=self.spec.task_seed,
            episode_index=self.spec.index,
            variation=self.spec.variation,
            agents={role: spec.agent.model_dump() for role, spec in sc.roles.items()},
            world=orjson.loads(_memo(sc, "world record", lambda: orjson.dumps({
                "type": sc.world.type, "version": type(self.world).version,
                "params": self.world.params.model_dump(mode="json"),
                "seed": self.world.seed, "fingerprint": self.world.data.fingerprint}))),
            task=task,
            system=self.system,
            tools={role: list(spec.tools) for role, spec in sc.roles.items()},
            events=self.events,
            final_state_hash=final_hash,
            outcome=self.outcome(final_hash, task.expected_state_hash or None),
            provenance=Provenance(
                simworld_version=simworld.__version__,
                agent_ids={role: a.agent_id for role, a in self.agents.items()},
                models=models,
                timings={"duration_s": round(duration, 6)},
            ),
        )


async def run_episode(scenario: Scenario, spec: EpisodeSpec, agents: dict[str, Agent] | None = None) -> Trajectory:
    """Run one episode to the end with the scenario's agents (or `agents`)."""
    return await continue_episode(Episode(scenario, spec, agents=agents))


async def continue_episode(ep: Episode) -> Trajectory:
    """Let the episode's agents act until it ends, from wherever it is (a replayed prefix, for a fork)."""
    while not ep.done:
        role = ep.current
        try:
            action = await ep.agents[role].act(ep.view(role))
        except AgentFailure as exc:
            ep.fail(str(exc) or type(exc).__name__)
            break
        ep.step(action)
    return ep.trajectory()


def run_episode_sync(scenario: Scenario, spec: EpisodeSpec, agents: dict[str, Agent] | None = None) -> Trajectory:
    """`run_episode` for agents that never really await (scripted): no event loop needed."""
    coro = run_episode(scenario, spec, agents)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    import asyncio

    return asyncio.run(run_episode(scenario, spec, agents))
