"""The bargaining world's protocol, enforced inside its tools, driven through the episode engine."""

import copy

import orjson
import pytest

from simworld.episode import Episode, EpisodeSpec, episode_specs, run_episode_sync
from simworld.errors import ScenarioError
from simworld.perspective import perspective
from simworld.scenario import scenario_from_data
from simworld.types import Message, ToolCall

TOOLS = ["make_offer", "accept_offer", "reject_offer", "walk_away"]

DATA = {
    "name": "bargain_test",
    "world": {"type": "bargaining", "params": {
        "subject": "a bicycle",
        "max_rounds": 4,
        "issues": {
            "price": {"range": [100, 200], "step": 10, "prefix": "$"},
            "months": {"values": [0, 6, 12]},
            "colour": {"values": ["red", "blue"]},
        },
        "parties": {
            "buyer": {"weights": {"price": 2, "months": 1, "colour": 1},
                      "utilities": {"price": {"prefer": "low"}, "months": {"prefer": "high"},
                                    "colour": {"table": {"red": 1, "blue": 0}}},
                      "reservation": 0.3},
            "seller": {"weights": {"price": 3, "months": 1},
                       "utilities": {"price": {"prefer": "high"}, "months": {"prefer": "low"}},
                       "reservation": 0.25},
        },
        "market": {"Road bike": [150, 180]},
        "inventory": {"bikes": 4},
        "policies": {"returns": "30 days."},
    }},
    "task": {"type": "negotiate"},
    "roles": {
        "buyer": {"kind": "assistant", "agent": {"type": "linear"}, "tools": TOOLS + ["check_market_price"]},
        "seller": {"kind": "assistant", "agent": {"type": "boulware"},
                   "tools": TOOLS + ["get_inventory", "check_policy"]},
    },
    "first_speaker": "buyer",
    "max_turns": 30,
}


def scenario(**changes):
    data = copy.deepcopy(DATA)
    for path, value in changes.items():
        node = data
        *parts, last = path.split(".")
        for p in parts:
            node = node[p]
        node[last] = value
    return scenario_from_data(data)


def episode(**changes):
    sc = scenario(**changes)
    return Episode(sc, episode_specs(sc, 1)[0], make_agents=False)


def call(name, **args):
    return ToolCall(id="x", name=name, arguments=args)


def act(ep, *calls, text="."):
    n = len(ep.events)
    ep.step(Message(role="assistant", content=text, tool_calls=list(calls)))
    return [e for e in ep.events[n:] if e.role == "tool"]


OFFER = {"price": 150, "months": 6, "colour": "red"}


def test_make_offer_schema_lists_the_issues():
    ep = episode()
    spec = {t.name: t for t in ep.tools_of("buyer")}["make_offer"]
    props = spec.parameters["properties"]
    assert list(props) == ["price", "months", "colour"]
    assert spec.parameters["required"] == ["price", "months", "colour"]
    assert spec.parameters["additionalProperties"] is False
    assert props["price"]["type"] == "integer" and props["price"]["minimum"] == 100 and props["price"]["maximum"] == 200
    assert "steps of 10" in props["price"]["description"]
    assert props["months"]["enum"] == [0, 6, 12]
    assert props["colour"]["enum"] == ["red", "blue"]
    # Every role sees the same issue-specific schema; the class-level tool takes an offer object.
    assert {t.name: t for t in ep.tools_of("seller")}["make_offer"] == spec
    from simworld.environments.negotiation import BargainingWorld

    assert list(BargainingWorld.tool_specs(["make_offer"])[0].parameters["properties"]) == ["offer"]


def test_offer_notifies_counterpart_and_passes_the_turn():
    ep = episode()
    [result] = act(ep, call("make_offer", **OFFER), text="How about this?")
    assert not result.error and orjson.loads(result.content)["status"] == "offer_sent"
    assert ep.current == "seller"
    notice = ep.events[-1]
    assert notice.speaker == "world" and notice.audience == "seller"
    assert notice.content.startswith("The buyer offers price $150, months 6 and colour red (offer 1 of at most 4).")
    seller_view = perspective(ep.events, "seller")
    assert seller_view[-1].role == "user" and "How about this?" in seller_view[-1].content
    assert "offers price $150" in seller_view[-1].content
    assert all("offers price $150" not in m.content for m in perspective(ep.events, "buyer") if m.role == "user")
    assert ep.state.vars["table"]["terms"] == OFFER


@pytest.mark.parametrize("terms, message", [
    ({"price": 250, "months": 6, "colour": "red"}, "price: Input should be less than or equal to 200"),
    ({"price": 90, "months": 6, "colour": "red"}, "greater than or equal to 100"),
    ({"price": 155, "months": 6, "colour": "red"}, "off the grid: use steps of 10 from 100 (e.g. 150 or 160)"),
    ({"price": 150, "months": 7, "colour": "red"}, "months: Input should be 0, 6 or 12"),
    ({"price": 150, "months": 6, "colour": "green"}, "colour: Input should be 'red' or 'blue'"),
    ({"price": 150, "months": 6}, "colour: missing required argument"),
    ({"price": 150, "months": 6, "colour": "red", "speed": 3}, "speed: unexpected argument"),
])
def test_invalid_offers_are_error_results(terms, message):
    ep = episode()
    [result] = act(ep, call("make_offer", **terms))
    assert result.error and message in result.content
    assert ep.current == "buyer", "an invalid move does not pass the turn"
    assert ep.state.vars["offers"] == 0 and ep.state.vars["table"] is None


def test_accept_and_reject_need_a_counterpart_offer():
    ep = episode()
    [r] = act(ep, call("accept_offer"))
    assert r.error and "no offer on the table" in r.content
    [r] = act(ep, call("reject_offer", reason="no"))
    assert r.error and "no offer from the seller to reject" in r.content
    act(ep, call("make_offer", **OFFER))
    ep2 = episode()
    act(ep2, call("make_offer", **OFFER))
    # The seller cannot accept on the buyer's behalf, and the buyer cannot accept its own offer.
    act(ep2, text="Let me think.")  # seller passes the turn with text only
    assert ep2.current == "buyer"
    [r] = act(ep2, call("accept_offer"))
    assert r.error and "cannot accept your own offer" in r.content


def test_acting_out_of_turn_is_an_invalid_move():
    ep = episode()
    results = act(ep, call("make_offer", **OFFER), call("make_offer", **OFFER), call("accept_offer"))
    assert [r.error for r in results] == [False, True, True]
    assert all("not your turn" in r.content for r in results[1:])
    assert ep.state.vars["offers"] == 1
    # Information tools after the turn-ending move are refused too.
    ep = episode()
    results = act(ep, call("make_offer", **OFFER), call("check_market_price", item="Road bike"))
    assert results[1].error and "not your turn" in results[1].content


def test_the_world_refuses_moves_by_non_parties_and_without_a_negotiation():
    ep = episode()
    from simworld.world import State

    result = ep.world.call(ep.state, call("make_offer", **OFFER), ep.tool_rng, caller="referee")
    assert result.error and "not a party" in result.content
    result = ep.world.call(State(ep.world.data), call("make_offer", **OFFER), ep.tool_rng, caller="buyer")
    assert result.error and "no negotiation is open" in result.content


def test_agreement_ends_the_episode_with_metrics():
    ep = episode()
    act(ep, call("make_offer", **OFFER))
    [r] = act(ep, call("accept_offer"), text="Deal.")
    assert not r.error and ep.done and ep.termination == "agreement"
    m = ep.trajectory().outcome.metrics
    assert ep.trajectory().outcome.success
    assert m["agreement"] is True and m["agreed_outcome"] == OFFER and m["agreement_round"] == 1
    buyer_u = (2 * 0.5 + 1 * 0.5 + 1 * 1.0) / 4
    seller_u = (3 * 0.5 + 1 * 0.5) / 4
    assert m["utility_buyer"] == pytest.approx(buyer_u) and m["utility_seller"] == pytest.approx(seller_u)
    assert m["utilities"] == {"buyer": pytest.approx(buyer_u), "seller": pytest.approx(seller_u)}
    assert m["surplus_share"]["buyer"] == pytest.approx((buyer_u - 0.3) / (buyer_u - 0.3 + seller_u - 0.25))
    assert m["group"] == "buyer=linear vs seller=boulware"
    assert m["offers"] == {"buyer": 1, "seller": 0} and m["invalid_moves"] == {"buyer": 0, "seller": 0}
    assert m["pareto_distance"] >= 0 and m["nash_distance"] >= 0 and 0 < m["welfare_ratio"] <= 1


def test_deadline_cost_is_charged_per_round_before_agreement():
    ep = episode(**{"world.params.deadline_cost": 0.02})
    act(ep, call("make_offer", **OFFER))
    act(ep, call("make_offer", price=190, months=0, colour="blue"))
    act(ep, call("make_offer", **OFFER))
    act(ep, call("accept_offer"))
    m = ep.trajectory().outcome.metrics
    assert m["agreement_round"] == 3
    assert m["utility_seller"] == pytest.approx((3 * 0.5 + 1 * 0.5) / 4 - 2 * 0.02)


def test_round_limit_and_rejecting_the_final_offer():
    ep = episode()
    for _ in range(4):
        act(ep, call("make_offer", **OFFER))
    assert ep.current == "buyer" and ep.state.vars["offers"] == 4
    assert "This is the final offer" in ep.events[-1].content
    [r] = act(ep, call("make_offer", **OFFER))
    assert r.error and "round limit is reached (4 offers)" in r.content
    [r] = act(ep, call("reject_offer", reason="Too low."))
    assert not r.error and ep.done and ep.termination == "no_agreement"
    m = ep.trajectory().outcome.metrics
    assert not ep.trajectory().outcome.success and m["agreement"] is False
    assert m["utility_buyer"] == pytest.approx(0.3) and m["utility_seller"] == pytest.approx(0.25)
    assert m["invalid_moves"] == {"buyer": 1, "seller": 0} and m["rounds"] == 4


def test_a_one_offer_limit_is_worded_in_the_singular():
    ep = episode(**{"world.params.max_rounds": 1})
    prompts = "\n".join(ep.view(role).system for role in ("buyer", "seller"))
    assert "at most 1 offer in total;" in prompts and "At most 1 offer can be exchanged" in prompts
    assert "1 offers" not in prompts
    act(ep, call("make_offer", **OFFER))
    [r] = act(ep, call("make_offer", **OFFER))
    assert r.error and "round limit is reached (1 offer)" in r.content


def test_reject_then_counter_in_one_turn():
    ep = episode()
    act(ep, call("make_offer", **OFFER))
    results = act(ep, call("reject_offer", reason="Too low."), call("make_offer", price=190, months=0, colour="red"))
    assert [r.error for r in results] == [False, False]
    assert ep.current == "buyer"
    notices = [e.content for e in ep.events if e.audience == "buyer" and e.speaker == "world"]
    assert notices[0] == "The seller rejects your offer: Too low."
    assert notices[1].startswith("The seller offers price $190, months 0 and colour red (offer 2 of at most 4)")


def test_walk_away():
    ep = episode()
    [r] = act(ep, call("walk_away", reason="Not interested."))
    assert not r.error and ep.done and ep.termination == "walk_away"
    assert ep.events[-1].audience == "seller" and "walks away" in ep.events[-1].content
    m = ep.trajectory().outcome.metrics
    assert m["walked_away_by"] == "buyer" and m["agreement"] is False


def test_information_tools_answer_from_the_world():
    ep = episode()
    [r] = act(ep, call("check_market_price", item="road bike"))
    body = orjson.loads(r.content)
    assert body["item"] == "Road bike" and len(body["listings"]) == 5 and 150 <= body["low"] <= body["high"] <= 180
    [r] = act(ep, call("check_market_price", item="Road bikes"))
    assert r.error and "did you mean 'Road bike'" in r.content
    assert ep.current == "buyer", "information tools do not end the turn"
    act(ep, call("make_offer", **OFFER))
    [r] = act(ep, call("get_inventory"))
    assert orjson.loads(r.content) == {"bikes": 4}
    [r] = act(ep, call("check_policy", topic="Returns"))
    assert orjson.loads(r.content) == {"topic": "returns", "policy": "30 days."}
    [r] = act(ep, call("check_market_price", item="Road bike"))
    assert r.error and "not available" in r.content, "tools a role is not granted stay unavailable"


def test_garbage_actions_are_invalid_moves_and_episodes_terminate():
    ep = episode()
    ep.step('{"name": "make_offer", "parameters": {"price": 150,')  # malformed tool call
    assert ep.invalid_moves == 1 and ep.current == "buyer"
    ep.step(12345)
    ep.step({"role": "assistant", "bogus": 1})
    assert ep.invalid_moves == 3
    import numpy as np

    rng = np.random.default_rng(0)
    while not ep.done:
        ep.step("".join(chr(int(c)) for c in rng.integers(32, 127, int(rng.integers(0, 40)))))
    assert ep.termination == "max_turns" and ep.turns == 30
    t = ep.trajectory()
    assert t.outcome.metrics["agreement"] is False
    assert t.outcome.metrics["invalid_moves"]["buyer"] >= 3


def test_text_only_turn_passes_the_move():
    ep = episode()
    act(ep, text="Hello! Nice bike.")
    assert ep.current == "seller" and ep.state.vars["to_move"] == "seller"
    [r] = act(ep, call("make_offer", price=200, months=0, colour="blue"))
    assert not r.error
    act(ep, call("walk_away", reason="Too dear."))
    assert ep.trajectory().outcome.metrics["passes"] == {"buyer": 1, "seller": 0}


def test_unknown_issue_in_preferences_is_a_scenario_error_with_a_line():
    data = copy.deepcopy(DATA)
    data["world"]["params"]["parties"]["buyer"]["weights"]["prise"] = 1
    with pytest.raises(ScenarioError) as err:
        scenario_from_data(data)
    assert err.value.problems == ["world.params.parties.buyer.weights.prise: unknown issue 'prise'; "
                                  "did you mean 'price'?"]


def test_self_play_and_perspectives():
    sc = scenario(**{"roles.seller.agent": {"type": "linear"}})
    for spec in episode_specs(sc, 5):
        t = run_episode_sync(sc, spec)
        assert t.outcome.metrics["group"] == "buyer=linear vs seller=linear"
        for role in ("buyer", "seller"):
            view = perspective(t.events, role, t.system[role])
            assert view[0].role == "system" and "You negotiate as the " + role in view[0].content
            mine = [m for m in view if m.role == "assistant"]
            assert mine and all(m.tool_calls for m in mine)
            assert any(m.role == "user" and "offers" in m.content for m in view)
            assert {c.name for m in mine for c in m.tool_calls} & {"make_offer", "accept_offer", "walk_away"}


def test_spec_episode_ids_are_per_spec():
    sc = scenario()
    spec = EpisodeSpec(episode_id="x", index=0, seed=1)
    assert run_episode_sync(sc, spec).episode_id == "x"
