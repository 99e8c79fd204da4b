"""The scripted retail agents: support oracle, noisy oracle and customer simulator.

The oracle must succeed on every episode of every task type without reading the task's gold plan
or the customer's brief; the noisy oracle must recover from its own mistakes; the customer must
reveal facts only when asked (unless it is forthcoming), end the conversation itself, turn down a
wrong change, and keep facts intact whatever its style and typo rate.
"""

from __future__ import annotations

import collections
import re

import numpy as np
import orjson
import pytest

from simworld.agent import Agent, AgentParams, View
from simworld.agents.retail import nlu
from simworld.agents.retail.customer import Customer, CustomerParams, cues
from simworld.agents.retail.oracle import WRITE_TOOL, SupportOracle
from simworld.agents.retail.plan import ToolPlanner
from simworld.agents.retail.text import Dice, Template, add_typos
from simworld.episode import STOP, Episode, episode_specs, run_episode_sync
from simworld.registry import TASKS, get_world, load_builtins, register_agent
from simworld.scenario import scenario_from_data
from simworld.types import Message, strip_timings

load_builtins()
TASK_TYPES = sorted(TASKS["retail"])
ALL_TOOLS = ["find_user_id_by_email", "find_user_id_by_name_zip", "get_user_details", "get_order_details",
             "get_product_details", "list_all_product_types", "calculate", "transfer_to_human_agents",
             *WRITE_TOOL.values()]
WRITES = set(WRITE_TOOL.values())


def scenario(task: str, support: dict | None = None, customer: dict | None = None, tools=ALL_TOOLS,
             task_params: dict | None = None, world_params: dict | None = None, variations: dict | None = None):
    return scenario_from_data({
        "name": f"agents_{task}", "world": {"type": "retail", "params": world_params or {}},
        "task": {"type": task, "params": task_params or {}},
        "roles": {"customer": {"kind": "user", "agent": {"type": "customer", **(customer or {})}},
                  "support": {"kind": "assistant", "agent": support or {"type": "oracle"}, "tools": list(tools)}},
        "first_speaker": "customer", "max_turns": 100,
        "variations": variations if variations is not None else {
            "roles.customer.agent.style": ["short", "long", "sloppy"],
            "roles.customer.agent.typo_rate": [0.0, 0.05, 0.2]},
    })


def support_texts(t):
    return [e for e in t.events if e.speaker == "support" and e.role == "assistant"]


def check_writes_confirmed(t) -> None:
    """Every write call comes right after the customer's explicit yes to a listed change."""
    said = [e for e in t.events if e.role in ("user", "assistant") and e.speaker != "world"]
    for i, ev in enumerate(said):
        for call in ev.tool_calls:
            if call.name not in WRITES:
                continue
            before = said[:i]
            customer = next(e for e in reversed(before) if e.speaker == "customer")
            proposal = next(e for e in reversed(before) if e.speaker == "support" and e.content)
            assert nlu.yes_no(customer.content) is True, (call, customer.content)
            assert "confirm" in cues(proposal.content.lower()), proposal.content  # what the customer reads
            assert call.arguments.get("order_id", "") in proposal.content


# ----------------------------------------------------------------------------------------------
# Support oracle


@pytest.mark.parametrize("task", TASK_TYPES)
def test_oracle_succeeds_on_every_episode(task):
    sc = scenario(task)
    specs = episode_specs(sc, 120, seed=11)
    for spec in specs:
        t = run_episode_sync(sc, spec)
        out = t.outcome
        assert out.success, (spec, out, [e.content for e in t.events][-6:])
        assert out.termination == "user_stop" and out.state_match is True
        assert out.invalid_moves == 0 and out.tool_errors == 0
        assert out.outputs_stated is not False
        check_writes_confirmed(t)
        calls = [c for e in t.events for c in e.tool_calls]
        if t.task.should_refuse:
            assert not any(c.name in WRITES for c in calls)
            assert any(re.search(r"can't|cannot|isn't possible|not possible", e.content) for e in support_texts(t))
        # authentication comes first, as the policy asks
        assert calls[0].name in ("find_user_id_by_email", "find_user_id_by_name_zip")
    assert {s.variation["roles.customer.agent.style"] for s in specs} == {"short", "long", "sloppy"}


@pytest.mark.parametrize("task_params", [{"p_knows_email": 0.0, "p_knows_order_id": 0.0, "max_items": 5},
                                         {"p_knows_email": 1.0, "p_knows_order_id": 1.0, "max_items": 1}])
def test_oracle_with_hints_names_and_large_catalog(task_params):
    """Orders found by a product the customer mentions, name + zip logins, long item lists, and a catalog
    with 'Laptop' beside 'Laptop Series 2'."""
    world = {"n_orders": 6000, "n_product_types": 120, "variants_per_product": 30, "max_items_per_order": 6}
    for task in ("cancel_pending_order", "exchange_delivered_order_items", "modify_pending_order_items",
                 "return_delivered_order_items", "multi_order", "order_status", "policy_refusal"):
        sc = scenario(task, task_params=task_params, world_params=world)
        for spec in episode_specs(sc, 25, seed=5):
            t = run_episode_sync(sc, spec)
            assert t.outcome.success, (task, spec, t.outcome)


def test_oracle_without_optional_tools():
    """No calculate (it adds up itself), no transfer, no catalog listing, no name + zip lookup."""
    tools = ["find_user_id_by_email", "get_user_details", "get_order_details", "get_product_details",
             "return_delivered_order_items", "exchange_delivered_order_items"]
    for task in ("return_delivered_order_items", "exchange_delivered_order_items"):
        sc = scenario(task, tools=tools, task_params={"p_knows_email": 1.0, "max_items": 3})
        for spec in episode_specs(sc, 30, seed=2):
            t = run_episode_sync(sc, spec)
            assert t.outcome.success, t.outcome
            assert not any(c.name == "calculate" for e in t.events for c in e.tool_calls)


def _result(coro):
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("a scripted agent awaited")


class _Poisoned:
    """Stands in for the task while the oracle acts: any attribute read fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the oracle read task.{name}")


@pytest.mark.parametrize("task", ["exchange_delivered_order_items", "multi_order", "policy_refusal"])
def test_oracle_never_reads_the_task_or_the_customer_brief(task):
    sc = scenario(task)
    for spec in episode_specs(sc, 15, seed=3):
        ep = Episode(sc, spec)
        while not ep.done:
            role = ep.current
            view = ep.view(role)
            if role == "support":
                assert view.private == {}  # the support side starts with nothing but the policy
                real = ep.task
                ep.task = _Poisoned()  # type: ignore[assignment]
                view = View(role=view.role, kind=view.kind, system=view.system, tools=view.tools, private={},
                            persona=view.persona, turn=view.turn, max_turns=view.max_turns, episode=ep,
                            task=_Poisoned())  # type: ignore[arg-type]
                try:
                    action = _result(ep.agents[role].act(view))
                finally:
                    ep.task = real
            else:
                action = _result(ep.agents[role].act(view))
            ep.step(action)
        assert ep.outcome().success


def test_planner_follows_the_tool_graph():
    world = get_world("retail")
    full = ToolPlanner(world, tuple(ALL_TOOLS))
    assert full.customer_facts() >= {"email", "first_name", "last_name", "zip"}
    steps = full.steps("exchange_delivered_order_items",
                       ("order_status", "item_id@get_order_details", "item_id@get_product_details"))
    assert steps == (("find_user_id_by_email", "find_user_id_by_name_zip"), ("get_user_details",),
                     ("get_order_details",), ("get_product_details",))
    assert full.steps("cancel_pending_order", ("order_status",))[-1] == ("get_order_details",)
    # only the e-mail lookup available: one way to authenticate
    email_only = ToolPlanner(world, ("find_user_id_by_email", "get_user_details", "get_order_details",
                                     "cancel_pending_order"))
    assert email_only.steps("cancel_pending_order", ("order_status",))[0] == ("find_user_id_by_email",)
    # without get_user_details, order ids come from search_orders: the graph, not a fixed list, decides
    no_details = ToolPlanner(world, ("find_user_id_by_email", "search_orders", "get_order_details",
                                     "cancel_pending_order"))
    assert ("search_orders",) in no_details.steps("cancel_pending_order", ("order_status",))


@pytest.mark.parametrize("support", [{"type": "oracle"}, {"type": "noisy_oracle", "error_rate": 0.3}])
def test_agents_are_deterministic(support):
    sc = scenario("multi_order", support=support)
    specs = episode_specs(sc, 15, seed=4)
    a = [orjson.dumps(strip_timings(run_episode_sync(sc, s).model_dump(mode="json"))) for s in specs]
    b = [orjson.dumps(strip_timings(run_episode_sync(sc, s).model_dump(mode="json"))) for s in specs]
    assert a == b
    other = [orjson.dumps(strip_timings(run_episode_sync(sc, s).model_dump(mode="json")))
             for s in episode_specs(sc, 15, seed=5)]
    assert other != a


# ----------------------------------------------------------------------------------------------
# Noisy oracle


def test_noisy_oracle_makes_mistakes_and_recovers(capsys):
    variations = {"task.type": TASK_TYPES, "roles.customer.agent.style": ["short", "long", "sloppy"]}
    sc = scenario("cancel_pending_order", support={"type": "noisy_oracle", "error_rate": 0.3},
                  variations=variations)
    kinds: collections.Counter[str] = collections.Counter()
    succeeded = mistakes = recovered = corrected_calls = 0
    specs = episode_specs(sc, 300, seed=9)
    for spec in specs:
        t = run_episode_sync(sc, spec)
        record = t.provenance.models["support"]
        kinds.update(record["mistakes"])
        mistakes += sum(record["mistakes"].values())
        recovered += record["recovered"]
        succeeded += t.outcome.success
        # an error result is followed by a call of the intended tool (the correction)
        support = [e for e in t.events if e.speaker == "support"]
        for i, ev in enumerate(support):
            if ev.role == "tool" and ev.error:
                nxt = support[i + 1]
                assert nxt.tool_calls, "an error result is followed by the corrected call"
                corrected_calls += 1
    rate = succeeded / len(specs)
    with capsys.disabled():
        print(f"\nnoisy_oracle error_rate=0.3: success {rate:.1%} over {len(specs)} episodes, "
              f"{mistakes} mistakes, {recovered} recovered, kinds {dict(kinds)}")
    assert mistakes > len(specs) * 0.5 and corrected_calls > 0
    assert len(kinds) >= 8  # wrong ids, argument names and values, wrong tools, wrong proposals
    assert recovered >= 0.95 * mistakes
    assert rate >= 0.95


def test_noisy_oracle_at_rate_zero_is_the_oracle():
    a = scenario("exchange_delivered_order_items")
    b = scenario("exchange_delivered_order_items", support={"type": "noisy_oracle", "error_rate": 0.0})
    for sa, sb in zip(episode_specs(a, 10, seed=1), episode_specs(b, 10, seed=1)):
        ta, tb = run_episode_sync(a, sa), run_episode_sync(b, sb)
        assert [e.model_dump() for e in ta.events] == [e.model_dump() for e in tb.events]


# ----------------------------------------------------------------------------------------------
# Customer simulator


def _facts(brief: dict) -> list[tuple[str, str]]:
    """(question, fact) pairs: each fact the customer knows and the question that must come first."""
    ident = brief["identity"]
    facts = [("identity", ident["email"] if brief["knows_email"] else f"{ident['first_name']} {ident['last_name']}")]
    for r in brief["requests"]:
        if r.get("order_id"):
            facts.append(("order", r["order_id"] if r["knows_order_id"] else r["order_hint_product"]))
        if r.get("payment_method"):
            facts.append(("payment", r["payment_method"]["description"]))
        if r.get("address"):
            facts.append(("address", r["address"]["address1"]))
    return facts


@pytest.mark.parametrize("task", TASK_TYPES)
def test_customer_reveals_facts_only_when_asked(task):
    sc = scenario(task, customer={"forthcoming_rate": 0.0})  # forthcoming ones: tests/test_customer_checks.py
    for spec in episode_specs(sc, 30, seed=8):
        t = run_episode_sync(sc, spec)
        facts = _facts(t.task.private["user"])
        last_question: set[str] = set()
        revealed: set[str] = set()
        turns = [e for e in t.events if e.role in ("user", "assistant") and e.content and e.speaker != "world"]
        for k, ev in enumerate(turns):
            if ev.speaker == "support":
                last_question = cues(ev.content.lower())
                continue
            for question, fact in facts:
                if fact in ev.content and fact not in revealed:
                    # first told in answer to that question (or when turning down a proposed change)
                    assert k > 0 and (question in last_question or "confirm" in last_question), \
                        (question, fact, turns[k - 1].content, ev.content)
                    revealed.add(fact)
        opening = turns[0]
        assert opening.speaker == "customer" and not any(fact in opening.content for _, fact in facts)
        assert nlu.intent(opening.content) is not None
        last = [e for e in t.events if e.speaker == "customer"][-1]
        assert STOP in last.content and t.outcome.termination == "user_stop"


def test_styles_and_typos_change_words_not_facts():
    sc = scenario("exchange_delivered_order_items", variations={})
    spec = episode_specs(sc, 1, seed=12)[0]
    texts = {}
    for style in ("short", "long", "sloppy"):
        for typo_rate in (0.0, 0.5):
            sc_v = scenario("exchange_delivered_order_items", customer={"style": style, "typo_rate": typo_rate},
                            variations={})
            t = run_episode_sync(sc_v, spec)
            assert t.outcome.success, (style, typo_rate)
            said = [e.content for e in t.events if e.speaker == "customer"]
            brief = t.task.private["user"]
            joined = "\n".join(said)
            request = brief["requests"][0]
            for item in request["items"] + request["new_items"]:
                for value in item["options"].values():
                    assert value in joined  # option values verbatim, whatever the style
            assert brief["identity"]["email"] in joined or brief["identity"]["zip"] in joined
            texts[(style, typo_rate)] = said
    assert len({tuple(v) for v in texts.values()}) == 6
    sloppy = " ".join(texts[("sloppy", 0.0)])
    assert not re.search(r"\b(Hi|Hello|Sure|Yes|No|Please|Thanks|I'm|It's)\b", sloppy)  # lower case around facts
    long_words = sum(len(s.split()) for s in texts[("long", 0.0)]) / len(texts[("long", 0.0)])
    short_words = sum(len(s.split()) for s in texts[("short", 0.0)]) / len(texts[("short", 0.0)])
    assert long_words > short_words


def test_typos_never_touch_slots():
    dice = Dice(np.random.default_rng(0))
    template = Template("Please send it to {email} for order {order_id}, thanks so much for everything")
    values = {"email": "sara.doe496@example.com", "order_id": "#W0001234"}
    seen = set()
    for _ in range(200):
        out = template.render(values, dice, sloppy=False, typo_rate=1.0)
        assert values["email"] in out and values["order_id"] in out
        seen.add(out)
    assert len(seen) > 50
    assert Template("Thanks, I'm done. Please go ahead!").render(sloppy=True) == "thx im done pls go ahead"
    text = "Everything arrived broken, please refund"
    assert add_typos(text, 0.0, dice) == text
    changed = add_typos(text, 1.0, dice)
    assert changed != text and len(changed.split()) == len(text.split())


def _customer(brief: dict, **params) -> Customer:
    return Customer(CustomerParams(type="customer", **params), "customer", np.random.default_rng(0))


def _brief(world_seed: int = 0, task: str = "exchange_delivered_order_items") -> dict:
    sc = scenario(task, variations={})
    ep = Episode(sc, episode_specs(sc, 1, seed=world_seed)[0])
    return ep.task.private["user"]


def test_customer_turns_down_a_wrong_change_and_restates_it():
    brief = _brief()
    request = brief["requests"][0]
    c = _customer(brief)
    c.brief, c.requests, c.opened = brief, brief["requests"], True
    order = request["order_id"]
    good_ids = [i["item_id"] for i in request["items"]] + [i["item_id"] for i in request["new_items"]]
    method = request["payment_method"]
    right = (f"To confirm, I'll exchange, in order {order}, items {', '.join(good_ids)}; the price difference goes "
             f"to {method['description']} ({method['id']}). Shall I proceed? (yes/no)")
    assert nlu.yes_no(c.reply(right)) is True
    wrong_payment = right.replace(method["id"], "paypal_0000000").replace(method["description"], "PayPal")
    answer = c.reply(wrong_payment)
    assert nlu.yes_no(answer) is False and method["description"] in answer
    wrong_order = right.replace(order, "#W9999999")
    answer = c.reply(wrong_order)
    assert nlu.yes_no(answer) is False
    missing_item = right.replace(good_ids[0], "")
    assert nlu.yes_no(c.reply(missing_item)) is False


@register_agent("test_unhelpful_support")
class Unhelpful(Agent):
    """Never asks anything the customer can answer."""

    Params = AgentParams

    async def act(self, view):
        return Message(role="assistant", content="Hmm, let me think about the weather.")


def test_customer_ends_a_stalled_conversation():
    sc = scenario("cancel_pending_order", support={"type": "test_unhelpful_support"}, variations={})
    for spec in episode_specs(sc, 5, seed=1):
        t = run_episode_sync(sc, spec)
        said = [e.content for e in t.events if e.speaker == "customer"]
        assert t.outcome.termination == "user_stop" and STOP in said[-1]
        assert len(said) == 1 + CustomerParams(type="customer").patience + 1
        assert not t.outcome.success  # nothing was cancelled


def test_customer_answers_clarifications_and_asks_back():
    brief = _brief(task="return_delivered_order_items")
    request = brief["requests"][0]
    c = _customer(brief, clarify_rate=1.0)
    c.brief, c.requests, c.opened = brief, brief["requests"], True
    assert "payment methods" in c.reply("Which payment method should the refund go to?").lower()
    assert request["payment_method"]["description"] in c.reply("Which payment method should the refund go to?")
    answer = c.reply("Which order is it about? Do you have the order id?")
    assert (request["order_id"] in answer) if request["knows_order_id"] else (request["order_hint_product"] in answer)
    both = c.reply("Which items would you like to return, and which payment method should the refund go to?")
    assert all(i["name"] in both for i in request["items"]) and request["payment_method"]["description"] in both


def test_customer_moves_through_requests_then_stops():
    brief = _brief(task="multi_order")
    c = _customer(brief, style="long")
    c.brief, c.requests, c.opened = brief, brief["requests"], True
    for k in range(1, len(brief["requests"])):
        nxt = c.reply("Done. Is there anything else I can help you with?")
        assert nlu.intent(nxt) == brief["requests"][k]["intent"] and STOP not in nxt
    assert STOP in c.reply("All set. Anything else I can do for you?")


def test_intents_and_reasons_survive_typos():
    dice = Dice(np.random.default_rng(1))
    cases = {"I want to cancel my order": "cancel", "I'd like to exchange an item I received": "exchange",
             "I need to return some items": "return", "Please update my default address": "modify_user_address",
             "Change the shipping address of my order": "modify_address",
             "I want to change the payment method": "modify_payment",
             "Can I switch an item to a different option?": "modify_items",
             "What's the status of my order?": "order_status"}
    for text, intent in cases.items():
        assert nlu.intent(text) == intent
        for _ in range(20):
            assert nlu.intent(add_typos(text, 0.5, dice)) == intent, text
    assert nlu.cancel_reason("i ordred it by mistkae") == "ordered by mistake"
    assert nlu.cancel_reason("I don't need it anymore") == "no longer needed"
    assert nlu.yes_no("Yaeh, go ahaed") is True and nlu.yes_no("Nope, that's wrong.") is False


# ----------------------------------------------------------------------------------------------
# Robustness: nonsense from the other side never crashes an agent


@register_agent("test_chaos_customer")
class ChaosCustomer(Agent):
    """Answers with random fragments: real facts, wrong ids, yes/no, garbage, in any order."""

    Params = AgentParams

    async def act(self, view):
        ident = view.private["identity"]
        request = view.private["requests"][0]
        pool = ["I want to cancel my order", "return please", "exchange", "yes", "no", "No, that's wrong.",
                ident["email"], f"{ident['first_name']} {ident['last_name']} {ident['zip']}", "#W0000001",
                request.get("order_id") or "", request.get("order_hint") or "", "by mistake", "use my PayPal",
                "gift card", "credit card ending in 1234", "445 Maple Drive, Austin, TX 78701, USA", "asdf qwer",
                "which payment methods do I have on file?", "the Laptop Series 2 in 13-inch", "status of my order"]
        pool += [f"the {i['name']} ({', '.join(i['options'].values())})"
                 for i in (request.get("items") or []) + (request.get("new_items") or [])]
        text = " ".join(pool[int(self.rng.integers(len(pool)))] for _ in range(int(self.rng.integers(1, 4))))
        return Message(role="user", content=text.strip() or "hello")


@register_agent("test_chaos_support")
class ChaosSupport(Agent):
    """Says random support phrases: questions, confirmations with made-up ids, results."""

    Params = AgentParams
    PHRASES = ["Which order is it about?", "What's your email address?", "Which items would you like to return?",
               "What would you like instead?", "Which payment method should we use?", "What is the new address?",
               "What's the reason for the cancellation?", "Shall I proceed? (yes/no) order #W0000001 item "
               "1234567890 paypal_1234567", "Done. Anything else?", "Sorry, I can't do that.", "", "Hmm."]

    async def act(self, view):
        k = int(self.rng.integers(1, 3))
        text = " ".join(self.PHRASES[int(self.rng.integers(len(self.PHRASES)))] for _ in range(k)).strip()
        return Message(role="assistant", content=text or "Hmm.")


@pytest.mark.parametrize("support", ["oracle", "noisy_oracle"])
def test_support_survives_a_nonsensical_customer(support):
    for task in TASK_TYPES:
        sc = scenario(task, support={"type": support}, variations={})
        sc = sc.model_copy(update={"roles": {**sc.roles, "customer": sc.roles["customer"].model_copy(
            update={"agent": sc.roles["customer"].agent.model_validate({"type": "test_chaos_customer"})})}})
        for spec in episode_specs(sc, 12, seed=6):
            t = run_episode_sync(sc, spec)
            assert t.outcome.error is None and t.outcome.invalid_moves == 0  # no crash, no garbage turn
            assert all(e.content or e.tool_calls for e in t.events if e.speaker == "support" and e.role == "assistant")


def test_customer_survives_a_nonsensical_support_side():
    for task in TASK_TYPES:
        sc = scenario(task, support={"type": "test_chaos_support"}, variations={
            "roles.customer.agent.style": ["short", "long", "sloppy"]})
        for spec in episode_specs(sc, 12, seed=6):
            t = run_episode_sync(sc, spec)
            assert t.outcome.termination == "user_stop", t.outcome  # it hangs up rather than running out of turns


# ----------------------------------------------------------------------------------------------
# Required outputs are checked as stated, not as words found anywhere


@pytest.mark.parametrize("required,said,ok", [
    ("delivered", "Order #W1 is 'delivered'. Its total is $12.00.", True),
    ("delivered", "Your order has been delivered.", True),
    ("delivered", "It has been processed and will be delivered in a few days.", False),  # two statuses
    ("processed", "It has been processed and will be delivered in a few days.", False),
    ("delivered", "Your order was not delivered yet.", False),
    ("pending", "It's pending; it hasn't been processed yet.", True),
    ("cancelled", "Your order was canceled on Monday.", True),
    ("pending", "Order #W1 is 'pending (item modified)'.", False),
    ("pending (item modified)", "Order #W1 is 'pending (item modified)'.", True),
    ("charge 171.00", "The price difference of $171.00 will be charged to Visa credit card ending in 1612.", True),
    ("refund 171.00", "The price difference of $171.00 will be charged to Visa credit card ending in 1612.", False),
    ("refund 1122.98", "Return the Portable Charger with a refund of $1,122.98 to Amex credit card ending in 4547.", True),
    ("refund 5.00", "The difference is $5.00. It will be refunded to your PayPal.", True),
    ("refund 5.00", "$5.00 will be refunded. $3.00 will be charged.", True),
    ("charge 3.00", "$5.00 will be refunded. $3.00 will be charged.", True),
    ("charge 5.00", "$5.00 will be refunded. $3.00 will be charged.", False),
    ("refund 5.00", "You won't be charged anything: $5.00 will be refunded.", True),
    ("refund 5.00", "The total is $5.00.", False),  # the amount without its direction
    ("1416.00", "Its total is $1,416.00.", True),  # a plain number: by value, anywhere
])
def test_retail_outputs_are_checked_as_stated(required, said, ok):
    assert get_world("retail").output_stated(required, said) is ok


@register_agent("test_flipped_oracle")
class FlippedOracle(SupportOracle):
    """The oracle, saying 'charged' for a refund and 'refunded' for a charge in its report; its tool calls are
    right, and its proposal leaves the money out (a proposal with the money the wrong way round is declined by
    the customer: see test_customer_declines_wrong_money)."""

    def describe_change(self, intent, args):
        change = super().describe_change(intent, args).rsplit("; ", 1)[0]
        return f"{change}, with {args['payment_method_id']} for any price difference"

    def difference_words(self, method: str) -> str:
        words = super().difference_words(method)
        return words.replace("charged", "\0").replace("refunded", "charged").replace("\0", "refunded")


@register_agent("test_vague_status")
class VagueStatus(SupportOracle):
    """The oracle, giving every order's status as 'processed and will be delivered'."""

    def report_status(self):
        msg = super().report_status()
        return msg.model_copy(update={"content": re.sub(r"is '[^']+'", "has been processed and will be delivered",
                                                        msg.content)})


@pytest.mark.parametrize("task,support", [("modify_pending_order_items", "test_flipped_oracle"),
                                          ("exchange_delivered_order_items", "test_flipped_oracle"),
                                          ("order_status", "test_vague_status")])
def test_a_wrong_answer_in_the_right_words_fails(task, support):
    sc = scenario(task, support={"type": support})
    failed = 0
    for spec in episode_specs(sc, 40, seed=3):
        t = run_episode_sync(sc, spec)
        if t.task.required_outputs and t.task.required_outputs[0].split()[0] in ("refund", "charge", "delivered",
                                                                                 "processed"):
            assert t.outcome.state_match is True and not t.outcome.success, t.outcome
            assert t.outcome.missing_outputs
            failed += 1
    assert failed >= 10


LOOKUPS = ["find_user_id_by_email", "find_user_id_by_name_zip", "get_user_details", "get_order_details"]


@pytest.mark.parametrize("support", [{"type": "oracle"}, {"type": "noisy_oracle", "error_rate": 0.5}])
@pytest.mark.parametrize("task, tools", [
    ("cancel_pending_order", []),  # a role that leaves out `tools:`
    ("cancel_pending_order", ["cancel_pending_order"]),
    ("cancel_pending_order", ["find_user_id_by_email", "find_user_id_by_name_zip", "get_user_details",
                              "cancel_pending_order"]),
    ("cancel_pending_order", ["get_order_details", "cancel_pending_order"]),
    ("cancel_pending_order", LOOKUPS),  # no write tool
    ("return_delivered_order_items", ["find_user_id_by_email", "find_user_id_by_name_zip", "get_order_details",
                                      "return_delivered_order_items"]),  # no payment methods to refund to
    ("exchange_delivered_order_items", [*LOOKUPS, "exchange_delivered_order_items"]),  # no product catalog
    ("order_status", ["find_user_id_by_email", "get_user_details"]),
])
@pytest.mark.parametrize("transfer", [False, True])
def test_oracle_without_the_tools_a_request_needs_says_so(support, task, tools, transfer):
    """A support role that lacks a tool the request cannot be served without (the optional ones, as
    in test_oracle_without_optional_tools, are done without): the oracle transfers or apologises
    at once, never calls a tool it lacks, never guesses, and the episode ends (no KeyError)."""
    tools = [*tools, "transfer_to_human_agents"] if transfer else tools
    sc = scenario(task, support=support, tools=tools, task_params={"p_knows_email": 0.5})
    for spec in episode_specs(sc, 6, seed=4):
        t = run_episode_sync(sc, spec)
        assert not t.outcome.success and t.outcome.termination != "error", t.outcome
        calls = [c for e in t.events if e.speaker == "support" for c in e.tool_calls]
        assert {c.name for c in calls} <= set(tools) - WRITES
        texts = [e.content for e in support_texts(t) if e.content]
        if transfer:
            assert [c.name for c in calls] == ["transfer_to_human_agents"]
            said = re.fullmatch(rf"cannot serve the {task.split('_')[0]}.* request without (.+)",
                                calls[0].arguments["summary"])
            assert said, calls[0].arguments
            assert {*re.split(r", | or ", said[1])}.isdisjoint(tools), said[1]  # names what it lacks
        else:
            assert texts and all(s.startswith("I'm sorry, I'm not able to help with this in chat.") for s in texts)


@pytest.mark.parametrize("task", ["return_delivered_order_items", "exchange_delivered_order_items"])
def test_noisy_oracle_states_the_amount_of_the_change_it_proposes(task):
    """A proposal that leaves an item out (the deliberate mistake) states the refund or price
    difference of the items it lists, not of the correct change: a wrong change, stated consistently."""
    sc = scenario(task, support={"type": "noisy_oracle", "error_rate": 0.6}, task_params={"max_items": 3})
    tampered = 0
    for spec in episode_specs(sc, 40, seed=7):
        t = run_episode_sync(sc, spec)
        prices: dict[str, float] = {}
        for e in t.events:
            if e.role == "tool" and not e.error and e.name in ("get_order_details", "get_product_details"):
                data = orjson.loads(e.content)
                for item in [*data.get("items", []), *data.get("variants", {}).values()]:
                    prices[item["item_id"]] = item["price"]
        for e in support_texts(t):
            if "(yes/no)" not in e.content:
                continue
            ids = re.findall(r"; item (\d+)\)", e.content)
            stated = re.search(r"(refund of|price difference of) \$([\d,]+\.\d\d)", e.content)
            if stated is None:
                assert "no price difference" in e.content, e.content
                continue
            amount = float(stated[2].replace(",", ""))
            if task.startswith("return"):
                expected = sum(prices[i] for i in ids)
            else:  # "the X (...; item OLD) to the X (...; item NEW)" pairs
                expected = abs(sum(prices[n] - prices[o] for o, n in zip(ids[::2], ids[1::2])))
            assert amount == pytest.approx(expected, abs=0.005), e.content
        tampered += t.provenance.models["support"]["mistakes"].get("proposal_items", 0)
    assert tampered >= 3  # the mistake this is about was made


# ----------------------------------------------------------------------------------------------
# The customer checks the new options and the money before saying yes (QA finding 6)


def _swap_brief(task: str, want_diff: bool = True) -> dict:
    """A brief of `task` whose price difference is not zero (when `want_diff`)."""
    from simworld.agents.retail.customer import expected_money

    for seed in range(50):
        brief = _brief(seed, task)
        owed = expected_money(brief["requests"][0])
        if not want_diff or (owed is not None and abs(owed) > 0.005):
            return brief
    raise AssertionError("no brief with a price difference")


def _opts(item: dict) -> str:
    return ", ".join(item["options"].values())


def _proposal(request: dict, new_items: list[dict], money_words: str, ids: bool) -> str:
    def item(i: dict) -> str:
        return f"the {i['name']} ({_opts(i)}" + (f"; item {i['item_id']})" if ids else ")")
    pairs = " and ".join(f"{item(o)} to {item(n)}" for o, n in zip(request["items"], new_items))
    method = request["payment_method"]
    verb = "exchange" if request["intent"] == "exchange" else "modify"
    return (f"To confirm, I'll {verb}, in order {request['order_id']}, {pairs}; {money_words} "
            f"{method['description']} ({method['id']}). Shall I proceed?")


def _customer_for(brief: dict) -> Customer:
    c = _customer(brief)
    c.brief, c.requests, c.opened = brief, brief["requests"], True
    return c


@pytest.mark.parametrize("task", ["exchange_delivered_order_items", "modify_pending_order_items"])
def test_customer_declines_wrong_new_options_and_money(task):
    from simworld.agents.retail.customer import expected_money, money_claims
    from simworld.agents.retail.text import money

    brief = _swap_brief(task)
    request = brief["requests"][0]
    c = _customer_for(brief)
    owed = expected_money(request)
    right_way = "charged to" if owed > 0 else "refunded to"
    wrong_way = "refunded to" if owed > 0 else "charged to"
    right_money = f"the price difference of {money(abs(owed))} will be {right_way}"
    new = request["new_items"]
    wanted = [v for n in new for v in n["options"].values()]
    for ids in (False, True):
        assert nlu.yes_no(c.reply(_proposal(request, new, right_money, ids))) is True
    # the old options offered again as the new ones, named without ids
    answer = c.reply(_proposal(request, request["items"], right_money, ids=False))
    assert nlu.yes_no(answer) is False and all(nlu.has_phrase(answer.lower(), v) for v in wanted), answer
    # the money the wrong way round, or the wrong amount
    for words in (f"the price difference of {money(abs(owed))} will be {wrong_way}",
                  f"the price difference of {money(abs(owed) + 10)} will be {right_way}",
                  f"the price difference will be {wrong_way}"):
        answer = c.reply(_proposal(request, new, words, ids=True))
        assert nlu.yes_no(answer) is False, (words, answer)
        assert all(nlu.has_phrase(answer.lower(), v) for v in wanted), answer
        if "$" in words:
            assert (abs(owed), {"charge" if owed > 0 else "refund"}) in money_claims(answer), answer
    # a wrong new item id: the new item is corrected, not the old one
    wrong_new = [dict(n, item_id="9999999999") for n in new]
    answer = c.reply(_proposal(request, wrong_new, right_money, ids=True))
    assert nlu.yes_no(answer) is False and all(nlu.has_phrase(answer.lower(), v) for v in wanted), answer
    assert c.mismatch(request, _proposal(request, wrong_new, right_money, ids=True)) == "new_items"


def test_customer_declines_a_wrong_refund_on_a_return():
    from simworld.agents.retail.customer import expected_money
    from simworld.agents.retail.text import money

    brief = _swap_brief("return_delivered_order_items")
    request = brief["requests"][0]
    c = _customer_for(brief)
    refund = -expected_money(request)
    method = request["payment_method"]
    listing = " and ".join(f"the {i['name']} ({_opts(i)}; item {i['item_id']})" for i in request["items"])
    base = f"To confirm, I'll return {listing} from order {request['order_id']}, with a {{}} to {method['description']} " \
           f"({method['id']}). Shall I proceed?"
    assert nlu.yes_no(c.reply(base.format(f"refund of {money(refund)}"))) is True
    assert nlu.yes_no(c.reply(base.format(f"refund of {money(refund + 1)}"))) is False
    answer = c.reply(base.format(f"charge of {money(refund)}"))
    assert nlu.yes_no(answer) is False and money(refund) in answer


def test_customer_declines_a_cancellation_that_charges():
    brief = _brief(0, "cancel_pending_order")
    request = brief["requests"][0]
    c = _customer_for(brief)
    paid = "$" + request["money_owed"].split()[1]  # 'refund 123.45': the brief knows what was paid
    text = f"To confirm, I'll cancel order {request['order_id']} (reason: {request['reason']}); the amount paid, " \
           f"{paid}, will be {{}} the original payment method. Shall I proceed?"
    assert nlu.yes_no(c.reply(text.format("refunded to"))) is True
    assert nlu.yes_no(c.reply(text.format("charged to"))) is False


# ----------------------------------------------------------------------------------------------
# The support side is not a handful of fixed sentences (QA findings 5 and 10)

_MASKS = [(re.compile(r"#W\d{7}"), "<ORDER>"), (re.compile(r"\b(?:credit_card|paypal|gift_card)_\d{7}\b"), "<PM>"),
          (re.compile(r"\b\d{10,12}\b"), "<ID>"), (re.compile(r"\$[\d,]+\.\d\d"), "<AMT>"),
          (re.compile(r"[\w.]+@[\w.]+"), "<EMAIL>"), (re.compile(r"\b[A-Z][a-z]+\b"), "<W>")]


def _template(text: str) -> str:
    for rx, rep in _MASKS:
        text = rx.sub(rep, text)
    return text


def test_support_phrasing_varies_per_move():
    sc = scenario("cancel_pending_order")
    proposals, reports, episodes = set(), set(), 0
    yes_no_marker = 0
    for spec in episode_specs(sc, 150, seed=4):
        t = run_episode_sync(sc, spec)
        episodes += 1
        said = [e.content for e in support_texts(t) if e.content]
        proposal = [s for s in said if "confirm" in cues(s.lower())]
        report = [s for s in said if "cancelled" in s.lower() and "confirm" not in cues(s.lower())]
        assert proposal and report
        proposals.add(_template(proposal[0]))
        reports.add(_template(report[0].split("?")[0]))
        yes_no_marker += "(yes/no)" in proposal[0]
    assert len(proposals) >= 6 and len(reports) >= 3, (proposals, reports)
    assert yes_no_marker < 0.75 * episodes  # not always the literal marker


def _successful_runs(task: str, n: int, seed: int):
    sc = scenario(task)
    for spec in episode_specs(sc, n, seed=seed):
        t = run_episode_sync(sc, spec)
        assert t.outcome.success, t.outcome
        yield t


def test_order_status_questions_vary_and_are_answered():
    asked = collections.Counter()
    for t in _successful_runs("order_status", 120, seed=5):
        asked[tuple(t.task.private["user"]["requests"][0]["ask"])] += 1
    assert {topic for ask in asked for topic in ask} == {"status", "total", "items", "tracking"}, asked
    assert len(asked) >= 5 and max(asked.values()) < 0.5 * sum(asked.values()), asked


def test_later_requests_are_not_told_they_are_verified_again():
    later_asks = 0
    for t in _successful_runs("multi_order", 40, seed=6):
        said = [e.content for e in support_texts(t) if e.content]
        verified = [s for s in said if "verified" in s or "found your account" in s or re.search(r"^(Thanks|Thank you|Got it),", s)]
        assert len(verified) <= 1, verified
        asks = [s for s in said if "order" in cues(s.lower()) and "order id" in s.lower()]
        later_asks += max(0, len(asks) - 1)
    assert later_asks >= 10


def test_address_change_conversations_vary_in_length():
    lengths = collections.Counter()
    for t in _successful_runs("modify_user_address", 60, seed=7):
        lengths[sum(1 for e in t.events if e.role in ("user", "assistant") and e.speaker != "world")] += 1
    assert len(lengths) >= 2 and max(lengths.values()) < 0.8 * 60, lengths
