"""Information tools change what scripted negotiators do: stock levels move concessions and openings,
looked-up policy limits bound what a party offers and accepts."""

import copy
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml

from simworld.environments.negotiation.space import utility_model
from simworld.episode import Episode, episode_specs, run_episode_sync
from simworld.errors import ScenarioError
from simworld.scenario import scenario_from_data
from simworld.types import Message, ToolCall

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios" / "negotiation"


def scenario_data(name):
    data = yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())
    data.pop("variations")
    for party in data["world"]["params"]["parties"].values():
        party.pop("temperaments", None)  # the information alone moves the offers here
    if "stock" in data["world"]["params"]:
        data["world"]["params"]["stock"]["vary"] = False  # the inventory each test sets
    return data


def offers(t, role):
    """The terms of each successful offer `role` made, and the terms it accepted (if it did)."""
    made, accepted = [], None
    for e in t.events:
        if e.role == "tool" and e.speaker == role and not e.error and e.name in ("make_offer", "accept_offer"):
            terms = orjson.loads(e.content)["terms"]
            if e.name == "make_offer":
                made.append(terms)
            else:
                accepted = terms
    return made, accepted


def own_values(t, role):
    model = utility_model(t.task.private[role]["utility"])
    made, _ = offers(t, role)
    return [model.utility(terms) for terms in made], model.reservation


def run_with(data, n, **inventory):
    data = copy.deepcopy(data)
    data["world"]["params"]["inventory"].update(inventory)
    sc = scenario_from_data(data)
    return [run_episode_sync(sc, spec) for spec in episode_specs(sc, n)]


# -- stock


@pytest.mark.parametrize("seller", ["linear", "tit_for_tat", "boulware"])
def test_a_seller_with_a_full_lot_concedes_more_than_one_with_a_scarce_lot(seller):
    data = scenario_data("used_car")
    data["roles"]["seller"]["agent"] = {"type": seller}
    data["roles"]["buyer"]["agent"] = {"type": "hardliner"}  # the same demands whatever the seller does
    data["roles"]["seller"]["tools"].remove("check_policy")
    stocks = {"scarce": {"civics_on_lot": 1, "days_on_lot": 5}, "plentiful": {"civics_on_lot": 6, "days_on_lot": 90}}
    runs = {level: run_with(data, 12, **inventory) for level, inventory in stocks.items()}
    differ = 0
    for scarce, plentiful in zip(runs["scarce"], runs["plentiful"]):
        assert scarce.task.private == plentiful.task.private  # the same episode, only the stock differs
        (a, r), (b, _) = own_values(scarce, "seller"), own_values(plentiful, "seller")
        assert min(a + b) >= r - 1e-12  # never below its reservation value either way
        differ += a != b
        k = min(len(a), len(b))
        # Opening and every later offer of the pressed seller is worth no more to it (its band's width aside).
        assert all(y <= x + 0.05 + 1e-9 for x, y in zip(a[:k], b[:k])), (a, b)
        assert np.mean(b[:k]) < np.mean(a[:k])
    assert differ == len(runs["scarce"])


def test_a_buyer_who_learns_stock_is_scarce_offers_more():
    data = scenario_data("used_car")
    data["roles"]["buyer"]["agent"] = {"type": "linear"}
    data["roles"]["buyer"]["tools"] = ["make_offer", "accept_offer", "reject_offer", "walk_away", "get_inventory"]
    data["roles"]["seller"]["agent"] = {"type": "hardliner"}
    data["first_speaker"] = "buyer"
    scarce = run_with(data, 12, civics_on_lot=1, days_on_lot=5)
    plentiful = run_with(data, 12, civics_on_lot=6, days_on_lot=90)
    prices = {"scarce": [], "plentiful": []}
    for s, p in zip(scarce, plentiful):
        assert [e.name for e in s.events[:2]] == [None, "get_inventory"]  # it looked the stock up first
        prices["scarce"] += [terms["price"] for terms in offers(s, "buyer")[0]]
        prices["plentiful"] += [terms["price"] for terms in offers(p, "buyer")[0]]
        (a, r), (b, _) = own_values(s, "buyer"), own_values(p, "buyer")
        assert min(a + b) >= r - 1e-12
        assert np.mean(a) < np.mean(b), (a, b)  # scarce: it gives more away
        said = next(e.content for e in s.events if e.role == "assistant" and e.speaker == "buyer"
                    and any(c.name == "make_offer" for c in e.tool_calls))
        assert any(w in said for w in ("short", "aren't many", "tight")), said  # and says why
    assert np.mean(prices["scarce"]) > np.mean(prices["plentiful"]) + 100, prices


def test_a_varying_stock_is_drawn_per_episode_in_its_ranges():
    data = yaml.safe_load((SCENARIOS / "used_car.yaml").read_text())
    sc = scenario_from_data(data)
    levels = data["world"]["params"]["stock"]["levels"]
    reported, pressed = [], []
    for spec in episode_specs(sc, 60):
        t = run_episode_sync(sc, spec)
        answers = [orjson.loads(e.content) for e in t.events
                   if e.role == "tool" and e.name == "get_inventory" and not e.error]
        for answer in answers:
            for key, (scarce, plentiful) in levels.items():
                assert isinstance(answer[key], int) and min(scarce, plentiful) <= answer[key] <= max(scarce, plentiful)
            assert answer["winter_tire_sets_in_stock"] == 5  # numbers without levels stay as declared
            reported.append((answer["civics_on_lot"], answer["days_on_lot"]))
            said = next((e.content for e in t.events if e.role == "assistant" and e.speaker == "seller"
                         and any(c.name == "make_offer" for c in e.tool_calls)), "")
            pressed.append(("plenty" in said or "more of these" in said or "isn't a problem" in said,
                            answer["days_on_lot"]))
    assert len(reported) > 30 and len(set(reported)) > 20  # a different lot from episode to episode
    again = run_episode_sync(sc, episode_specs(sc, 1)[0])
    first = run_episode_sync(sc, episode_specs(sc, 1)[0])
    assert again.final_state_hash == first.final_state_hash
    # A seller that says its lot is full saw a long-unsold car more often than one that does not.
    full = [days for said, days in pressed if said]
    assert full and np.mean(full) > np.mean([days for said, days in pressed if not said])


# -- policies


def policy_ok(policy_limits, terms):
    for name, limit in policy_limits.items():
        value = terms[name]
        if "max" in limit and value > limit["max"] + 1e-9 or "min" in limit and value < limit["min"] - 1e-9:
            return False
        if "values" in limit and value not in limit["values"]:
            return False
    return True


def learned_limits(t, role):
    limits = {}
    for e in t.events:
        if e.role == "tool" and e.speaker == role and e.name == "check_policy" and not e.error:
            limits.update(orjson.loads(e.content).get("limits", {}))
    return limits


@pytest.mark.parametrize("name", ["refund_dispute", "used_car", "supplier_contract"])
def test_no_offer_or_acceptance_breaks_a_policy_the_party_looked_up(name):
    sc = scenario_from_data(yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text()))  # all variations
    checked = bound = 0
    for spec in episode_specs(sc, 60):
        t = run_episode_sync(sc, spec)
        assert t.outcome.invalid_moves == 0 and t.outcome.tool_errors == 0
        for role in t.task.private:
            limits = learned_limits(t, role)
            if not limits:
                continue
            checked += 1
            made, accepted = offers(t, role)
            assert all(policy_ok(limits, terms) for terms in made), (role, limits, made)
            assert accepted is None or policy_ok(limits, accepted), (role, limits, accepted)
            bound += any(not policy_ok(limits, terms) for terms in offers(t, t.task.private[role]["counterpart"])[0])
    assert checked >= 20
    if name == "refund_dispute":
        assert bound > 0  # the customer did ask for more than the policy allows: the limit was binding


def test_a_policy_limit_changes_the_offers_of_the_same_episode():
    data = scenario_data("refund_dispute")
    data["roles"]["support_agent"]["agent"] = {"type": "conceder"}
    data["roles"]["customer"]["agent"] = {"type": "hardliner"}
    free = copy.deepcopy(data)
    free["world"]["params"]["policies"]["refunds"].pop("limits")
    limited, unlimited = ([run_episode_sync(sc, spec) for spec in episode_specs(sc, 20)]
                          for sc in (scenario_from_data(data), scenario_from_data(free)))
    over = 0
    for a, b in zip(limited, unlimited):
        made_a, _ = offers(a, "support_agent")
        made_b, _ = offers(b, "support_agent")
        assert all(terms["refund_amount"] <= 150 for terms in made_a)
        over += any(terms["refund_amount"] > 150 for terms in made_b)
        said = " ".join(e.content for e in a.events if e.role == "assistant" and e.speaker == "support_agent")
        assert "refunds policy" in said  # it says what bounds its offer
    assert over >= 5  # without the limit, a conceding agent goes beyond $150


def test_check_policy_reports_the_limits_it_sets():
    data = scenario_data("refund_dispute")
    sc = scenario_from_data(data)
    ep = Episode(sc, episode_specs(sc, 1)[0])
    ep.current = "support_agent"
    ep.step(Message(role="assistant", content="Checking.", tool_calls=[
        ToolCall(id="1", name="check_policy", arguments={"topic": "refunds"}),
        ToolCall(id="2", name="check_policy", arguments={"topic": "shipping"})]))
    refunds, shipping = (orjson.loads(e.content) for e in ep.events if e.role == "tool")
    assert refunds["limits"] == {"refund_amount": {"max": 150}} and "up to $150" in refunds["policy"]
    assert "limits" not in shipping and shipping["topic"] == "shipping"


def test_a_party_walks_away_when_no_offer_within_policy_is_worth_its_reservation():
    data = scenario_data("refund_dispute")
    data["roles"]["customer"]["tools"] = data["roles"]["customer"]["tools"] + ["check_policy"]
    data["world"]["params"]["policies"]["refunds"]["limits"] = {"refund_amount": {"max": 0},
                                                                 "store_credit": {"values": [0]}}
    data["world"]["params"]["parties"]["customer"]["reservation"] = 0.6
    data["first_speaker"] = "customer"
    sc = scenario_from_data(data)
    for spec in episode_specs(sc, 5):
        t = run_episode_sync(sc, spec)
        made, _ = offers(t, "customer")
        assert made == [] and t.outcome.termination == "walk_away", made
        assert t.outcome.metrics["walked_away_by"] == "customer"


# -- validation


@pytest.mark.parametrize("change, where, message", [
    (lambda p: p.update(stock={"owner": "dealer", "levels": {"civics_on_lot": [1, 6]}}),
     "world.params.stock.owner", "'dealer' is not one of the parties"),
    (lambda p: p.update(stock={"owner": "seller", "levels": {"cars": [1, 6]}}),
     "world.params.stock.levels.cars", "inventory has no number 'cars'"),
    (lambda p: p.update(stock={"owner": "seller", "levels": {"civics_on_lot": [3, 3]}}),
     "world.params.stock.levels", "two different finite values"),
    (lambda p: p["policies"]["warranty"]["limits"].update(warrenty_months={"max": 3}),
     "world.params.policies.warranty.limits.warrenty_months", "did you mean 'warranty_months'"),
    (lambda p: p["policies"]["warranty"]["limits"].update(financing={"max": 3}),
     "world.params.policies.warranty.limits.financing", "min and max need a numeric issue"),
    (lambda p: p["policies"]["warranty"]["limits"].update(warranty_months={"values": [5]}),
     "world.params.policies.warranty.limits.warranty_months", "5 is not a value of the issue"),
    (lambda p: p["policies"].update(other={"text": "x", "limits": {"warranty_months": {"min": 13}}}),
     "world.params.policies.other.limits.warranty_months", "no value of the issue is within"),
    (lambda p: p["policies"]["warranty"]["limits"].update(warranty_months={}),
     "world.params.policies.warranty.limits.warranty_months", "give min, max or values"),
])
def test_bad_stock_and_policy_declarations_name_their_place(change, where, message):
    data = scenario_data("used_car")
    change(data["world"]["params"])
    with pytest.raises(ScenarioError) as err:
        scenario_from_data(data)
    text = "\n".join(err.value.problems)
    assert where in text and message in text, text
