"""What the scripted retail customer checks before it says yes: the money of a cancellation (the
refund of what it paid) and of a payment-method change (the order total charged to the new method,
the old one refunded), read from its brief and objected to, in its own voice, when wrong.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from simworld.agents.retail import nlu
from simworld.agents.retail.customer import Customer, CustomerParams, cues
from simworld.agents.retail.oracle import SupportOracle
from simworld.agents.retail.text import money
from simworld.environments.retail.vocab import money_claims
from simworld.episode import Episode, episode_specs, run_episode_sync
from simworld.registry import load_builtins, register_agent
from simworld.scenario import scenario_from_data

load_builtins()
TOOLS = ["find_user_id_by_email", "find_user_id_by_name_zip", "get_user_details", "get_order_details",
         "get_product_details", "calculate", "cancel_pending_order", "modify_pending_order_payment"]


def scenario(task: str, support: str = "oracle", style: str = "short"):
    return scenario_from_data({
        "name": f"checks_{task}", "world": {"type": "retail", "params": {}},
        "task": {"type": task, "params": {}},
        "roles": {"customer": {"kind": "user", "agent": {"type": "customer", "style": style}},
                  "support": {"kind": "assistant", "agent": {"type": support}, "tools": TOOLS}},
        "first_speaker": "customer", "max_turns": 60})


def episode(task: str, seed: int) -> Episode:
    sc = scenario(task)
    return Episode(sc, episode_specs(sc, 1, seed=seed)[0])


def customer_for(task: str, style: str, seed: int) -> tuple[Customer, dict, float]:
    """A customer of `task`'s brief past its opening, its request, and the money its brief expects."""
    brief = episode(task, seed).task.private["user"]
    c = Customer(CustomerParams(type="customer", style=style), "customer", np.random.default_rng(seed))
    c.brief, c.requests, c.opened = brief, brief["requests"], True
    return c, brief["requests"][0], float(brief["requests"][0]["money_owed"].split()[1])


# ----------------------------------------------------------------------------------------------
# The briefs say what the customer paid and what a payment change charges


@pytest.mark.parametrize("seed", range(6))
def test_a_cancellation_brief_knows_what_was_paid(seed):
    ep = episode("cancel_pending_order", seed)
    request = ep.task.private["user"]["requests"][0]
    world, state = ep.world, ep.state
    row = world.order_row(request["order_id"])
    paid = world.order_total(state, row)  # a pending order was paid once, in full
    assert request["money_owed"] == f"refund {paid / 100:.2f}"
    assert request["money_owed"] in ep.task.required_outputs  # what the agent must state, and the customer checks
    assert f"${paid / 100:.2f}" in ep.task.private["user"]["brief"]  # an LLM customer knows it too


@pytest.mark.parametrize("seed", range(6))
def test_a_payment_change_brief_knows_the_order_total(seed):
    ep = episode("modify_pending_order_payment", seed)
    request = ep.task.private["user"]["requests"][0]
    total = ep.world.order_total(ep.state, ep.world.order_row(request["order_id"]))
    assert request["money_owed"] == f"charge {total / 100:.2f}"
    assert ep.task.required_outputs == [f"{total / 100:.2f}"]
    assert f"${total / 100:.2f}" in ep.task.private["user"]["brief"]


# ----------------------------------------------------------------------------------------------
# The customer's answer to a proposal


def _cancel_proposal(request: dict, amount: float, way: str = "refunded to") -> str:
    return (f"To confirm, I'll cancel order {request['order_id']} (reason: {request['reason']}); the amount paid, "
            f"{money(amount)}, will be {way} the original payment method. Shall I proceed?")


@pytest.mark.parametrize("style", ["short", "long", "sloppy"])
@pytest.mark.parametrize("seed", range(4))
def test_customer_objects_to_a_wrong_cancellation_refund(style, seed):
    c, request, paid = customer_for("cancel_pending_order", style, seed)
    assert nlu.yes_no(c.reply(_cancel_proposal(request, paid))) is True
    for wrong in (_cancel_proposal(request, paid + 10), _cancel_proposal(request, round(paid * 0.5, 2)),
                  _cancel_proposal(request, paid, "charged to")):
        answer = c.reply(wrong)
        assert nlu.yes_no(answer) is False, (wrong, answer)
        assert (paid, {"refund"}) in money_claims(answer), answer  # restates the refund it expects


def _payment_proposal(request: dict, amount: float, words: str = "will be charged to it and the original "
                                                                    "payment refunded") -> str:
    method = request["payment_method"]
    return (f"To confirm, I'll change the payment method of order {request['order_id']} to {method['description']} "
            f"({method['id']}); {money(amount)} {words}. Shall I proceed?")


@pytest.mark.parametrize("style", ["short", "long", "sloppy"])
@pytest.mark.parametrize("seed", range(4))
def test_customer_objects_to_a_wrong_payment_change(style, seed):
    c, request, total = customer_for("modify_pending_order_payment", style, seed)
    name = request["payment_method"]["description"]
    for right in (_payment_proposal(request, total),
                  _payment_proposal(request, total, f"will be refunded to your current method and charged to "
                                                    f"your {name}")):
        assert nlu.yes_no(c.reply(right)) is True, right
    for wrong in (_payment_proposal(request, total + 1),
                  _payment_proposal(request, total, "will be refunded to it and the original payment charged"),
                  _payment_proposal(request, total, f"will be charged to your current method and refunded to "
                                                    f"your {name}")):
        answer = c.reply(wrong)
        assert nlu.yes_no(answer) is False, (wrong, answer)
        assert money(total) in answer and "charge" in answer.lower(), answer


# ----------------------------------------------------------------------------------------------
# Whole conversations: a support side that states the wrong money never gets a yes


@register_agent("test_checks_wrong_money")
class WrongMoneyOracle(SupportOracle):
    """The oracle, proposing a cancellation or a payment change with a dollar more than it should."""

    def describe_change(self, intent, args):
        text = super().describe_change(intent, args)
        moved = list(re.finditer(r"\$[\d,]+\.\d\d", text))[-1]  # the last amount (a gift card's balance comes first)
        return text[:moved.start()] + money(float(moved.group()[1:].replace(",", "")) + 1) + text[moved.end():]


@register_agent("test_checks_wrong_way")
class WrongWayOracle(SupportOracle):
    """The oracle, saying the money goes the wrong way in its proposal (its tool calls are right)."""

    def describe_change(self, intent, args):
        text = super().describe_change(intent, args)
        return text.replace("charged", "\0").replace("refunded", "charged").replace("\0", "refunded")


@pytest.mark.parametrize("support", ["test_checks_wrong_money", "test_checks_wrong_way"])
@pytest.mark.parametrize("task", ["cancel_pending_order", "modify_pending_order_payment"])
def test_a_wrong_proposal_is_turned_down_and_nothing_is_written(support, task):
    sc = scenario(task, support)
    for spec in episode_specs(sc, 8, seed=1):
        t = run_episode_sync(sc, spec)
        said = [e for e in t.events if e.role in ("user", "assistant") and e.content and e.speaker != "world"]
        proposals = [i for i, e in enumerate(said) if e.speaker == "support"
                     and ("(reason:" in e.content or "change the payment method of order" in e.content)]
        assert proposals, [e.content for e in said]
        answers = [said[i + 1].content for i in proposals if i + 1 < len(said)]
        assert nlu.yes_no(answers[0]) is False, (said[proposals[0]].content, answers[0])
        assert not any(nlu.yes_no(a) for a in answers), answers
        assert not any(c.name in ("cancel_pending_order", "modify_pending_order_payment")
                       for e in t.events for c in e.tool_calls)
        assert not t.outcome.success and t.outcome.state_match is False


@pytest.mark.parametrize("task", ["cancel_pending_order", "modify_pending_order_payment"])
def test_the_oracle_still_gets_a_yes(task):
    sc = scenario(task)
    for spec in episode_specs(sc, 20, seed=2):
        t = run_episode_sync(sc, spec)
        assert t.outcome.success, t.outcome
        said = [e for e in t.events if e.role in ("user", "assistant") and e.content and e.speaker != "world"]
        answers = [b.content for a, b in zip(said, said[1:]) if a.speaker == "support" and "confirm" in
                   cues(a.content.lower())]
        assert answers and all(nlu.yes_no(a) is True for a in answers), answers  # every proposal: yes at once
