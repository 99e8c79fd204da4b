"""Small worlds and agents for the replay / scoring / export / show tests, and run helpers.

* ``haggle``: two assistant-kind parties bargain over a price (one training sample per party);
  the outcome carries negotiation metrics. Its task has no expected end state.
* ``ledger_sloppy``: a clerk for the ledger world (tests/ledger_world.py) that makes an invalid
  call, deposits into a second account (collateral damage), calls a tool it does not have and
  repeats itself, to give every scorer something to find.

Every scenario test also covers the YAML scenarios under ``scenarios/`` whose agents are all
scripted (see `scenario_cases`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field

import ledger_world
from simworld.agent import Agent, AgentParams
from simworld.registry import register_agent, register_task, register_world
from simworld.scenario import Scenario, load_scenario, scenario_from_data
from simworld.task import TaskGenerator, TaskInstance
from simworld.types import Message, ToolCall
from simworld.world import Table, ToolContext, ToolError, World, WorldData

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------------
# haggle: a two-party price negotiation


class HaggleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: int = 20


@register_world("haggle")
class HaggleWorld(World):
    Params = HaggleParams

    @classmethod
    def build(cls, params: HaggleParams, rng: np.random.Generator) -> WorldData:
        return WorldData({"items": Table("items", {"list_price": rng.integers(50, 500, params.items).astype(np.int64)})})

    def finalize_outcome(self, episode: Any, outcome: Any) -> Any:
        v = episode.state.vars
        deal = v.get("agreed") is not None
        private = episode.task.private
        # The metric names of the bargaining world (environments/negotiation/metrics.py).
        metrics: dict[str, Any] = {"agreement": deal, "rounds": int(v.get("rounds", 0)),
                                   "reservation_buyer": 0.0, "reservation_seller": 0.0}
        if deal:
            price = v["agreed"]
            b, s = private["buyer"], private["seller"]
            span = b["limit"] - s["limit"]
            metrics["agreed_outcome"] = {"price": price}
            metrics["utilities"] = {"buyer": (b["limit"] - price) / span, "seller": (price - s["limit"]) / span}
        return outcome.model_copy(update={"metrics": metrics, "success": deal})


@HaggleWorld.tool(consumes=["item_id"], produces=["offer"], writes=True)
def make_offer(ctx: ToolContext, price: Annotated[int, Field(description="Offered price in dollars.", ge=1)]) -> dict:
    """Offer a price to the other party."""
    v = ctx.state.vars
    v["rounds"] = int(v.get("rounds", 0)) + 1
    v["offer"] = {"by": ctx.caller, "price": price}
    other = "seller" if ctx.caller == "buyer" else "buyer"
    ctx.notify(other, f"{ctx.caller} offers ${price}.")
    ctx.finish_turn()
    return {"offered": price}


@HaggleWorld.tool(consumes=["offer"])
def accept_offer(ctx: ToolContext) -> dict:
    """Accept the other party's standing offer."""
    offer = ctx.state.vars.get("offer")
    if not offer or offer["by"] == ctx.caller:
        raise ToolError("there is no offer from the other party to accept")
    ctx.state.vars["agreed"] = offer["price"]
    ctx.finish_episode("deal")
    return {"agreed": offer["price"]}


@register_task("haggle", "sell_item")
class SellItem(TaskGenerator):
    def sample(self, world: World, state, rng: np.random.Generator) -> TaskInstance:
        item = int(rng.integers(world.data.tables["items"].n))
        price = int(world.data.tables["items"]["list_price"][item])
        seller_limit = int(price * 0.7)
        buyer_limit = int(price * 1.1)
        return TaskInstance(type="sell_item", instance_id=f"item-{item}", goal={"item": item},
                            private={"buyer": {"limit": buyer_limit, "brief": f"Pay at most ${buyer_limit}."},
                                     "seller": {"limit": seller_limit, "list": price,
                                                "brief": f"Sell for at least ${seller_limit}."}},
                            gold_plan=[], expected_state=None)


class HaggleParamsAgent(AgentParams):
    step: float = 0.1
    say: str = ""
    """Said with each offer (in the same turn as the call), when given."""


@register_agent("haggler")
class Haggler(Agent):
    """Concedes `step` of the gap each round; accepts an offer within its limit."""

    Params = HaggleParamsAgent

    async def act(self, view):
        limit = view.private["limit"]
        offer = view.episode.state.vars.get("offer")
        if offer and offer["by"] != view.role:
            ok = offer["price"] <= limit if view.role == "buyer" else offer["price"] >= limit
            if ok:
                return Message(role="assistant", content=f"Deal at ${offer['price']}.",
                               tool_calls=[ToolCall(id="x", name="accept_offer", arguments={})])
        mine = [e for e in view.events if e.speaker == view.role and e.tool_calls]
        start = limit * 0.4 if view.role == "buyer" else view.private.get("list", limit) * 1.6
        price = start + (limit - start) * min(1.0, self.params.step * (len(mine) + 1))
        if self.params.say:
            return Message(role="assistant", content=self.params.say,
                           tool_calls=[ToolCall(id="x", name="make_offer", arguments={"price": max(1, int(price))})])
        return '{"name": "make_offer", "parameters": {"price": %d}}' % max(1, int(price))


def haggle_data(**overrides: Any) -> dict[str, Any]:
    data = {
        "name": "haggle_test",
        "world": {"type": "haggle", "params": {"items": 20}},
        "task": {"type": "sell_item"},
        "first_speaker": "seller",
        "max_turns": 30,
        "scoring": ["negotiation", "heuristics", "tool_validity", "policy_violations"],
        "roles": {
            "seller": {"kind": "assistant", "agent": {"type": "haggler", "step": 0.25},
                       "tools": ["make_offer", "accept_offer"], "system_prompt": "You sell."},
            "buyer": {"kind": "assistant", "agent": {"type": "haggler", "step": 0.3},
                      "tools": ["make_offer", "accept_offer"], "system_prompt": "You buy."},
        },
    }
    data.update(overrides)
    return data


# ----------------------------------------------------------------------------------------------
# A sloppy ledger clerk


@register_agent("ledger_sloppy")
class SloppyClerk(Agent):
    """Makes mistakes the scorers must find (but still completes the task)."""

    async def act(self, view):
        step = sum(1 for e in view.events if e.speaker == view.role and e.role == "assistant")
        account = view.episode.task.goal["account"]
        if step == 0:
            return '{"name": "deposit", "parameters": {"account": %d, "amount": "lots"}}' % account
        if step == 1:
            return '{"name": "deposit", "parameters": {"account": %d, "amount": 5}}' % account
        if step == 2:
            return '{"name": "deposit", "parameters": {"account": %d, "amount": 1}}' % ((account + 1) % 50)
        if step == 3:
            return '{"name": "transfer_all", "parameters": {}}'
        if step == 4:
            return "{not json"
        results = [orjson.loads(e.content) for e in view.events
                   if e.role == "tool" and e.speaker == view.role and not e.error and e.content.startswith("{")]
        balance = next(r["balance"] for r in results if r.get("account") == account)
        return f"Done. Balance {balance}. Done. Balance {balance}." if step == 5 else f"Done. Balance {balance}."


def ledger_data(**overrides: Any) -> dict[str, Any]:
    data = ledger_world.scenario_data(**overrides)
    data.setdefault("scoring", ["state_match", "outputs_stated", "collateral_damage", "tool_validity",
                                "policy_violations", "heuristics"])
    return data


# ----------------------------------------------------------------------------------------------
# Runs


def make_run(path: Path, data: dict[str, Any] | Scenario, episodes: int, seed: int | None = None) -> Path:
    """A real run directory written by the batch runner."""
    from simworld.runner import run_batch

    sc = data if isinstance(data, Scenario) else scenario_from_data(data)
    if seed is not None:
        sc = scenario_from_data({**sc.model_dump(mode="json"), "seed": seed})
    run_batch(sc, path, episodes=episodes)
    return path


def fork_run(out: Path, parent: Path, agents: Scenario) -> Path:
    """A run of every episode of `parent` forked at its first turn and played on by the agents of
    `agents` (the parent's scenario with other agents)."""
    from simworld.replay import fork_trajectory, load_run_scenario, turn_boundaries
    from simworld.runio import iter_records
    from simworld.runner import scenario_yaml
    from simworld.types import Trajectory

    sc = load_run_scenario(parent)
    out.mkdir()
    (out / "scenario.yaml").write_bytes(scenario_yaml(agents))
    with open(out / "trajectories-0.jsonl", "wb") as fh:
        for record in iter_records(parent):
            traj = Trajectory.model_validate(record)
            fh.write(fork_trajectory(traj, sc, turn_boundaries(traj)[0], agents).to_jsonl())
    return out


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def read_samples(path: Path) -> list[dict[str, Any]]:
    """An export's lines, each joined with its line of the metadata file beside it when the format
    writes one (openai, trl, sharegpt, dpo: id, scores, provenance, ...)."""
    from simworld.export.pipeline import metadata_path

    lines = read_lines(path)
    meta = metadata_path(path)
    if not meta.exists():
        return lines
    metadata = read_lines(meta)
    assert len(metadata) == len(lines), f"{meta}: {len(metadata)} lines for {len(lines)} samples"
    assert all(not line.keys() & m.keys() for line, m in zip(lines, metadata))
    return [{**line, **m} for line, m in zip(lines, metadata)]


def scorers(scores: dict[str, Any]) -> dict[str, float]:
    """Each scorer's value in a written sample's `scores` (JSON text there: see
    :func:`simworld.export.source.scores_written`)."""
    return orjson.loads(scores["scorers"])


def provenance_map(provenance: dict[str, Any], key: str) -> dict[str, Any]:
    """A map of a written sample's provenance (``variation``, ``agents``, ``models``: JSON text there)."""
    return orjson.loads(provenance[key])


def yaml_scenarios() -> list[Path]:
    return sorted(p for p in (ROOT / "scenarios").rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def scripted_yaml_scenarios() -> list[Path]:
    """YAML scenarios whose agents are all scripted (no model server needed)."""
    from simworld.errors import SimworldError
    from simworld.runner import is_scripted

    out = []
    for path in yaml_scenarios():
        try:
            sc = load_scenario(path)
        except SimworldError:
            continue  # scenario validation is another test suite's job
        if is_scripted(sc):
            out.append(path)
    return out


def scenario_cases() -> list[Any]:
    """(id, scenario data or path) for every test world and every scripted YAML scenario."""
    import pytest

    cases = [pytest.param(ledger_world.scenario_data(), id="ledger"),
             pytest.param(ledger_data(roles={
                 "user": {"kind": "user", "agent": {"type": "ledger_user"}},
                 "clerk": {"kind": "assistant", "agent": {"type": "ledger_sloppy"},
                           "system_prompt": "You are a bank clerk.",
                           "tools": ["get_balance", "deposit", "hang_up"]}}, max_turns=20), id="ledger-sloppy"),
             pytest.param(haggle_data(), id="haggle")]
    cases += [pytest.param(p, id=str(p.relative_to(ROOT))) for p in scripted_yaml_scenarios()]
    return cases


def scenario_of(case: Any) -> Scenario:
    return load_scenario(case) if isinstance(case, Path) else scenario_from_data(case)
