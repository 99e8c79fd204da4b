"""What the scripted retail customer checks before it says yes: the money of a cancellation (the
refund of what it paid) and of a payment-method change (the order total charged to the new method,
the old one refunded), read from its brief and objected to, in its own voice, when wrong: a wrong
amount with or without a direction beside it, money moving the wrong way on either method.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from simworld.agents.retail import nlu
from simworld.agents.retail.customer import Customer, CustomerParams, cues, expected_money
from simworld.agents.retail.oracle import SupportOracle
from simworld.agents.retail.text import money
from simworld.environments.retail.vocab import money_claims
from simworld.episode import Episode, episode_specs, run_episode_sync
from simworld.registry import load_builtins, register_agent
from simworld.scenario import scenario_from_data
from simworld.types import strip_timings

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


@pytest.mark.parametrize("style", ["short", "long", "sloppy"])
@pytest.mark.parametrize("seed", range(4))
def test_customer_objects_to_a_wrong_amount_said_without_a_direction(style, seed):
    c, request, paid = customer_for("cancel_pending_order", style, seed)
    bare = "The total is {}. Shall I go ahead and cancel order {} (reason: {})?"
    assert nlu.yes_no(c.reply(bare.format(money(paid), request["order_id"], request["reason"]))) is True
    answer = c.reply(bare.format(money(paid + 9), request["order_id"], request["reason"]))
    assert nlu.yes_no(answer) is False and (paid, {"refund"}) in money_claims(answer), answer

    c, request, total = customer_for("modify_pending_order_payment", style, seed)
    method = request["payment_method"]
    bare = (f"I'll change the payment method of order {request['order_id']} to {method['description']} "
            f"({method['id']}). The order total is {{}}. Shall I proceed?")
    assert nlu.yes_no(c.reply(bare.format(money(total)))) is True
    answer = c.reply(bare.format(money(total + 9)))
    assert nlu.yes_no(answer) is False and money(total) in answer and "charge" in answer.lower(), answer


@pytest.mark.parametrize("style", ["short", "long", "sloppy"])
@pytest.mark.parametrize("seed", range(4))
def test_customer_objects_to_a_wrong_return_amount_said_without_a_direction(style, seed):
    request = episode("return_delivered_order_items", seed).task.private["user"]["requests"][0]
    c = Customer(CustomerParams(type="customer", style=style), "customer", np.random.default_rng(seed))
    c.brief, c.requests, c.opened = {"requests": [request]}, [request], True
    refund = -expected_money(request)
    names = " and the ".join(i["name"] for i in request["items"])
    method = request["payment_method"]["description"]
    bare = (f"I'll return the {names} from order {request['order_id']} to your {method}. That's "
            "{} in total. Shall I go ahead?")
    assert nlu.yes_no(c.reply(bare.format(money(refund)))) is True
    answer = c.reply(bare.format(money(refund + 9)))
    assert nlu.yes_no(answer) is False and (refund, {"refund"}) in money_claims(answer), answer


@pytest.mark.parametrize("style", ["short", "long", "sloppy"])
@pytest.mark.parametrize("seed", range(4))
def test_a_payment_change_may_name_the_method_it_moves_from(style, seed):
    c, request, total = customer_for("modify_pending_order_payment", style, seed)
    method = request["payment_method"]
    other = ("paypal" if method["kind"] != "paypal" else "credit_card") + "_0000001"
    new = f"your {method['description']} ({method['id']})"
    switch = (f"I'll switch the payment of order {request['order_id']} from {other} to {new}: {money(total)} will be "
              "{}. Shall I proceed?")
    assert nlu.yes_no(c.reply(switch.format(f"charged to {new} and refunded to {other}"))) is True
    assert nlu.yes_no(c.reply(switch.format(f"refunded to {other} once {new} is charged"))) is True
    answer = c.reply(switch.format(f"charged to {other} and refunded to {new}"))
    assert nlu.yes_no(answer) is False and money(total) in answer and "charge" in answer.lower(), answer
    answer = c.reply(f"I'll change the payment method of order {request['order_id']} to {other}; {money(total)} will "
                     "be charged to it and the original payment refunded. Shall I proceed?")
    assert nlu.yes_no(answer) is False and method["description"] in answer, answer  # the wrong method is corrected


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


class BareMoneyOracle(SupportOracle):
    """The oracle, stating a cancellation's or a payment change's money with no direction: 'the total is $X'."""

    offset = 0.0

    def describe_change(self, intent, args):
        text = super().describe_change(intent, args)
        moved = list(re.finditer(r"\$[\d,]+\.\d\d", text))[-1]  # the last amount (a gift card's balance comes first)
        return f"{text.split(';')[0]}; the total is {money(float(moved.group()[1:].replace(',', '')) + self.offset)}"


@register_agent("test_checks_bare_wrong_money")
class BareWrongMoneyOracle(BareMoneyOracle):
    offset = 1.0


register_agent("test_checks_bare_money")(BareMoneyOracle)


@register_agent("test_checks_no_charge")
class NoChargeOracle(SupportOracle):
    """The oracle, saying there is no charge where its proposal states the money ('there's no charge')."""

    def describe_change(self, intent, args):
        return f"{super().describe_change(intent, args).split(';')[0]}; there's no charge for this"


def proposals_and_answers(t) -> tuple[list[str], list[str]]:
    """The support side's proposals of a cancellation or a payment change, and the customer's answers."""
    said = [e for e in t.events if e.role in ("user", "assistant") and e.content and e.speaker != "world"]
    proposals = [i for i, e in enumerate(said) if e.speaker == "support"
                 and ("(reason:" in e.content or "change the payment method of order" in e.content)]
    assert proposals, [e.content for e in said]
    return [said[i].content for i in proposals], [said[i + 1].content for i in proposals if i + 1 < len(said)]


def written(t) -> bool:
    return any(c.name in ("cancel_pending_order", "modify_pending_order_payment")
               for e in t.events for c in e.tool_calls)


@pytest.mark.parametrize("support", ["test_checks_wrong_money", "test_checks_wrong_way",
                                     "test_checks_bare_wrong_money"])
@pytest.mark.parametrize("task", ["cancel_pending_order", "modify_pending_order_payment"])
def test_a_wrong_proposal_is_turned_down_and_nothing_is_written(support, task):
    sc = scenario(task, support)
    for spec in episode_specs(sc, 8, seed=1):
        t = run_episode_sync(sc, spec)
        proposals, answers = proposals_and_answers(t)
        assert nlu.yes_no(answers[0]) is False, (proposals[0], answers[0])
        assert not any(nlu.yes_no(a) for a in answers), answers
        assert not written(t)
        assert not t.outcome.success and t.outcome.state_match is False


@pytest.mark.parametrize("task,disputed", [("modify_pending_order_payment", True), ("cancel_pending_order", False)])
def test_no_charge_is_turned_down_only_where_a_charge_is_owed(task, disputed):
    """'There's no charge' states a zero charge: wrong for a payment change (the order total is charged to
    the new method), no objection for a cancellation (which charges nothing; its refund is not denied)."""
    sc = scenario(task, "test_checks_no_charge")
    for spec in episode_specs(sc, 8, seed=1):
        t = run_episode_sync(sc, spec)
        proposals, answers = proposals_and_answers(t)
        assert nlu.yes_no(answers[0]) is not disputed, (proposals[0], answers[0])
        assert written(t) is not disputed
        if disputed:  # the customer restates the charge it expects, and never says yes
            assert "charge" in answers[0].lower() and not any(nlu.yes_no(a) for a in answers), answers


@pytest.mark.parametrize("support", ["oracle", "test_checks_bare_money"])
@pytest.mark.parametrize("task", ["cancel_pending_order", "modify_pending_order_payment"])
def test_the_oracle_still_gets_a_yes(task, support):
    sc = scenario(task, support)
    for spec in episode_specs(sc, 20, seed=2):
        t = run_episode_sync(sc, spec)
        assert t.outcome.success, t.outcome
        said = [e for e in t.events if e.role in ("user", "assistant") and e.content and e.speaker != "world"]
        answers = [b.content for a, b in zip(said, said[1:]) if a.speaker == "support" and "confirm" in
                   cues(a.content.lower())]
        assert answers and all(nlu.yes_no(a) is True for a in answers), answers  # every proposal: yes at once


# ----------------------------------------------------------------------------------------------
# A forthcoming customer gives some facts before it is asked, and only its own


def mixed(rate: float | None, styles=("short", "long", "sloppy")):
    customer = {"type": "customer"} | ({} if rate is None else {"forthcoming_rate": rate})
    return scenario_from_data({
        "name": "forthcoming", "world": {"type": "retail", "params": {}}, "task": {"type": "order_status"},
        "roles": {"customer": {"kind": "user", "agent": customer},
                  "support": {"kind": "assistant", "agent": {"type": "oracle"}, "tools": TOOLS + [
                      "modify_pending_order_address", "modify_pending_order_items", "return_delivered_order_items",
                      "exchange_delivered_order_items", "modify_user_address"]}},
        "first_speaker": "customer", "max_turns": 90,
        "variations": {"task.type": ["order_status", "cancel_pending_order", "modify_pending_order_payment",
                                     "return_delivered_order_items", "modify_user_address", "multi_order"],
                       "roles.customer.agent.style": list(styles), "task.params.p_knows_email": [0.0, 1.0]}})


def told_before_asked(t) -> list[tuple[str, str]]:
    """(fact kind, value) of what the customer said before the support side asked for that kind."""
    asked: set[str] = set()
    out = []
    for e in t.events:
        if any(c.name.startswith("find_user_id") for c in e.tool_calls):
            asked.add("identity")  # identified: what follows is no identity (an address with its zip)
        if e.speaker == "support" and e.role == "assistant" and e.content:
            found = cues(e.content.lower())
            asked |= found & {"identity", "order"}
            asked -= {"order"} - found if "anything_else" in found else set()  # a new request: asked again
        elif e.speaker == "customer":
            if "identity" not in asked:
                out += [("email", x) for x in filter(None, [nlu.email(e.content)])]
                out += [("name_zip", " ".join(nz)) for nz in filter(None, [nlu.name_and_zip(e.content)])]
            if "order" not in asked:
                out += [("order_id", x) for x in nlu.order_ids(e.content)]
    return out


def test_a_forthcoming_customer_tells_its_own_facts_early_and_the_oracle_takes_them():
    sc = mixed(1.0)
    kinds = []
    for spec in episode_specs(sc, 60, seed=3):
        t = run_episode_sync(sc, spec)
        assert t.outcome.success, t.outcome
        brief = t.task.private["user"]
        ident = brief["identity"]
        own = {("email", ident["email"]) if brief["knows_email"] else
               ("name_zip", f"{ident['first_name']} {ident['last_name']} {ident['zip']}")}
        own |= {("order_id", r["order_id"]) for r in brief["requests"] if r["order_id"] and r["knows_order_id"]}
        early = told_before_asked(t)
        assert set(early) <= own, (early, own)  # never a fact it does not hold, nor one it must not say
        kinds += [k for k, _ in early]
        said = [e.content for e in t.events if e.speaker == "customer"]
        kinds += ["in the opening"] * bool(nlu.order_ids(said[0]) or nlu.email(said[0]) or nlu.name_and_zip(said[0]))
        kinds += ["two facts in one message" for text in said
                  if nlu.order_ids(text) and (nlu.email(text) or nlu.name_and_zip(text))]
    counts = {k: kinds.count(k) for k in set(kinds)}
    wanted = {"email": 5, "name_zip": 5, "order_id": 10, "two facts in one message": 5, "in the opening": 20}
    assert all(counts.get(k, 0) >= n for k, n in wanted.items()), counts


def test_only_some_customers_are_forthcoming_and_none_when_the_rate_is_zero():
    for rate, low, high in ((None, 10, 50), (0.0, 0, 0)):  # None: the default rate, 0.3
        sc = mixed(rate)
        early = sum(bool(told_before_asked(run_episode_sync(sc, spec))) for spec in episode_specs(sc, 100, seed=4))
        assert low <= early <= high, (rate, early)


def test_forthcoming_conversations_are_reproducible():
    sc = mixed(1.0)
    for spec in episode_specs(sc, 5, seed=9):
        a, b = run_episode_sync(sc, spec), run_episode_sync(sc, spec)
        assert strip_timings(a.model_dump()) == strip_timings(b.model_dump())
