"""Every scenario passes Gymnasium's and PettingZoo's own conformance checkers.

Parametrized over every file in ``scenarios/**/*.yaml`` plus two built-in scenarios: the core's
ledger world (a user and a tool-using clerk) and a tiny bargaining world defined here (two
tool-using parties, per-role utilities, non-ASCII text, an agent that really awaits).
Warnings from the checkers fail the test unless they are inherent to text spaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import warnings
from pathlib import Path
from typing import Annotated, Any

import gymnasium
import numpy as np
import orjson
import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, seed_test
from pydantic import BaseModel, ConfigDict, Field

import ledger_world
import simworld
from simworld.agent import Agent, AgentParams
from simworld.envs import SimworldAEC, ToolUseEnv, make_parallel_env
from simworld.envs.session import load_any_scenario
from simworld.episode import AgentFailure, episode_specs, run_episode_sync
from simworld.registry import register_agent, register_task, register_world
from simworld.task import TaskGenerator, TaskInstance
from simworld.types import Message, ToolCall, strip_timings
from simworld.world import Table, ToolContext, ToolError, World, WorldData

ROOT = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------------------------
# A tiny bargaining world: split a pie by offers and an accept, utilities per party.


class PieParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slices: int = Field(default=10, ge=2)


@register_world("envtest_pie")
class PieWorld(World):
    Params = PieParams

    @classmethod
    def build(cls, params: PieParams, rng: np.random.Generator) -> WorldData:
        return WorldData({"pie": Table("pie", {"slices": np.array([params.slices], dtype=np.int64)})})

    def finalize_outcome(self, episode: Any, outcome: Any) -> Any:
        slices = int(self.data.tables["pie"]["slices"][0])
        deal = episode.state.vars.get("deal")
        utilities = dict.fromkeys(episode.sc.roles, 0.0)
        if deal is not None:
            utilities[deal["proposer"]] = deal["keep"] / slices
            utilities[deal["accepter"]] = (slices - deal["keep"]) / slices
        outcome.success = deal is not None and outcome.error is None
        outcome.metrics = {"agreement": deal is not None, "utilities": utilities}
        return outcome


def _slices(ctx: ToolContext) -> int:
    return int(ctx.state.data.tables["pie"]["slices"][0])


@PieWorld.tool(produces=["offer"], writes=True)
def offer(ctx: ToolContext, keep: Annotated[int, Field(ge=0, description="Slices you keep.")]) -> dict:
    """Offer a split: you keep `keep` slices, the other party gets the rest."""
    if keep > _slices(ctx):
        raise ToolError(f"there are only {_slices(ctx)} slices")
    ctx.state.vars["offer"] = {"by": ctx.caller, "keep": keep}
    ctx.finish_turn()
    return {"keep": keep, "give": _slices(ctx) - keep}


@PieWorld.tool(consumes=["offer"], writes=True)
def accept(ctx: ToolContext) -> str:
    """Accept the other party's offer on the table."""
    on_table = ctx.state.vars.get("offer")
    if on_table is None or on_table["by"] == ctx.caller:
        raise ToolError("no offer from the other party to accept")
    ctx.state.vars["deal"] = {"proposer": on_table["by"], "keep": on_table["keep"], "accepter": ctx.caller}
    ctx.finish_episode("agreement")
    return "Deal."


@register_task("envtest_pie", "split")
class SplitTask(TaskGenerator):
    def sample(self, world: World, state: Any, rng: np.random.Generator) -> TaskInstance:
        slices = int(world.data.tables["pie"]["slices"][0])
        reserve = {"seller": int(rng.integers(1, slices // 2 + 1)), "buyer": int(rng.integers(1, slices // 2 + 1))}
        private = {role: {"reserve": r, "brief": f"Never keep fewer than {r} of {slices} slices."}
                   for role, r in reserve.items()}
        return TaskInstance(type="split", instance_id=f"split-{reserve['seller']}-{reserve['buyer']}",
                            goal={"slices": slices}, private=private, gold_plan=[],
                            expected_state=state.snapshot())


class HagglerParams(AgentParams):
    awaits: bool = False
    as_message: bool = False


@register_agent("envtest_haggler")
class Haggler(Agent):
    """Concedes one slice a round down to its reserve; accepts any offer leaving it its reserve."""

    Params = HagglerParams

    async def act(self, view: Any) -> Message | str:
        if self.params.awaits:
            await asyncio.sleep(0)
        return self.decide(view)

    def decide(self, view: Any) -> Message | str:
        slices = int(view.episode.world.data.tables["pie"]["slices"][0])
        on_table = view.episode.state.vars.get("offer")
        reserve = view.private["reserve"]
        if on_table is not None and on_table["by"] != self.role and slices - on_table["keep"] >= reserve:
            return '{"name": "accept", "parameters": {}}'
        keep = max(slices - 1 - view.turn // 2, reserve)
        line = ["Je propose: je garde {k} parts — d’accord ?", "How about I keep {k}?"][int(self.rng.integers(2))]
        call = ToolCall(id="x", name="offer", arguments={"keep": keep})
        if self.params.as_message:
            return Message(role="assistant", content=line.format(k=keep), tool_calls=[call])
        return orjson.dumps({"name": "offer", "parameters": {"keep": keep}}).decode()


@register_agent("envtest_quitter")
class Quitter(Agent):
    """Fails on its second turn, as an LLM agent whose model keeps failing would."""

    async def act(self, view: Any) -> str:
        if view.turn >= 2:
            raise AgentFailure("model unavailable after 3 retries")
        return "Hello?"


@register_agent("envtest_depositor")
class Depositor(Agent):
    """A ledger customer who asks until the clerk states a balance, then stops."""

    async def act(self, view: Any) -> str:
        amount, account = view.private["amount"], view.private["account"]
        if view.turn > 0 and "balance" in view.messages[-1].content.lower():
            return "Merci ! ###STOP###"
        return f"Bonjour ! Please deposit {amount} into account {account} — d’accord?"


@register_agent("envtest_clerk")
class Clerk(Agent):
    """A ledger clerk that copes with whatever it is told: deposits when it can read a request."""

    async def act(self, view: Any) -> str:
        last = view.messages[-1]
        if last.role == "tool":
            found = re.findall(r'"balance":\s*(\d+)', last.content)
            return f"Done. The balance is now {found[0]}." if found else "Sorry, that did not work."
        numbers = re.findall(r"\d+", last.content)
        if len(numbers) < 2:
            return "Which account, and how much?"
        return orjson.dumps({"name": "deposit", "parameters": {"account": int(numbers[-1]),
                                                               "amount": int(numbers[0])}}).decode()


def ledger_scenario() -> Any:
    return load_any_scenario(ledger_world.scenario_data(roles={
        "user": {"kind": "user", "agent": {"type": "envtest_depositor"}},
        "clerk": {"kind": "assistant", "agent": {"type": "envtest_clerk"}, "tools": ["get_balance", "deposit", "hang_up"],
                  "system_prompt": "You are a bank clerk."}}))


def pie_scenario_data(**overrides: Any) -> dict[str, Any]:
    data = {
        "name": "envtest_pie",
        "world": {"type": "envtest_pie", "params": {"slices": 10}},
        "task": {"type": "split"},
        "first_speaker": "seller",
        "max_turns": 30,
        "roles": {
            "seller": {"kind": "assistant", "agent": {"type": "envtest_haggler", "as_message": True},
                       "tools": ["offer", "accept"], "system_prompt": "You sell half a pie. Ça coûte cher."},
            "buyer": {"kind": "assistant", "agent": {"type": "envtest_haggler", "awaits": True},
                      "tools": ["offer", "accept"]},
        },
    }
    data.update(overrides)
    return data


# ----------------------------------------------------------------------------------------------
# The scenarios under test

YAML_SCENARIOS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "scenarios").glob("**/*.yaml"))
BUILTIN = {"builtin-ledger": ledger_scenario,
           "builtin-pie": pie_scenario_data}
SCENARIO_IDS = list(BUILTIN) + YAML_SCENARIOS


def scenario_source(name: str) -> Any:
    """What an env is built from: a Scenario (ledger), a dict (pie) or a path (YAML files)."""
    return BUILTIN[name]() if name in BUILTIN else str(ROOT / name)


@pytest.fixture(params=SCENARIO_IDS)
def source(request: pytest.FixtureRequest) -> Any:
    return scenario_source(request.param)


# Warnings inherent to text observations/actions and to checking an env outside gymnasium.make.
TEXT_SPACE_WARNINGS = (
    "Observation is not a NumPy array",
    "probably should be gymnasium.spaces.box or gymnasium.spaces.discrete",
    "We recommend agents to be named in the format",
    "Not able to test alternative render modes due to the environment not having a spec",
)


@contextlib.contextmanager
def only_expected_warnings(*extra: str):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    allowed = TEXT_SPACE_WARNINGS + extra
    unexpected = [str(w.message) for w in caught if not any(a in str(w.message) for a in allowed)]
    assert not unexpected, unexpected


def cycles(source: Any) -> int:
    """Enough cycles for random play to reach `max_turns` and the dead steps after it."""
    return load_any_scenario(source).max_turns + 5


def test_suite_sees_every_yaml_scenario():
    found = {str(p.relative_to(ROOT)) for p in ROOT.glob("scenarios/**/*.yaml")}
    assert found == set(YAML_SCENARIOS)


def test_check_env_every_role(source):
    for role in load_any_scenario(source).roles:
        env = ToolUseEnv(source, role=role, render_mode="ansi")
        with only_expected_warnings():
            check_env(env)
        env.close()


def test_check_env_through_gymnasium_make(source):
    env = gymnasium.make(simworld.GYMNASIUM_ENV_ID, scenario=source, render_mode="ansi")
    assert isinstance(env.unwrapped, ToolUseEnv)
    with only_expected_warnings():
        check_env(env.unwrapped)  # with a spec: also re-makes the env per render mode, and closes twice
    with only_expected_warnings("is different from the unwrapped version"):
        check_env(env)
    env.close()


def test_pettingzoo_api_test(source):
    # Shorter random actions than the default space: api_test checks every observation character
    # by character in Python, and 90 turns of 2,000-character garbage make that the whole cost.
    env = SimworldAEC(source, render_mode="ansi", max_action_chars=512)
    with only_expected_warnings():
        api_test(env, num_cycles=cycles(source))
    env.close()


def test_pettingzoo_parallel_api_test(source):
    env = make_parallel_env(source, render_mode="ansi")
    with only_expected_warnings():
        parallel_api_test(env, num_cycles=cycles(source))
    env.close()


def test_pettingzoo_seed_tests(source):
    with only_expected_warnings():
        seed_test(lambda: SimworldAEC(source), num_cycles=cycles(source))
        parallel_seed_test(lambda: make_parallel_env(source), num_cycles=cycles(source))


def play_with_scenario_agents(env: SimworldAEC, seed: int) -> dict[str, float]:
    """Play one episode with the scenario's own agents; each role's total reward as `last()` gave it."""
    env.reset(seed=seed)
    totals = dict.fromkeys(env.possible_agents, 0.0)
    for agent in env.agent_iter():
        _, reward, terminated, truncated, _ = env.last()
        totals[agent] += reward
        if terminated or truncated:
            env.step(None)
            continue
        try:
            action = env.agent_action()
        except AgentFailure as exc:
            env.fail(str(exc))
            continue
        env.step(action)
    return totals


def test_scenario_agents_through_aec_equal_run_episode_sync(source):
    """The AEC env adds nothing to the engine: the scenario's own agents, stepping through it,
    produce exactly the trajectory of the batch runner for the same spec, and each role is paid
    its utility (negotiation) or the shared task success."""
    sc = load_any_scenario(source)
    env = SimworldAEC(source)
    for seed in (0, 7):
        totals = play_with_scenario_agents(env, seed)
        assert env.agents == [] and env.episode.done
        ref = run_episode_sync(sc, episode_specs(sc, 1, seed=seed)[0])
        got = env.trajectory()
        assert orjson.dumps(strip_timings(got.model_dump(mode="json"))) == \
            orjson.dumps(strip_timings(ref.model_dump(mode="json")))
        utilities = ref.outcome.metrics.get("utilities")
        expected = utilities if utilities is not None else dict.fromkeys(sc.roles, float(ref.outcome.success))
        assert totals == pytest.approx(expected)
    env.close()


def test_scenario_agents_through_gym_env_equal_run_episode_sync(source):
    """ToolUseEnv plays the other roles with the same agents; fed its own role's agent actions it
    reproduces the batch runner's trajectory too."""
    sc = load_any_scenario(source)
    for role in sc.roles:
        env = ToolUseEnv(source, role=role)
        env.reset(seed=5)
        done = env.episode.done
        while not done:
            _, _, terminated, truncated, _ = env.step(env.agent_action())
            done = terminated or truncated
        ref = run_episode_sync(sc, episode_specs(sc, 1, seed=5)[0])
        assert strip_timings(env.trajectory().model_dump(mode="json")) == strip_timings(ref.model_dump(mode="json"))
        env.close()
