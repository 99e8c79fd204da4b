"""Seeded temperaments: drawn per episode, told to the party in its brief, and changing how a scripted
strategy opens, concedes, waits, researches, rejects and talks."""

from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml

from simworld.agents.negotiation.strategies import Linear, TitForTat
from simworld.environments.negotiation.space import utility_model
from simworld.environments.negotiation.world import NegotiationRecord, Offer
from simworld.episode import episode_specs, run_episode_sync
from simworld.errors import ScenarioError
from simworld.scenario import scenario_from_data
from simworld.types import strip_timings

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios" / "negotiation"


def used_car(temper=None, first_speaker="buyer", **agents):
    """used_car without variations: `temper` maps a role to the one temperament it gets (others: none),
    `agents` a role to its strategy."""
    data = yaml.safe_load((SCENARIOS / "used_car.yaml").read_text())
    data.pop("variations")
    for role, party in data["world"]["params"]["parties"].items():
        party["temperaments"] = [{"name": "t", **temper[role]}] if temper and role in temper else []
    for role, agent in agents.items():
        data["roles"][role]["agent"] = {"type": agent}
    data["first_speaker"] = first_speaker
    return data


def run(data, n=16):
    sc = scenario_from_data(data)
    return [run_episode_sync(sc, spec) for spec in episode_specs(sc, n)]


def own_offers(t, role):
    model = utility_model(t.task.private[role]["utility"])
    return [model.utility(orjson.loads(e.content)["terms"]) for e in t.events
            if e.role == "tool" and e.speaker == role and e.name == "make_offer" and not e.error]


@pytest.mark.parametrize("name", ["used_car", "lease_renewal", "refund_dispute", "supplier_contract"])
def test_temperaments_are_drawn_per_episode_and_told_in_the_brief(name):
    data = yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())
    sc = scenario_from_data(data)
    declared = {role: {t["name"]: t for t in party["temperaments"]}
                for role, party in data["world"]["params"]["parties"].items()}
    drawn = Counter()
    for spec in episode_specs(sc, 60):
        t = run_episode_sync(sc, spec)
        for role, private in t.task.private.items():
            temperament = private["temperament"]
            spec_ = declared[role][temperament["name"]]
            assert " ".join(spec_["text"].split()) in t.system[role]  # the party is told who it is today
            for other in declared[role].values():
                if other["name"] != temperament["name"]:
                    assert " ".join(other["text"].split()) not in t.system[role]
            for key in ("concession", "patience", "anchor", "research", "rejects"):
                assert temperament[key] == spec_.get(key, {"concession": 1.0, "patience": 1.0, "anchor": 0.0,
                                                           "research": 1.0, "rejects": None}[key])
            assert t.outcome.metrics["temperaments"][role] == temperament["name"]
            drawn[role, temperament["name"]] += 1
    assert set(drawn) == {(role, n) for role, names in declared.items() for n in names}  # every one is used
    again = [run_episode_sync(sc, spec) for spec in episode_specs(sc, 5)]
    first = [run_episode_sync(sc, spec) for spec in episode_specs(sc, 5)]
    assert [orjson.dumps(strip_timings(t.model_dump(mode="json"))) for t in again] == \
        [orjson.dumps(strip_timings(t.model_dump(mode="json"))) for t in first]


def test_the_anchor_moves_the_opening():
    bold = run(used_car({"buyer": {"anchor": 0.45}}, buyer="linear", seller="linear"))
    modest = run(used_car({"buyer": {"anchor": -0.45}}, buyer="linear", seller="linear"))
    prices = []
    for b, m in zip(bold, modest):
        assert own_offers(b, "buyer")[0] > own_offers(m, "buyer")[0] + 0.05
        prices.append([next(orjson.loads(e.content)["terms"]["price"] for e in t.events
                            if e.role == "tool" and e.name == "make_offer" and e.speaker == "buyer") for t in (b, m)])
    assert all(bold_price <= modest_price for bold_price, modest_price in prices)  # a bold buyer asks no more
    assert np.mean([modest_price - bold_price for bold_price, modest_price in prices]) > 200


def test_a_faster_conceding_temperament_gives_more_away_in_the_same_episodes():
    fast = run(used_car({"seller": {"concession": 3.0}}, seller="linear", buyer="hardliner"))
    slow = run(used_car({"seller": {"concession": 0.4}}, seller="linear", buyer="hardliner"))
    for f, s in zip(fast, slow):
        a, b = own_offers(f, "seller"), own_offers(s, "seller")
        k = min(len(a), len(b))
        assert a[0] == b[0]  # the same opening: only the pace differs
        assert np.mean(a[1:k]) < np.mean(b[1:k]) - 0.02, (a, b)


def test_an_impatient_temperament_settles_earlier():
    impatient = run(used_car({"seller": {"patience": 0.3}}, seller="tit_for_tat", buyer="boulware"), 24)
    patient = run(used_car({"seller": {"patience": 1.0}}, seller="tit_for_tat", buyer="boulware"), 24)
    rounds = {label: [t.outcome.metrics["rounds"] for t in runs if t.outcome.metrics["agreement"]]
              for label, runs in (("impatient", impatient), ("patient", patient))}
    assert len(rounds["impatient"]) >= len(rounds["patient"])
    assert np.mean(rounds["impatient"]) < np.mean(rounds["patient"]) - 1, rounds
    for t in impatient:  # out of patience it takes any offer worth its reservation value, never less
        m = t.outcome.metrics
        assert not m["agreement"] or m["utility_seller"] >= m["reservations"]["seller"] - 1e-9


def test_research_and_rejection_habits():
    hasty = run(used_car({"buyer": {"research": 0.0, "rejects": 1.0}}, buyer="linear", seller="boulware"))
    thorough = run(used_car({"buyer": {"research": 1.0, "rejects": 0.0}}, buyer="linear", seller="boulware"))
    for t in hasty:
        calls = [c for e in t.events if e.speaker == "buyer" and e.role == "assistant" for c in e.tool_calls]
        assert not any(c.name == "check_market_price" for c in calls)
        counters = [e for e in t.events if e.speaker == "buyer" and e.role == "assistant"
                    and [c.name for c in e.tool_calls][-1:] == ["make_offer"]]
        answering = [e for e in counters if any(c.name == "reject_offer" for c in e.tool_calls)]
        assert len(answering) >= len(counters) - 1  # every counter to a standing offer (all but an opening)
    for t in thorough:
        calls = [c.name for e in t.events if e.speaker == "buyer" and e.role == "assistant" for c in e.tool_calls]
        assert calls[0] == "check_market_price" and "reject_offer" not in calls


def test_remarks_come_from_the_drawn_temperament_only():
    remarks = ["I'm in no rush at all.", "My cousin is a mechanic."]
    episodes = run(used_car({"buyer": {"remarks": remarks}}, buyer="linear", seller="linear"), 12)
    said = [e.content for t in episodes for e in t.events if e.role == "assistant" and e.speaker == "buyer"]
    with_remark = [s for s in said if any(r in s for r in remarks)]
    assert 0.1 < len(with_remark) / len(said) < 0.6
    others = [r for party in yaml.safe_load((SCENARIOS / "used_car.yaml").read_text())["world"]["params"]["parties"]
              .values() for temper in party["temperaments"] for r in temper["remarks"]]
    assert not any(r in s for s in said for r in others)


def test_temperament_scales_the_strategies_curves():
    spec = {"issues": {"x": {"range": [0, 100], "step": 1}}, "weights": {"x": 1.0},
            "functions": {"x": {"prefer": "high"}}, "reservation": 0.2}
    model = utility_model(spec)
    history = tuple(Offer("them", k + 1, {"x": 0}, 0) for k in range(4))
    record = NegotiationRecord(("me", "them"), "open", 4, 11, history[-1], history, "me")
    agent = Linear(Linear.Params(type="linear"), "me", np.random.default_rng(0))
    agent._concession, agent._patience = 2.0, 0.8
    t = min(1.0, 0.4 / 0.8)
    assert agent.target(record, model, 0.0) == pytest.approx(0.2 + 0.8 * (1 - t ** 0.5))
    tft = TitForTat(TitForTat.Params(type="tit_for_tat", initial_concession=0.05), "me", np.random.default_rng(0))
    tft._model, tft._last_target, tft._concession = model, 0.9, 3.0
    record = NegotiationRecord(("me", "them"), "open", 2, 11, history[0], (Offer("me", 1, {"x": 90}, 90),
                                                                             history[0]), "me")
    assert tft.target(record, model, 0.0) == pytest.approx(0.9 - 0.15)


@pytest.mark.parametrize("temperament, where, message", [
    ({"name": "x", "concession": 0}, "temperaments[0].concession", "greater than 0"),
    ({"name": "x", "patience": 1.5}, "temperaments[0].patience", "less than or equal to 1"),
    ({"name": "x", "anchor": 0.9}, "temperaments[0].anchor", "less than or equal to 0.5"),
    ({"name": "x", "rejects": -1}, "temperaments[0].rejects", "greater than or equal to 0"),
    ({"name": "x", "patient": 0.5}, "temperaments[0].patient", "unknown field 'patient'"),
    ({"text": "no name"}, "temperaments[0].name", "required field missing"),
])
def test_bad_temperaments_name_their_place(temperament, where, message):
    data = used_car()
    data["world"]["params"]["parties"]["buyer"]["temperaments"] = [temperament]
    with pytest.raises(ScenarioError) as err:
        scenario_from_data(data)
    text = "\n".join(err.value.problems)
    assert f"world.params.parties.buyer.{where}" in text and message in text, text
