"""The LLM agent in the shipped scenarios, against scripted models on the test server:
retail support (tool schemas of the real world, parallel calls), an LLM customer against the
scripted support oracle, and negotiation self-play with the same model spec on both sides."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from llm_server import STOP, ScriptedServer, calls, text
from simworld.agents.llm.prompts import OPENING, USER_SIMULATOR
from simworld.agents.retail.customer import cues
from simworld.episode import Episode, episode_specs, run_episode
from simworld.replay import replay_trajectory
from simworld.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def llm(server: ScriptedServer, **extra: Any) -> dict[str, Any]:
    return {"type": "llm", "model": "openai/test-model", "api_base": server.base_url, "retry_backoff": 0.01,
            "timeout": 5.0, **extra}


def test_retail_support_by_llm_reaches_the_expected_state_with_parallel_calls():
    sc0 = load_scenario(SCENARIOS / "retail" / "cancel_pending_order.yaml")
    plan: list[Any] = []
    outputs: list[str] = []

    def follow_the_plan(endpoint, body):
        """A model that knows the answer: every gold call at once, then the required outputs."""
        if not any(m["role"] == "tool" for m in body["messages"]):
            return calls(*[(c.name, c.arguments) for c in plan])
        return text("Your order is cancelled; $" + " and $".join(outputs) + " will be refunded.")

    with ScriptedServer(follow_the_plan) as server:
        sc = load_scenario(SCENARIOS / "retail" / "cancel_pending_order.yaml",
                           {"roles.support.agent": llm(server)})
        for spec in episode_specs(sc, 3):
            task = Episode(sc0, spec, make_agents=False).task
            plan[:] = task.gold_plan
            outputs[:] = task.required_outputs
            t = asyncio.run(run_episode(sc, spec))
            assert t.outcome.state_match and t.outcome.outputs_stated, t.outcome
            assert t.outcome.invalid_moves == 0 and t.outcome.tool_errors == 0
            (parallel,) = [e for e in t.events if e.speaker == "support" and e.tool_calls]
            assert [c.name for c in parallel.tool_calls] == [c.name for c in plan] and len(plan) >= 3
            assert replay_trajectory(t, sc).ok
    first = server.requests[0]
    assert first["messages"][0]["content"] == t.system["support"]  # the store policy, untouched
    names = {tool["function"]["name"] for tool in first["tools"]}
    assert names == set(sc.roles["support"].tools)


def customer_from_brief(endpoint, body):
    """A model playing the retail customer from the brief in its system prompt."""
    system = body["messages"][0]["content"]
    said = [m for m in body["messages"] if m["role"] == "assistant"]
    if not said:
        return text("Hi, I need to cancel an order.")
    asked = body["messages"][-1]["content"].lower()
    if "confirm" in cues(asked):  # a proposal, however the oracle words it ("Shall I go ahead?")
        return text("Yes, please.")
    if "email" in asked or "zip" in asked:
        if "don't remember your e-mail" in system:
            name, zip_code = re.search(r"You are (\w+ \w+),.* zip code is (\d+)", system).groups()
            return text(f"I don't remember my e-mail. I'm {name}, zip code {zip_code}.")
        return text("It's " + re.search(r"e-mail is (\S+@\S+?)\.? ", system).group(1) + ".")
    if "order" in asked and "?" in asked:
        known = re.search(r"cancel order (#W\d+)", system)
        if known:
            return text(f"Order {known.group(1)}.")
        return text("I don't remember the id; it's " + re.search(r"cancel (the order with the [^(]+?) \(", system).group(1) + ".")
    if "reason" in asked or "why" in asked:
        return text("The reason is " + re.search(r"the reason is '([^']+)'", system).group(1) + ".")
    return text("Thanks, that's all. " + STOP)


def test_retail_llm_customer_against_the_scripted_oracle():
    with ScriptedServer(customer_from_brief) as server:
        sc = load_scenario(SCENARIOS / "retail" / "cancel_pending_order.yaml",
                           {"roles.customer.agent": llm(server, temperature=1.0), "variations": {}})
        trajectories = [asyncio.run(run_episode(sc, spec)) for spec in episode_specs(sc, 3)]
    for t in trajectories:
        assert t.outcome.success and t.outcome.termination == "user_stop", t.outcome
        assert t.provenance.models["customer"]["instructions"] is None
        assert replay_trajectory(t, sc).ok
    first = server.requests[0]["messages"]
    # The world's customer prompt already has the simulator rules: not appended twice.
    assert first[0]["content"] == trajectories[0].system["customer"] and USER_SIMULATOR not in first[0]["content"]
    assert "You want to cancel order" in first[0]["content"] and first[1] == {"role": "user", "content": OPENING}


def negotiator(endpoint, body):
    """Opens with the middle of every issue; accepts any offer it receives."""
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in body["tools"]}
    messages = body["messages"]
    if messages[-1]["role"] == "tool":
        return text("That is my offer.")
    if any(m["role"] == "user" and " offers " in m["content"] for m in messages):
        return calls(("accept_offer", {}))
    args = {}
    for name, schema in tools["make_offer"]["properties"].items():
        if "enum" in schema:
            args[name] = schema["enum"][len(schema["enum"]) // 2]
        else:
            middle = (schema["minimum"] + schema["maximum"]) / 2
            args[name] = int(middle) if schema["type"] == "integer" else middle
    return calls(("make_offer", args))


@pytest.mark.parametrize("name", ["used_car", "supplier_contract", "refund_dispute"])
def test_negotiation_self_play_with_one_model_spec(name):
    path = SCENARIOS / "negotiation" / f"{name}.yaml"
    raw = load_scenario(path)
    parties = list(raw.roles)
    with ScriptedServer(negotiator) as server:
        spec = llm(server, temperature=0.7)
        overrides: dict[str, Any] = {f"roles.{p}.agent": spec for p in parties}
        # Keep the drawn reservations and openers; drop variations that swap in scripted strategies.
        overrides["variations"] = {k: v for k, v in raw.variations.items() if not k.endswith(".agent")}
        sc = load_scenario(path, overrides)
        trajectories = [asyncio.run(run_episode(sc, s)) for s in episode_specs(sc, 4)]
    for t in trajectories:
        assert t.outcome.success and t.outcome.metrics["agreement"], t.outcome
        assert t.outcome.invalid_moves == 0 and t.outcome.tool_errors == 0
        assert {e.speaker for e in t.events if e.role == "assistant"} == set(parties)
        assert t.provenance.agent_ids[parties[0]] == t.provenance.agent_ids[parties[1]]  # self-play
        assert replay_trajectory(t, sc).ok
    by_party = {p: [r for r in server.requests if f"You negotiate as {_party_name(p)}" in r["messages"][0]["content"]]
                for p in parties}
    for p, other in (parties, parties[::-1]):
        assert by_party[p], f"no request carried {p}'s brief"
        for r in by_party[p]:
            system = r["messages"][0]["content"]
            assert "Your private preferences" in system
            assert f"You negotiate as {_party_name(other)}" not in json.dumps(r)  # never the other side's brief
            assert "make_offer" in {t["function"]["name"] for t in r["tools"]}


def _party_name(role: str) -> str:
    from simworld.environments.negotiation.task import party_name

    return party_name(role)
