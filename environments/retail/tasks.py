"""Retail task generators: sample a concrete customer goal from a generated world.

Each generator picks an eligible target with the episode's RNG by drawing candidate rows and
checking them (a Numba scan is the fallback when eligible rows are rare), so sampling costs the
same at 1,000 or 1,000,000 orders. It returns a :class:`TaskInstance` whose ``private["user"]`` is a
:class:`~.schema.CustomerBrief` (dumped), whose gold plan holds the calls an ideal support agent
makes (authentication, lookups, then the writes), and whose expected state is the gold plan's
writes applied to a snapshot (which proves the task solvable).

Types: ``order_status``, ``cancel_pending_order``, ``modify_pending_order_address``,
``modify_pending_order_payment``, ``modify_pending_order_items``, ``return_delivered_order_items``,
``exchange_delivered_order_items``, ``modify_user_address``, ``multi_order`` and
``policy_refusal``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from simworld.registry import register_task
from simworld.task import TaskGenerator, TaskInstance
from simworld.types import ToolCall
from simworld.errors import SimworldError
from simworld.world import State

from . import kernels, vocab
from .schema import Address, CustomerBrief, Identity, ItemRef, PaymentRef, Request
from .world import CANCELLED, DELIVERED, GIFT_CARD, PENDING, PROCESSED, RetailWorld, money, owed

SAMPLE_TRIES = 64


class NoEligibleTarget(SimworldError):
    """The world holds no target for this task type (e.g. a tiny world without delivered orders)."""

    def __str__(self) -> str:
        return f"{super().__str__()} in this world: too small for the task? (world.params: n_orders, status_mix)"


class RetailTaskParams(BaseModel):
    """How the customer knows things, and request sizes. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    p_knows_email: float = Field(default=0.6, ge=0, le=1, description="Chance the customer authenticates by "
                                                                         "e-mail rather than name + zip.")
    p_knows_order_id: float = Field(default=0.6, ge=0, le=1, description="Chance the customer knows the order "
                                                                            "id rather than describing the order.")
    max_items: int = Field(default=2, ge=1, le=10, description="Most items in one return/exchange/modification.")


@dataclass
class Step:
    """One request with the tool calls that serve it."""

    request: Request
    lookups: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    writes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    text: str = ""


# ----------------------------------------------------------------------------------------------
# sampling helpers


def _pick(rng: np.random.Generator, seq: Any) -> Any:
    return seq[int(rng.integers(len(seq)))]


def sample_orders(world: RetailWorld, state: State, rng: np.random.Generator, statuses: tuple[int, ...],
                  accept: Callable[[int], bool] = lambda r: True) -> int:
    """A random order row with one of `statuses` for which `accept(row)` holds.

    Draws random rows first; when eligible rows are rare, scans (one kernel call per status) from a
    random start and checks a bounded batch of candidates.
    """
    n = world.orders.n
    for _ in range(SAMPLE_TRIES):
        r = int(rng.integers(n))
        if int(state.get("orders", "status", r)) in statuses and accept(r):
            return r
    column = state.column("orders", "status")
    for status in statuses:
        for r in kernels.eligible_rows(column, status, int(rng.integers(n)), 4096):
            if accept(int(r)):
                return int(r)
    raise NoEligibleTarget(f"no eligible order with status {[world.data.vocab['status'][s] for s in statuses]}")


def _identity(world: RetailWorld, user: int) -> Identity:
    v = world.data.vocab
    return Identity(first_name=v["first_name"][world.users["first"][user]].capitalize(),
                    last_name=v["last_name"][world.users["last"][user]].capitalize(),
                    zip=world.address_row(int(world.users["address"][user]))["zip"], email=world.email(user))


def _auth_calls(world: RetailWorld, user: int, knows_email: bool) -> list[tuple[str, dict[str, Any]]]:
    ident = _identity(world, user)
    first = ("find_user_id_by_email", {"email": ident.email}) if knows_email else \
        ("find_user_id_by_name_zip", {"first_name": ident.first_name, "last_name": ident.last_name,
                                      "zip": ident.zip})
    return [first, ("get_user_details", {"user_id": world.user_id(user)})]


def _line_products(world: RetailWorld, state: State, order: int) -> set[int]:
    items, _ = world.order_items(state, order)
    return {int(world.variants["product"][v]) for v in items}


def _order_reference(world: RetailWorld, state: State, rng: np.random.Generator, order: int, p_knows: float,
                     request: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Decide how the customer refers to the order; fill the request fields; return the lookups."""
    user = int(world.orders["user"][order])
    oid = world.order_id(order)
    request["order_id"] = oid
    orders = [int(o) for o in world.user_orders(user)]
    if rng.random() >= p_knows:
        others: set[int] = set()
        for o in orders:
            if o != order:
                others |= _line_products(world, state, o)
        unique = sorted(_line_products(world, state, order) - others)
        if unique:
            name = world.product_name(_pick(rng, unique))
            request.update(knows_order_id=False, order_hint_product=name, order_hint=f"the order with the {name}")
            upto = orders[:orders.index(order) + 1]  # an ideal agent checks the user's orders in listed order
            return [("get_order_details", {"order_id": world.order_id(o)}) for o in upto]
    request["knows_order_id"] = True
    return [("get_order_details", {"order_id": oid})]


def _order_words(request: dict[str, Any]) -> str:
    if request["knows_order_id"]:
        return f"order {request['order_id']}"
    return f"{request['order_hint']} (you don't remember the order id)"


def item_ref(world: RetailWorld, variant: int, price_cents: int | None = None) -> ItemRef:
    product = int(world.variants["product"][variant])
    price = int(world.variants["price"][variant]) if price_cents is None else price_cents
    return ItemRef(item_id=world.item_id(variant), product_id=world.product_id(product),
                   name=world.product_name(product), options=world.options_of(variant), price=money(price))


def _describe(item: ItemRef) -> str:
    opts = ", ".join(f"{k} {v}" for k, v in item.options.items())
    return f"the {item.name} ({opts})"


def payment_ref(world: RetailWorld, pm_row: int) -> PaymentRef:
    kind = world.data.vocab["payment_kind"][world.pm["kind"][pm_row]]
    last_four = f"{int(world.pm['last_four'][pm_row]):04d}" if kind == "credit_card" else None
    return PaymentRef(id=world.payment_method_id(pm_row), kind=kind, last_four=last_four,
                      description=world.payment_description(pm_row))


def _alternatives(world: RetailWorld, variant: int, available: bool = True) -> list[int]:
    product = int(world.variants["product"][variant])
    return [v for v in world.product_variants(product)
            if v != variant and bool(world.variants["available"][v]) == available]


def _random_address(world: RetailWorld, rng: np.random.Generator) -> Address:
    city, state, prefix = _pick(rng, vocab.CITIES)
    suite = int(rng.integers(100, 1000)) if rng.random() < 0.3 else 0
    return Address(address1=f"{int(rng.integers(1, 10000))} {_pick(rng, vocab.STREETS)} "
                            f"{_pick(rng, vocab.STREET_SUFFIXES)}",
                   address2=f"Suite {suite}" if suite else "", city=city, state=state, country="USA",
                   zip=f"{prefix * 100 + int(rng.integers(100)):05d}")


def _balance(state: State, pm_row: int) -> int:
    return int(state.get("payment_methods", "balance", pm_row))


def _payer(world: RetailWorld, state: State, rng: np.random.Generator, order: int, charge: int) -> int:
    """A payment method of the order's user that can settle `charge` cents (original method first, half the
    time)."""
    user = int(world.orders["user"][order])
    ok = [p for p in world.user_payment_rows(user)
          if int(world.pm["kind"][p]) != GIFT_CARD or _balance(state, p) >= max(charge, 0)]
    original = int(state.get("orders", "pay_method", order)[0])
    if original in ok and rng.random() < 0.5:
        return original
    return _pick(rng, ok)  # never empty for charge <= 0; swaps are only sampled for users with a card or PayPal


def _choose_lines(world: RetailWorld, state: State, rng: np.random.Generator, order: int, max_items: int,
                  need_alternative: bool) -> list[int]:
    """Random distinct line indexes of the order (only lines with another available variant if asked)."""
    items = state.get("orders", "items", order)
    lines = [j for j in range(len(items)) if items[j] >= 0
             and (not need_alternative or _alternatives(world, int(items[j])))]
    if not lines:
        return []
    k = int(rng.integers(1, min(max_items, len(lines)) + 1))
    return sorted(int(j) for j in rng.choice(lines, size=k, replace=False))


def _has_swappable_line(world: RetailWorld, state: State, order: int) -> bool:
    """Some line has another available option, and the user can pay any difference (a card or PayPal)."""
    user = int(world.orders["user"][order])
    if all(int(world.pm["kind"][p]) == GIFT_CARD for p in world.user_payment_rows(user)):
        return False
    return any(v >= 0 and _alternatives(world, int(v)) for v in state.get("orders", "items", order))


# ----------------------------------------------------------------------------------------------
# one request each: builders take the order, return a Step (they never write the state)


def step_order_status(world: RetailWorld, state: State, rng: np.random.Generator, order: int,
                      params: RetailTaskParams) -> Step:
    # the status (most customers want it), another topic, or both; the required outputs are the
    # answers to exactly what is asked
    with_status, with_other, which = rng.random(3)
    ask = ["status"] if with_status < 0.75 else []
    if not ask or with_other < 0.6:
        ask.append(_OTHER_TOPICS[min(int(which * len(_OTHER_TOPICS)), len(_OTHER_TOPICS) - 1)])
    req: dict[str, Any] = {"intent": "order_status", "ask": ask}
    lookups = _order_reference(world, state, rng, order, params.p_knows_order_id, req)
    status = world.data.vocab["status"][int(state.get("orders", "status", order))]
    tracking = int(state.get("orders", "tracking", order))
    outputs: list[str] = []
    for topic in ask:
        if topic == "status":
            outputs.append(status)
        elif topic == "total":
            outputs.append(money(world.order_total(state, order)))
        elif topic == "items":
            variants, _ = world.order_items(state, order)
            outputs += dict.fromkeys(world.product_name(int(world.variants["product"][v])) for v in variants)
        elif tracking:
            outputs.append(str(tracking))
    if not outputs:  # only tracking, of an order not shipped yet: the answer is its status
        outputs.append(status)
    text = f"You want to know the {' and the '.join(_TOPIC_WORDS[t] for t in ask)} of {_order_words(req)}."
    return Step(Request(**req), lookups, [], outputs, text)


_OTHER_TOPICS = ("total", "items", "tracking")
_TOPIC_WORDS = {"status": "current status", "total": "total price", "items": "items", "tracking": "tracking number"}


def step_cancel(world: RetailWorld, state: State, rng: np.random.Generator, order: int,
                params: RetailTaskParams) -> Step:
    reason = _pick(rng, ["no longer needed", "ordered by mistake"])
    req: dict[str, Any] = {"intent": "cancel", "reason": reason}
    lookups = _order_reference(world, state, rng, order, params.p_knows_order_id, req)
    methods, amounts, n = kernels.net_paid(state.get("orders", "pay_type", order),
                                           state.get("orders", "pay_amount", order),
                                           state.get("orders", "pay_method", order))
    refund = int(amounts[:n][amounts[:n] > 0].sum())
    req["money_owed"] = owed(-refund)
    text = (f"You want to cancel {_order_words(req)}. If asked why, the reason is '{reason}'. You paid "
            f"${money(refund)} for it and want to know how much will be refunded.")
    return Step(Request(**req), lookups, [("cancel_pending_order", {"order_id": req["order_id"], "reason": reason})],
                [owed(-refund)], text)


def step_modify_address(world: RetailWorld, state: State, rng: np.random.Generator, order: int,
                        params: RetailTaskParams) -> Step:
    address = _random_address(world, rng)
    req: dict[str, Any] = {"intent": "modify_address", "address": address}
    lookups = _order_reference(world, state, rng, order, params.p_knows_order_id, req)
    a = address
    text = (f"You want {_order_words(req)} shipped to a new address: {a.address1}"
            f"{', ' + a.address2 if a.address2 else ''}, {a.city}, {a.state} {a.zip}, {a.country}.")
    return Step(Request(**req), lookups, [("modify_pending_order_address",
                                           {"order_id": req["order_id"], **address.model_dump()})], [], text)


def _payment_alternatives(world: RetailWorld, state: State, order: int) -> list[int]:
    user = int(world.orders["user"][order])
    current = int(state.get("orders", "pay_method", order)[0])
    total = world.order_total(state, order)
    return [p for p in world.user_payment_rows(user)
            if p != current and (int(world.pm["kind"][p]) != GIFT_CARD or _balance(state, p) >= total)]


def _single_payment(state: State, order: int) -> bool:
    return int((state.get("orders", "pay_type", order) >= 0).sum()) == 1


def step_modify_payment(world: RetailWorld, state: State, rng: np.random.Generator, order: int,
                        params: RetailTaskParams) -> Step:
    pm_row = _pick(rng, _payment_alternatives(world, state, order))
    pay = payment_ref(world, pm_row)
    total = world.order_total(state, order)
    req: dict[str, Any] = {"intent": "modify_payment", "payment_method": pay, "money_owed": owed(total)}
    lookups = _order_reference(world, state, rng, order, params.p_knows_order_id, req)
    text = _payment_change_words(req, pay, total)
    return Step(Request(**req), lookups, [("modify_pending_order_payment",
                                           {"order_id": req["order_id"], "payment_method_id": pay.id})],
                [money(total)], text)


def _payment_change_words(req: dict[str, Any], pay: PaymentRef, total: int) -> str:
    return (f"You want to pay for {_order_words(req)} with your {pay.description} instead of the current method. "
            f"The order total is ${money(total)}: your {pay.description} should be charged that much and the "
            "current method refunded as much.")


def _swap_step(world: RetailWorld, state: State, rng: np.random.Generator, order: int, params: RetailTaskParams,
               intent: Literal["modify_items", "exchange"]) -> Step:
    items = state.get("orders", "items", order)
    prices = state.get("orders", "item_prices", order)
    lines = _choose_lines(world, state, rng, order, params.max_items, need_alternative=True)
    old = [int(items[j]) for j in lines]
    new = [int(_pick(rng, _alternatives(world, v))) for v in old]
    diff = sum(int(world.variants["price"][n]) - int(prices[j]) for n, j in zip(new, lines))
    pm_row = _payer(world, state, rng, order, diff)
    pay = payment_ref(world, pm_row)
    req: dict[str, Any] = {"intent": intent, "items": [item_ref(world, v, int(prices[j])) for v, j in zip(old, lines)],
                           "new_items": [item_ref(world, v) for v in new], "payment_method": pay}
    lookups = _order_reference(world, state, rng, order, params.p_knows_order_id, req)
    for pid in dict.fromkeys(r.product_id for r in req["items"]):
        lookups.append(("get_product_details", {"product_id": pid}))
    tool = "modify_pending_order_items" if intent == "modify_items" else "exchange_delivered_order_items"
    write = (tool, {"order_id": req["order_id"], "item_ids": [r.item_id for r in req["items"]],
                    "new_item_ids": [r.item_id for r in req["new_items"]], "payment_method_id": pay.id})
    swaps = "; ".join(f"{_describe(a)} for the one with {', '.join(f'{k} {v}' for k, v in b.options.items())}"
                      for a, b in zip(req["items"], req["new_items"]))
    verb = "change, in" if intent == "modify_items" else "exchange, from"
    text = (f"You want to {verb} {_order_words(req)}: {swaps}. Any price difference should go through your "
            f"{pay.description}. You want to know the price difference.")
    return Step(Request(**req), lookups, [write], [owed(diff)] if diff else [], text)


def step_modify_items(world: RetailWorld, state: State, rng: np.random.Generator, order: int,
                      params: RetailTaskParams) -> Step:
    return _swap_step(world, state, rng, order, params, "modify_items")


def step_exchange(world: RetailWorld, state: State, rng: np.random.Generator, order: int,
                  params: RetailTaskParams) -> Step:
    return _swap_step(world, state, rng, order, params, "exchange")


def _refund_targets(world: RetailWorld, state: State, order: int) -> list[int]:
    """Where a return may be refunded: the original payment method or a gift card of the user."""
    user = int(world.orders["user"][order])
    original = int(state.get("orders", "pay_method", order)[0])
    return [p for p in world.user_payment_rows(user) if p == original or int(world.pm["kind"][p]) == GIFT_CARD]


def step_return(world: RetailWorld, state: State, rng: np.random.Generator, order: int,
                params: RetailTaskParams, refund_to: int | None = None) -> Step:
    items = state.get("orders", "items", order)
    prices = state.get("orders", "item_prices", order)
    lines = _choose_lines(world, state, rng, order, params.max_items, need_alternative=False)
    pay = payment_ref(world, _pick(rng, _refund_targets(world, state, order)) if refund_to is None else refund_to)
    req: dict[str, Any] = {"intent": "return", "payment_method": pay,
                           "items": [item_ref(world, int(items[j]), int(prices[j])) for j in lines]}
    lookups = _order_reference(world, state, rng, order, params.p_knows_order_id, req)
    refund = sum(int(prices[j]) for j in lines)
    text = (f"You want to return {'; '.join(_describe(i) for i in req['items'])} from {_order_words(req)}, "
            f"refunded to your {pay.description}. You want to know the refund amount.")
    return Step(Request(**req), lookups, [("return_delivered_order_items",
                                           {"order_id": req["order_id"], "item_ids": [i.item_id for i in req["items"]],
                                            "payment_method_id": pay.id})], [owed(-refund)], text)


STEP_BUILDERS: dict[str, tuple[Callable[..., Step], tuple[int, ...], Callable[[RetailWorld, State, int], bool]]] = {
    "order_status": (step_order_status, (PENDING, PROCESSED, DELIVERED, CANCELLED), lambda w, s, r: True),
    "cancel": (step_cancel, (PENDING,), lambda w, s, r: True),
    "modify_address": (step_modify_address, (PENDING,), lambda w, s, r: True),
    "modify_payment": (step_modify_payment, (PENDING,),
                       lambda w, s, r: _single_payment(s, r) and bool(_payment_alternatives(w, s, r))),
    "modify_items": (step_modify_items, (PENDING,), _has_swappable_line),
    "return": (step_return, (DELIVERED,), lambda w, s, r: True),
    "exchange": (step_exchange, (DELIVERED,), _has_swappable_line),
}
"""intent -> (step builder, eligible statuses, extra eligibility check)."""


# ----------------------------------------------------------------------------------------------
# assembling a task


def _calls(pairs: list[tuple[str, dict[str, Any]]]) -> list[ToolCall]:
    return [ToolCall(id=f"gold_{i}", name=name, arguments=args) for i, (name, args) in enumerate(pairs)]


def _brief_text(ident: Identity, knows_email: bool, steps: list[Step], refusal: bool) -> str:
    who = (f"You are {ident.first_name} {ident.last_name}, a customer of an online store. Your e-mail is "
           f"{ident.email} and your zip code is {ident.zip}.")
    auth = ("When asked to verify your identity, give your e-mail." if knows_email else
            "When asked to verify your identity, say you don't remember your e-mail and give your first name, "
            "last name and zip code instead.")
    wants = " Then: ".join(s.text for s in steps) if len(steps) > 1 else steps[0].text
    rules = ("Give details (order id, items, address, payment method) only when the agent asks. When the agent "
             "lists the exact change and asks to confirm, answer 'yes' if it matches what you want.")
    if refusal:
        rules += (" If the agent says the store policy does not allow your request, accept it, do not insist, "
                  "and end the conversation.")
    return f"{who} {auth}\n\n{wants}\n\n{rules} When you are done, end the conversation with ###STOP###."


def assemble(task_type: str, world: RetailWorld, state: State, rng: np.random.Generator, user: int,
             steps: list[Step], params: RetailTaskParams, knows_email: bool | None = None,
             should_refuse: bool = False) -> TaskInstance:
    """Turn the steps of one customer into a TaskInstance (auth + lookups + writes, expected state)."""
    if knows_email is None:
        knows_email = bool(rng.random() < params.p_knows_email) or world.users_with_name_zip(user) != 1
    ident = _identity(world, user)
    reads: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for pair in _auth_calls(world, user, knows_email) + [p for s in steps for p in s.lookups]:
        key = repr(pair)
        if key not in seen:  # a lookup already made once is not repeated
            seen.add(key)
            reads.append(pair)
    writes = [p for s in steps for p in s.writes]
    # an ideal agent looks everything up first, then writes in the order the customer asked
    gold = _calls(reads + writes)
    expected = world.apply_plan(state, gold[len(reads):], rng)
    brief = CustomerBrief(identity=ident, knows_email=knows_email, user_id=world.user_id(user),
                          requests=[s.request for s in steps],
                          brief=_brief_text(ident, knows_email, steps, should_refuse))
    outputs = [o for s in steps for o in s.outputs]
    goal = {"user_id": world.user_id(user),
            "requests": [s.request.model_dump(include={"intent", "order_id", "expect_refusal"}) for s in steps]}
    targets = "+".join(f"{s.request.intent}{s.request.order_id or ''}" for s in steps)
    return TaskInstance(type=task_type, instance_id=f"{task_type}:{world.user_id(user)}:{targets}", goal=goal,
                        private={"user": brief.model_dump(), "assistant": {}}, gold_plan=gold,
                        expected_state=expected, required_outputs=outputs, should_refuse=should_refuse,
                        instructions=brief.brief)


class SingleRequestTask(TaskGenerator):
    """A task of one request on one order (the `intent` class attribute picks the builder)."""

    Params = RetailTaskParams
    intent: str = ""

    def sample(self, world: RetailWorld, state: State, rng: np.random.Generator) -> TaskInstance:
        build, statuses, eligible = STEP_BUILDERS[self.intent]
        order = sample_orders(world, state, rng, statuses, lambda r: eligible(world, state, r))
        step = build(world, state, rng, order, self.params)
        return assemble(self.name, world, state, rng, int(world.orders["user"][order]), [step], self.params)


@register_task("retail", "order_status")
class OrderStatusTask(SingleRequestTask):
    """Read-only: the customer asks for an order's status and total."""

    intent = "order_status"


@register_task("retail", "cancel_pending_order")
class CancelPendingOrderTask(SingleRequestTask):
    """Cancel a pending order; the agent states the refund."""

    intent = "cancel"


@register_task("retail", "modify_pending_order_address")
class ModifyPendingOrderAddressTask(SingleRequestTask):
    """Change the shipping address of a pending order."""

    intent = "modify_address"


@register_task("retail", "modify_pending_order_payment")
class ModifyPendingOrderPaymentTask(SingleRequestTask):
    """Pay a pending order with another of the customer's payment methods; the agent states the amount."""

    intent = "modify_payment"


@register_task("retail", "modify_pending_order_items")
class ModifyPendingOrderItemsTask(SingleRequestTask):
    """Swap items of a pending order for other options of the same product; the agent states the difference."""

    intent = "modify_items"


@register_task("retail", "return_delivered_order_items")
class ReturnDeliveredOrderItemsTask(SingleRequestTask):
    """Return items of a delivered order; the agent states the refund."""

    intent = "return"


@register_task("retail", "exchange_delivered_order_items")
class ExchangeDeliveredOrderItemsTask(SingleRequestTask):
    """Exchange items of a delivered order; the agent states the price difference."""

    intent = "exchange"


@register_task("retail", "modify_user_address")
class ModifyUserAddressTask(TaskGenerator):
    """Change the customer's default address (no order involved)."""

    Params = RetailTaskParams

    def sample(self, world: RetailWorld, state: State, rng: np.random.Generator) -> TaskInstance:
        user = int(rng.integers(world.users.n))
        address = _random_address(world, rng)
        a = address
        text = (f"You moved and want your default address changed to {a.address1}"
                f"{', ' + a.address2 if a.address2 else ''}, {a.city}, {a.state} {a.zip}, {a.country}.")
        step = Step(Request(intent="modify_user_address", address=address), [],
                    [("modify_user_address", {"user_id": world.user_id(user), **address.model_dump()})], [], text)
        return assemble(self.name, world, state, rng, user, [step], self.params)


class MultiOrderParams(RetailTaskParams):
    n_requests: int = Field(default=2, ge=2, le=4, description="Requests, each on a different order of the user.")


MULTI_INTENTS = ("cancel", "modify_address", "modify_payment", "return", "exchange", "modify_items")


@register_task("retail", "multi_order")
class MultiOrderTask(TaskGenerator):
    """Several writes across several orders of one customer (e.g. cancel one order, return items of another).

    Requests are built one after another on a scratch copy of the state with the previous writes applied,
    so each one is valid where the gold plan reaches it (gift card balances, for instance).
    """

    Params = MultiOrderParams

    def _actionable(self, world: RetailWorld, state: State, order: int) -> list[str]:
        status = int(state.get("orders", "status", order))
        return [i for i in MULTI_INTENTS
                if status in STEP_BUILDERS[i][1] and STEP_BUILDERS[i][2](world, state, order)]

    def sample(self, world: RetailWorld, state: State, rng: np.random.Generator) -> TaskInstance:
        p = self.params
        for _ in range(SAMPLE_TRIES * 16):
            order = sample_orders(world, state, rng, (PENDING, DELIVERED))
            user = int(world.orders["user"][order])
            candidates = [int(o) for o in world.user_orders(user) if self._actionable(world, state, int(o))]
            if len(candidates) >= p.n_requests:
                break
        else:
            raise NoEligibleTarget(f"no user with {p.n_requests} orders that can be changed")
        chosen = [int(o) for o in rng.choice(candidates, size=p.n_requests, replace=False)]
        scratch = state.snapshot()
        steps = []
        for order in chosen:
            intent = _pick(rng, self._actionable(world, scratch, order))
            step = STEP_BUILDERS[intent][0](world, scratch, rng, order, p)
            scratch = world.apply_plan(scratch, _calls(step.writes), rng)
            steps.append(step)
        return assemble(self.name, world, state, rng, user, steps, p)


RefusalKind = Literal["cancel_not_pending", "return_not_delivered", "return_to_other_card",
                      "exchange_other_product", "modify_to_unavailable", "gift_card_too_small"]


class PolicyRefusalParams(RetailTaskParams):
    kinds: list[RefusalKind] = Field(default_factory=lambda: list(RefusalKind.__args__),  # type: ignore[attr-defined]
                                     min_length=1, description="Which forbidden requests to draw from.")


@register_task("retail", "policy_refusal")
class PolicyRefusalTask(TaskGenerator):
    """A request the store policy forbids: the agent must refuse, and the state must stay unchanged.

    Kinds: cancel an order that is not pending; return items of an order that is not delivered;
    refund a return to a credit card the order was not paid with; exchange an item for another
    product; modify an item to an out-of-stock option; pay an order with a gift card whose balance
    is too small.
    """

    Params = PolicyRefusalParams

    def sample(self, world: RetailWorld, state: State, rng: np.random.Generator) -> TaskInstance:
        kinds = list(dict.fromkeys(self.params.kinds))
        rng.shuffle(kinds)
        for kind in kinds:  # fall through to another kind when a world has no target for one
            try:
                step = getattr(self, "_" + kind)(world, state, rng)
            except NoEligibleTarget:
                continue
            step.request = step.request.model_copy(update={"expect_refusal": True, "refusal_reason": kind})
            step.writes, step.outputs = [], []
            user = int(world.orders["user"][world.order_row(step.request.order_id or "")])
            return assemble(self.name, world, state, rng, user, [step], self.params, should_refuse=True)
        raise NoEligibleTarget(f"no target for any of {kinds}")

    def _cancel_not_pending(self, world: RetailWorld, state: State, rng: np.random.Generator) -> Step:
        order = sample_orders(world, state, rng, (PROCESSED, DELIVERED))
        return step_cancel(world, state, rng, order, self.params)

    def _return_not_delivered(self, world: RetailWorld, state: State, rng: np.random.Generator) -> Step:
        order = sample_orders(world, state, rng, (PENDING, PROCESSED),
                              lambda r: bool(_refund_targets(world, state, r)))
        return step_return(world, state, rng, order, self.params)

    def _return_to_other_card(self, world: RetailWorld, state: State, rng: np.random.Generator) -> Step:
        def other_cards(r: int) -> list[int]:
            allowed = _refund_targets(world, state, r)
            return [p for p in world.user_payment_rows(int(world.orders["user"][r]))
                    if p not in allowed and int(world.pm["kind"][p]) != GIFT_CARD]

        order = sample_orders(world, state, rng, (DELIVERED,), lambda r: bool(other_cards(r)))
        return step_return(world, state, rng, order, self.params, refund_to=_pick(rng, other_cards(order)))

    def _exchange_other_product(self, world: RetailWorld, state: State, rng: np.random.Generator) -> Step:
        order = sample_orders(world, state, rng, (DELIVERED,))
        items = state.get("orders", "items", order)
        prices = state.get("orders", "item_prices", order)
        j = int(_pick(rng, np.flatnonzero(items >= 0)))
        old = int(items[j])
        product = int(world.variants["product"][old])
        others = np.flatnonzero((world.variants["product"] != product) & (world.variants["available"] == 1))
        if not len(others):
            raise NoEligibleTarget("the catalog has a single product")
        new = int(_pick(rng, others))
        pay = payment_ref(world, _payer(world, state, rng, order, 0))
        req: dict[str, Any] = {"intent": "exchange", "items": [item_ref(world, old, int(prices[j]))],
                               "new_items": [item_ref(world, new)], "payment_method": pay}
        lookups = _order_reference(world, state, rng, order, self.params.p_knows_order_id, req)
        new_ref = req["new_items"][0]
        text = (f"You want to exchange, from {_order_words(req)}, {_describe(req['items'][0])} for "
                f"{_describe(new_ref)} (a different product). Any price difference should go through your "
                f"{pay.description}.")
        return Step(Request(**req), lookups, [], [], text)

    def _modify_to_unavailable(self, world: RetailWorld, state: State, rng: np.random.Generator) -> Step:
        def lines(r: int) -> list[int]:
            items = state.get("orders", "items", r)
            return [j for j in range(len(items)) if items[j] >= 0 and _alternatives(world, int(items[j]), False)]

        order = sample_orders(world, state, rng, (PENDING,), lambda r: bool(lines(r)))
        items = state.get("orders", "items", order)
        prices = state.get("orders", "item_prices", order)
        j = int(_pick(rng, lines(order)))
        old = int(items[j])
        new = int(_pick(rng, _alternatives(world, old, available=False)))
        pay = payment_ref(world, _payer(world, state, rng, order, 0))
        req: dict[str, Any] = {"intent": "modify_items", "items": [item_ref(world, old, int(prices[j]))],
                               "new_items": [item_ref(world, new)], "payment_method": pay}
        lookups = _order_reference(world, state, rng, order, self.params.p_knows_order_id, req)
        lookups.append(("get_product_details", {"product_id": req["items"][0].product_id}))
        opts = ", ".join(f"{k} {v}" for k, v in req["new_items"][0].options.items())
        text = (f"You want to change, in {_order_words(req)}, {_describe(req['items'][0])} for the one with {opts}. "
                f"Any price difference should go through your {pay.description}.")
        return Step(Request(**req), lookups, [], [], text)

    def _gift_card_too_small(self, world: RetailWorld, state: State, rng: np.random.Generator) -> Step:
        def small_cards(r: int) -> list[int]:
            total = world.order_total(state, r)
            current = int(state.get("orders", "pay_method", r)[0])
            return [p for p in world.user_payment_rows(int(world.orders["user"][r]))
                    if p != current and int(world.pm["kind"][p]) == GIFT_CARD and _balance(state, p) < total]

        order = sample_orders(world, state, rng, (PENDING,), lambda r: _single_payment(state, r) and bool(small_cards(r)))
        pay = payment_ref(world, _pick(rng, small_cards(order)))
        total = world.order_total(state, order)
        req: dict[str, Any] = {"intent": "modify_payment", "payment_method": pay, "money_owed": owed(total)}
        lookups = _order_reference(world, state, rng, order, self.params.p_knows_order_id, req)
        text = _payment_change_words(req, pay, total)
        return Step(Request(**req), lookups, [], [], text)
