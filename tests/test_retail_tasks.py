"""Retail task generators: every sample is solvable, deterministic, and solvable from what the customer knows.

"Solvable from what the customer knows" is checked the way a support agent works: start from the
customer's brief (identity, order id or hint, item names and options, payment method description),
look things up with the tools, build the write calls from the results, and compare with the gold
plan and the expected state.
"""

from __future__ import annotations

import collections

import numpy as np
import orjson
import pytest

from simworld.agent import Agent, AgentParams
from simworld.episode import episode_specs, run_episode_sync
from simworld.registry import TASKS, get_task, get_world, register_agent
from simworld.scenario import scenario_from_data
from simworld.types import Message, ToolCall

RetailWorld = get_world("retail")
from simworld.environments.retail.schema import CustomerBrief  # noqa: E402

TASK_TYPES = sorted(TASKS["retail"])
SAMPLES = 200


@pytest.fixture(scope="module")
def world():
    return RetailWorld.load({"n_orders": 4000}, 21)


def run(world, state, name, /, **arguments):
    result = world.call(state, ToolCall(id="x", name=name, arguments=arguments), np.random.default_rng(0))
    return result


def read(world, state, name, /, **arguments):
    result = run(world, state, name, **arguments)
    assert not result.error, (name, arguments, result.content)
    return orjson.loads(result.content) if result.content[:1] in "{[" else result.content


def sample(world, name, seed, **params):
    cls = get_task("retail", name)
    return cls(cls.Params(**params)).sample(world, world.new_state(), np.random.default_rng(seed))


def test_at_least_the_required_task_types_exist():
    assert {"order_status", "cancel_pending_order", "modify_pending_order_address", "modify_pending_order_payment",
            "modify_pending_order_items", "return_delivered_order_items", "exchange_delivered_order_items",
            "multi_order", "policy_refusal"} <= set(TASK_TYPES)


def _matching(options, name, wanted_name, wanted_options):
    return name == wanted_name and options == wanted_options


def solve_from_brief(world, brief: CustomerBrief) -> tuple[list[ToolCall], list[str], object]:
    """What a careful support agent does with the customer's answers and tool results only.

    Returns the write calls it would make, the values it would state, and the final state.
    """
    state = world.new_state()
    ident = brief.identity
    if brief.knows_email:
        user_id = read(world, state, "find_user_id_by_email", email=ident.email)
    else:
        user_id = read(world, state, "find_user_id_by_name_zip", first_name=ident.first_name,
                       last_name=ident.last_name, zip=ident.zip)
    user = read(world, state, "get_user_details", user_id=user_id)
    writes, stated = [], []
    for req in brief.requests:
        if req.intent == "modify_user_address":
            call = ToolCall(id="w", name="modify_user_address", arguments={"user_id": user_id, **req.address.model_dump()})
            assert not run(world, state, call.name, **call.arguments).error
            writes.append(call)
            continue
        if req.knows_order_id:
            assert req.order_id in user["orders"]
            order = read(world, state, "get_order_details", order_id=req.order_id)
        else:
            hits = [o for o in (read(world, state, "get_order_details", order_id=oid) for oid in user["orders"])
                    if any(i["name"] == req.order_hint_product for i in o["items"])]
            assert len(hits) == 1, "the order hint must identify exactly one order"
            order = hits[0]
        oid = order["order_id"]
        item_ids = []
        for it in req.items:
            found = [i for i in order["items"] if _matching(i["options"], i["name"], it.name, it.options)]
            assert len(found) == 1, "name + options must identify one line of the order"
            item_ids.append(found[0]["item_id"])
        new_ids = []
        for old, new in zip(req.items, req.new_items):
            product = read(world, state, "get_product_details", product_id=new.product_id)
            found = [v for v in product["variants"].values() if v["options"] == new.options]
            assert len(found) == 1, "options must identify one variant of the product"
            new_ids.append(found[0]["item_id"])
        pm_id = None
        if req.payment_method is not None:
            p = req.payment_method
            found = [m for m in user["payment_methods"].values()
                     if m["source"] == p.kind and (p.last_four is None or m.get("last_four") == p.last_four)]
            assert len(found) == 1, "the payment method description must identify one method"
            pm_id = found[0]["id"]
        if req.intent == "order_status":  # the answers to exactly what the customer asks
            tracking = [t for f in order["fulfillments"] for t in f["tracking_id"]]
            answers = {"status": [order["status"]], "total": [f"{sum(i['price'] for i in order['items']):.2f}"],
                       "items": list(dict.fromkeys(i["name"] for i in order["items"])), "tracking": tracking}
            stated += [a for topic in req.ask for a in answers[topic]] or [order["status"]]
            continue
        name, args = {
            "cancel": ("cancel_pending_order", {"order_id": oid, "reason": req.reason}),
            "modify_address": ("modify_pending_order_address", {"order_id": oid, **(req.address.model_dump()
                                                                                   if req.address else {})}),
            "modify_payment": ("modify_pending_order_payment", {"order_id": oid, "payment_method_id": pm_id}),
            "modify_items": ("modify_pending_order_items", {"order_id": oid, "item_ids": item_ids,
                                                            "new_item_ids": new_ids, "payment_method_id": pm_id}),
            "return": ("return_delivered_order_items", {"order_id": oid, "item_ids": item_ids,
                                                        "payment_method_id": pm_id}),
            "exchange": ("exchange_delivered_order_items", {"order_id": oid, "item_ids": item_ids,
                                                            "new_item_ids": new_ids, "payment_method_id": pm_id}),
        }[req.intent]
        call = ToolCall(id="w", name=name, arguments=args)
        result = run(world, state, name, **args)
        if req.expect_refusal:
            assert result.error, f"policy should forbid {req.refusal_reason}: {result.content[:200]}"
            continue
        assert not result.error, result.content
        writes.append(call)
        after = orjson.loads(result.content)
        before_history = len(order["payment_history"])
        # money owed one way is stated with its way: "refund 12.50", "charge 12.50"
        if req.intent == "cancel":
            stated.append(f"refund {sum(t['amount'] for t in after['payment_history'][before_history:]):.2f}")
        elif req.intent == "modify_payment":
            stated.append(f"{after['payment_history'][-1]['amount']:.2f}")
        elif req.intent == "return":
            prices = {i["item_id"]: i["price"] for i in after["items"]}
            stated.append(f"refund {sum(prices[i] for i in after['return_items']):.2f}")
        elif req.intent == "exchange" and after["exchange_price_difference"]:
            diff = after["exchange_price_difference"]
            stated.append(f"{'charge' if diff > 0 else 'refund'} {abs(diff):.2f}")
        elif req.intent == "modify_items" and len(after["payment_history"]) > before_history:
            last = after["payment_history"][-1]
            stated.append(f"{'charge' if last['transaction_type'] == 'payment' else 'refund'} {last['amount']:.2f}")
    return writes, stated, state


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_every_sample_is_solvable_and_solvable_from_the_brief(world, task_type):
    seen = collections.Counter()
    for seed in range(SAMPLES):
        task = sample(world, task_type, seed)
        brief = CustomerBrief.model_validate(task.private["user"])
        assert task.private["assistant"] == {} and brief.brief == task.instructions
        assert brief.user_id == task.goal["user_id"]
        # the gold plan, replayed call by call on a fresh state, succeeds and reaches the expected state
        state = world.new_state()
        for call in task.gold_plan:
            result = world.call(state, call, np.random.default_rng(0))
            assert not result.error, (task_type, seed, call, result.content)
        assert state.state_hash() == task.expected_state.state_hash()
        # a support agent working only from the brief and tool results does the same
        writes, stated, solved = solve_from_brief(world, brief)
        assert solved.state_hash() == task.expected_state.state_hash(), (task_type, seed)
        assert [(c.name, c.arguments) for c in writes] == \
            [(c.name, c.arguments) for c in task.gold_plan if RetailWorld.tools[c.name].writes]
        assert sorted(stated) == sorted(task.required_outputs), (task_type, seed)
        if task.should_refuse:
            assert task.expected_state.state_hash() == world.new_state().state_hash() and not writes
            assert all(r.expect_refusal for r in brief.requests)
        elif task_type != "order_status":
            assert writes and task.expected_state.state_hash() != world.new_state().state_hash()
        seen["email" if brief.knows_email else "name_zip"] += 1
        seen["id" if all(r.knows_order_id for r in brief.requests) else "hint"] += 1
        seen.update(r.refusal_reason for r in brief.requests if r.expect_refusal)
    # the samples vary in how the customer identifies themselves and the order
    assert seen["email"] and seen["name_zip"]
    if task_type != "modify_user_address":
        assert seen["id"] and seen["hint"]
    if task_type == "policy_refusal":
        assert {"cancel_not_pending", "return_not_delivered", "return_to_other_card", "exchange_other_product",
                "modify_to_unavailable", "gift_card_too_small"} <= set(seen)


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_sampling_is_deterministic_per_seed(world, task_type):
    for seed in range(5):
        a, b = sample(world, task_type, seed), sample(world, task_type, seed)
        assert a.record().model_dump() == b.record().model_dump()
    ids = {sample(world, task_type, seed).instance_id for seed in range(20)}
    assert len(ids) > 10


def test_multi_order_touches_several_orders_of_one_user(world):
    for seed in range(50):
        task = sample(world, "multi_order", seed, n_requests=3)
        brief = CustomerBrief.model_validate(task.private["user"])
        orders = [r.order_id for r in brief.requests]
        assert len(orders) == 3 == len(set(orders))
        user = world.user_row(brief.user_id)
        assert all(world.orders["user"][world.order_row(o)] == user for o in orders)


def test_task_params_are_validated():
    cls = get_task("retail", "policy_refusal")
    with pytest.raises(Exception, match="extra"):
        cls.Params.model_validate({"kinds": ["cancel_not_pending"], "typo": 1})
    with pytest.raises(Exception):
        cls.Params.model_validate({"kinds": ["steal"]})
    only = cls(cls.Params(kinds=["gift_card_too_small"]))
    w = RetailWorld.load({"n_orders": 2000}, 3)
    task = only.sample(w, w.new_state(), np.random.default_rng(0))
    assert task.private["user"]["requests"][0]["refusal_reason"] == "gift_card_too_small"


# -- through the episode engine -----------------------------------------------------------------


def _say(required: str) -> str:
    """A required output as a sentence states it: 'refund 12.50' is '12.50 will be refunded'."""
    way, _, amount = required.partition(" ")
    return {"refund": f"{amount} will be refunded", "charge": f"{amount} will be charged"}.get(way, required)


@register_agent("test_retail_gold_agent")
class GoldReplayAgent(Agent):
    """Replays the gold plan, then states the required outputs (engine integration only)."""

    async def act(self, view):
        done = sum(1 for m in view.messages if m.role == "tool")
        plan = view.task.gold_plan
        if done < len(plan):
            return Message(role="assistant", tool_calls=[plan[done]])
        return "Done. " + ". ".join(_say(r) for r in view.task.required_outputs) if view.task.required_outputs else "Done."


@register_agent("test_retail_quiet_customer")
class QuietCustomer(Agent):
    Params = AgentParams

    async def act(self, view):
        return "hello" if view.turn == 0 else "thanks ###STOP###"


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_gold_plan_succeeds_through_the_episode_engine(task_type):
    sc = scenario_from_data({
        "name": f"retail-{task_type}", "world": {"type": "retail", "params": {"n_orders": 1500}}, "seed": 5,
        "task": {"type": task_type}, "first_speaker": "customer", "max_turns": 40,
        "roles": {"customer": {"kind": "user", "agent": {"type": "test_retail_quiet_customer"}},
                  "support": {"kind": "assistant", "agent": {"type": "test_retail_gold_agent"},
                              "tools": sorted(RetailWorld.tools)}}})
    for spec in episode_specs(sc, 5):
        traj = run_episode_sync(sc, spec)
        assert traj.outcome.success and traj.outcome.state_match is not False, traj.outcome
        assert "Retail support policy" in traj.system["support"]
        assert traj.task.private["user"]["brief"] in traj.system["customer"]
