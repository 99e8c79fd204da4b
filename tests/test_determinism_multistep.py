"""Same seed + same action sequence => identical observations, rewards, flags, infos and
trajectories over whole episodes, for the AEC, Parallel and Gymnasium envs of every scenario.

PettingZoo's `parallel_seed_test` only compares the first step; here every step of several
episodes is compared, with actions drawn from a seeded mix of garbage (random printable text,
None, bytes, numbers, malformed JSON, unknown tools), schema-shaped tool calls, structured
Messages and plain text. Each run uses a fresh env, so state leaking between envs (a shared world
cache written to) or between episodes of one env shows up as a difference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from gymnasium import spaces

from simworld.envs import SimworldAEC, ToolUseEnv, make_parallel_env
from simworld.envs.session import load_any_scenario
from simworld.episode import STOP, Episode, episode_specs
from simworld.types import Message, ToolCall, ToolSpec, Trajectory, strip_timings
from test_env_conformance import SCENARIO_IDS, scenario_source

SEEDS = (0, 1, 2)


class ActionMaker:
    """A seeded stream of actions; the only input is the acting role's tools, so two identical
    envs fed by two makers with the same seed see the same actions."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.garbage = spaces.Text(max_length=600, min_length=0, seed=seed)

    def value(self, schema: dict[str, Any]) -> Any:
        kind = schema.get("type")
        r = self.rng
        if kind == "integer":
            return int(r.integers(-2, 60))
        if kind == "number":
            return float(r.integers(0, 10_000)) / 100
        if kind == "boolean":
            return bool(r.integers(2))
        if kind == "array":
            return [self.value(schema.get("items", {})) for _ in range(int(r.integers(0, 3)))]
        if "enum" in schema:
            return schema["enum"][int(r.integers(len(schema["enum"])))]
        return ["#W0000001", "abc", "", "1", "Zoë", "credit_card_1"][int(r.integers(6))]

    def tool_call(self, tools: list[ToolSpec]) -> dict[str, Any]:
        if not tools or self.rng.random() < 0.1:
            return {"name": "no_such_tool", "parameters": {}}
        tool = tools[int(self.rng.integers(len(tools)))]
        props = tool.parameters.get("properties", {})
        args = {k: self.value(v) for k, v in props.items() if self.rng.random() < 0.9}
        return {"name": tool.name, "parameters": args}

    def next(self, tools: list[ToolSpec], kind: str) -> Any:
        choice = int(self.rng.integers(14))
        if choice <= 2:
            return self.garbage.sample()
        if choice <= 5:
            return orjson.dumps(self.tool_call(tools)).decode()
        if choice == 6:
            call = self.tool_call(tools)
            return Message(role="assistant", content="Checking.",
                           tool_calls=[ToolCall(id="any", name=call["name"], arguments=call["parameters"])])
        if choice == 7:
            return Message(role="assistant", content="Voilà — c’est fait.")
        if choice == 8:
            return ['{"name": "get_order_details", "parameters": ', "<|python_tag|>not json", "", "[]", "{}",
                    "[1, 2]"][int(self.rng.integers(6))]
        if choice == 9:
            return [None, b"\x00bytes", 42, 3.5, ["a list"], {"role": "wizard"}, {"content": 7}][int(self.rng.integers(7))]
        if choice == 10 and kind == "user" and self.rng.random() < 0.3:
            return "Thanks, that's all. " + STOP
        return f"Please go on (step {int(self.rng.integers(1000))})."

    def for_role(self, ep: Episode, role: str) -> Any:
        return self.next(ep.tools_of(role), ep.sc.roles[role].kind)


def traj_bytes(t: Trajectory) -> bytes:
    return orjson.dumps(strip_timings(t.model_dump(mode="json")))


def run_aec(env: SimworldAEC, seed: int) -> tuple[list[Any], bytes, list[Any]]:
    maker = ActionMaker(seed)
    env.reset(seed=seed)
    log, actions = [], []
    for agent in env.agent_iter():
        obs, reward, terminated, truncated, info = env.last()
        log.append((agent, obs, reward, terminated, truncated, info, dict(env.rewards),
                    {r: env.observe(r) for r in env.possible_agents}))
        if terminated or truncated:
            action = None
        else:
            action = maker.for_role(env.episode, agent)
            actions.append(action)
        env.step(action)
    return log, traj_bytes(env.trajectory()), actions


def engine_replay(source: Any, seed: int, actions: list[Any]) -> bytes:
    """The same actions fed straight to the engine: what the envs must reproduce."""
    sc = load_any_scenario(source)
    ep = Episode(sc, episode_specs(sc, 1, seed=seed)[0])
    for action in actions:
        ep.step(action)
    assert ep.done
    traj = ep.trajectory()
    # The env records a role as `external` once it was acted for; a role the episode ended before
    # (an opening walk-away) keeps its scenario agent.
    acted = {e.speaker for e in traj.events if e.role != "tool"} & set(sc.roles)
    ids = {r: "external" if r in acted else a for r, a in traj.provenance.agent_ids.items()}
    prov = traj.provenance.model_copy(update={"agent_ids": ids,
                                              "models": {r: m for r, m in traj.provenance.models.items()
                                                         if r not in acted}})
    return traj_bytes(traj.model_copy(update={"provenance": prov}))


@pytest.fixture(params=SCENARIO_IDS)
def source(request: pytest.FixtureRequest) -> Any:
    return scenario_source(request.param)


def test_aec_whole_episodes_repeat_exactly(source):
    first = {seed: run_aec(SimworldAEC(source), seed) for seed in SEEDS}
    reused = SimworldAEC(source)  # one env across episodes, in another order
    for seed in reversed(SEEDS):
        again = run_aec(reused, seed)
        assert again[0] == first[seed][0]
        assert again[1] == first[seed][1]
    for seed, (log, traj, actions) in first.items():
        fresh = run_aec(SimworldAEC(source), seed)
        assert fresh[0] == log and fresh[1] == traj
        assert engine_replay(source, seed, actions) == traj
    # The action mix really exercised the env: invalid moves, tool calls and several roles.
    trajs = [Trajectory.from_json(first[s][1]) for s in SEEDS]
    assert sum(t.outcome.invalid_moves for t in trajs) > 0
    assert any(e.role == "tool" for t in trajs for e in t.events)
    assert len({e.speaker for t in trajs for e in t.events} & set(load_any_scenario(source).roles)) >= 2


def run_parallel(source: Any, seed: int) -> tuple[list[Any], bytes]:
    env = make_parallel_env(source)
    maker = ActionMaker(seed)
    obs, infos = env.reset(seed=seed)
    log = [(obs, infos)]
    while env.agents:
        active = env.aec_env.agent_selection
        # Every live role sends something; only the active role's action is applied.
        actions = {role: maker.for_role(env.unwrapped.episode, role) for role in env.agents}
        step = env.step(actions)
        log.append((active, step))
    return log, traj_bytes(env.unwrapped.trajectory())


def test_parallel_whole_episodes_repeat_exactly(source):
    for seed in SEEDS:
        assert run_parallel(source, seed) == run_parallel(source, seed)


def run_gym(source: Any, role: str, seed: int) -> tuple[list[Any], bytes]:
    env = ToolUseEnv(source, role=role)
    maker = ActionMaker(seed)
    log = [env.reset(seed=seed)]
    done = env.episode.done
    while not done:
        step = env.step(maker.for_role(env.episode, role))
        log.append(step)
        done = step[2] or step[3]
    traj = traj_bytes(env.trajectory())
    env.close()
    return log, traj


def test_gym_whole_episodes_repeat_exactly(source):
    for role in load_any_scenario(source).roles:
        for seed in SEEDS[:2]:
            assert run_gym(source, role, seed) == run_gym(source, role, seed)
