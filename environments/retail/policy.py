"""The store policy: the text the support agent follows (its default system prompt), the customer's
default prompt, and the checks of a conversation against the policy's core rules that no tool can
enforce (authenticate first; act only on an explicit yes)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simworld.types import Message, ToolCall

    from .world import RetailWorld

ASSISTANT_POLICY = """\
# Retail support policy

You are a customer support agent of an online store. You help one customer per conversation with
their account and orders, using the tools you have. Today's store rules:

## General
- Authenticate the customer first, even if they give you a user id: find their user id by e-mail,
  or by first name, last name and zip code. Only then look at or change their account or orders.
- Help only the authenticated customer, and only with their own orders and payment methods.
- Get every fact from the customer or from tool results. Never invent ids, items, options, prices
  or payment methods, and never guess what the customer wants.
- Before any action that changes an order or the account, state the exact change (order, items,
  new items, address, payment method, amounts) and proceed only after the customer explicitly
  confirms with "yes".
- Make one tool call at a time and give the customer the results they asked for, including
  amounts (refunds, charges, price differences) in dollars.
- Refuse requests this policy does not allow, and say why. Transfer to a human agent only when the
  request is outside what your tools can do; then call transfer_to_human_agents with a summary and
  end the conversation.

## Store basics
- Order ids look like '#W0000042'. Each product (e.g. 'Office Chair') has variants called items,
  each with its own item id, options (color, size, material...), price and availability.
- Order status is one of: pending, processed, delivered, cancelled, 'pending (item modified)',
  'return requested', 'exchange requested'.
- Payment methods are credit cards, PayPal and gift cards. A gift card can pay only up to its
  balance.

## Cancel a pending order
- Only orders with status 'pending' can be cancelled. Confirm the order id and the reason, which
  must be 'no longer needed' or 'ordered by mistake'.
- The full amount paid is refunded to the original payment methods; gift card refunds are credited
  at once, other refunds take 5-7 business days.

## Modify a pending order
- Only orders with status 'pending' can be modified: the shipping address, the payment method, or
  items.
- Payment: the new method must belong to the customer and differ from the current one; a gift card
  must cover the order total. The original method is refunded.
- Items: an item can only become another available item of the same product (a different option,
  e.g. another color), never another product. Collect every item to change first: items can be
  modified only once per order, after which the order is 'pending (item modified)' and can no
  longer be cancelled or modified. The price difference is charged to, or refunded to, a payment
  method of the customer; a gift card must cover a charge.

## Return a delivered order
- Only orders with status 'delivered' can be returned. The customer lists the items to return.
- The refund goes to the original payment method of the order or to a gift card of the customer;
  nowhere else. The order becomes 'return requested'.

## Exchange items of a delivered order
- Only orders with status 'delivered' can be exchanged, once per order: collect every item to
  exchange first. Each item can only become another available item of the same product.
- The price difference is charged to, or refunded to, a payment method of the customer; a gift card
  must cover a charge. The order becomes 'exchange requested'.

## Addresses
- A customer's default address can be changed with modify_user_address; a pending order's
  shipping address with modify_pending_order_address.
"""

CUSTOMER_PROMPT = """\
You are a customer of an online store, talking to its support agent in a chat. Follow your
instructions below. Reveal information only when the agent asks for it, one piece at a time, as a
real customer would. Do not invent facts you were not given. When your requests are handled (or
refused, or the agent transfers you), end the conversation by saying ###STOP###.
"""


# ----------------------------------------------------------------------------------------------
# Checking a conversation against the two core rules (the `policy_checks` hook of RetailWorld)
#
# The world judges any support agent, scripted or a model, so it reads the conversation with its
# own strict rules below and never with an agent's NLU: a referee that shared the oracle's reading
# of "yes" would pass whatever the oracle accepts.

_IDENTIFY = ("find_user_id_by_email", "find_user_id_by_name_zip")

# A yes-word opens the reply; "sure", "ok" or "please" open it only when a go-ahead follows at once
# ("Sure, go ahead"), since "Sure, the new address is ..." answers a question and confirms nothing.
_AFFIRMATIVE = re.compile(r"^\W*(?:(?:yes|yeah|yep|yup|absolutely|definitely|confirm(?:ed)?|i confirm|correct|"
                          r"that'?s (?:right|correct))\b|(?:(?:sure|ok(?:ay)?|alright|please)\W+)?(?:go ahead|proceed|"
                          r"please (?:do|proceed|go ahead)|do it)\b|sure\W*$)", re.IGNORECASE)
_RETRACTION = re.compile(r"\b(?:but|wait|actually|instead|hold on|don'?t|do not|not|cancel that|never ?mind)\b",
                         re.IGNORECASE)
_ORDER_DIGITS = re.compile(r"#?W(\d{7})\b", re.IGNORECASE)

WRITE_ACTION: dict[str, re.Pattern[str]] = {
    "cancel_pending_order": re.compile(r"\bcancel", re.IGNORECASE),
    "return_delivered_order_items": re.compile(r"\breturn", re.IGNORECASE),
    "exchange_delivered_order_items": re.compile(r"\bexchang", re.IGNORECASE),
    # "change" as a verb only: "here is the change: return ..." describes a return
    "modify_pending_order_items": re.compile(r"\b(?:modif|swap|switch|replac|updat)|(?<!the )\bchang(?:e|ing)\b",
                                             re.IGNORECASE),
    "modify_pending_order_address": re.compile(r"\baddress", re.IGNORECASE),
    "modify_user_address": re.compile(r"\baddress", re.IGNORECASE),
    "modify_pending_order_payment": re.compile(r"\bpa(?:y|id)", re.IGNORECASE),
}
"""What a description of each write must say it does (a retail write not listed needs no verb)."""


def is_explicit_yes(text: str) -> bool:
    """Does the customer's reply explicitly confirm? The policy asks for "yes": the reply must open
    with yes (or yeah, yep, correct, confirmed, ...) or a go-ahead ("go ahead", "proceed", "sure, do
    it"), or be a bare "sure", and take nothing back ("yes, but", "yes, wait"). "Okay" or "thanks"
    acknowledges; "Sure, it's order #W..." answers a question; neither confirms."""
    head = text.strip()
    m = _AFFIRMATIVE.match(head)
    return m is not None and not _RETRACTION.search(head[m.end():])


def policy_breaches(world: RetailWorld, events: Sequence[Message], kinds: Mapping[str, str]) -> list[dict[str, Any]]:
    """Calls the store policy forbids although the tools may carry them out, as
    ``{"event", "tool", "rule", "why"}`` in event order (see :meth:`RetailWorld.policy_checks`)."""
    out: list[dict[str, Any]] = []
    results = {ev.tool_call_id: ev for ev in events if ev.role == "tool"}
    for i, ev in enumerate(events):
        if ev.role != "assistant" or kinds.get(ev.speaker) != "assistant":
            continue
        for call in ev.tool_calls:
            tool = world.tools.get(call.name)
            if tool is None or not isinstance(call.arguments, dict):
                continue
            if tool.writes:
                checks = (("authentication", _unauthenticated(world, events, i, ev.speaker, call, kinds, results)),
                          ("confirmation", _unconfirmed(world, events, i, ev.speaker, call, kinds, results)))
            elif _owners(world, call.arguments):  # a look at an account or an order
                checks = (("authentication", _unauthenticated(world, events, i, ev.speaker, call, kinds, results,
                                                              "look-up")),)
            else:  # the catalogue, the calculator, a lookup by the customer's own details
                continue
            for rule, why in checks:
                if why:
                    out.append({"event": i, "tool": call.name, "rule": rule, "why": why})
    return out


def _hears(ev: Message, role: str, kinds: Mapping[str, str]) -> bool:
    """Is `ev` something the customer said to `role`?"""
    return (ev.role == "user" and kinds.get(ev.speaker) == "user" and not ev.invalid
            and ev.audience in (None, role))


def _unauthenticated(world: RetailWorld, events: Sequence[Message], at: int, role: str, call: ToolCall,
                     kinds: Mapping[str, str], results: Mapping[str | None, Message], act: str = "write") -> str | None:
    """Why the `act` (a write, or a look-up of account data) at event `at` breaks "authenticate
    first; help only that customer" (None: it does not)."""
    said = ""
    identified: dict[int, int] = {}  # user row -> event of the lookup that identified them
    unproven: list[str] = []
    for j in range(at):
        ev = events[j]
        if _hears(ev, role, kinds):
            said += "\n" + ev.content.lower()
            continue
        if ev.speaker != role or ev.role != "assistant":
            continue
        for c in ev.tool_calls:
            result = results.get(c.id)
            if c.name not in _IDENTIFY or result is None or result.error or not isinstance(c.arguments, dict):
                continue
            user = world.user_row(result.content.strip().strip('"'))
            if user < 0:
                continue
            if _stated_by_customer(c, said):
                identified.setdefault(user, j)
            else:
                unproven.append(f"{c.name} at event {j} used details the customer had not given")
    if not identified:
        return f"{act} before the customer was authenticated" + (f" ({unproven[0]})" if unproven else "")
    owners = _owners(world, call.arguments)
    strangers = {what: u for what, u in owners.items() if u not in identified}
    if strangers:
        whose = ", ".join(f"{what} belongs to {world.user_id(u)}" for what, u in strangers.items())
        authenticated = ", ".join(world.user_id(u) for u in identified)
        return f"{act} on another customer's data: {whose}, not the authenticated {authenticated}"
    return None


def _stated_by_customer(call: ToolCall, said: str) -> bool:
    """Were the lookup's arguments (e-mail, or name and zip) said by the customer (lower-case `said`)?"""
    values = [call.arguments.get("email")] if call.name == "find_user_id_by_email" else \
        [call.arguments.get(k) for k in ("first_name", "last_name", "zip")]
    return all(isinstance(v, str) and v.strip() and re.search(r"(?<![\w.@-])" + re.escape(v.strip().lower())
                                                               + r"(?![\w@-])", said) for v in values)


def _owners(world: RetailWorld, arguments: Mapping[str, Any]) -> dict[str, int]:
    """Whose data a write names: {"order #W...": user row, ...}; ids that name nothing are left out
    (the tool rejects those as mistakes)."""
    out: dict[str, int] = {}
    order_id, user_id, method = (arguments.get(k) for k in ("order_id", "user_id", "payment_method_id"))
    if isinstance(order_id, str) and (row := world.order_row(order_id)) >= 0:
        out[f"order {world.order_id(row)}"] = int(world.orders["user"][row])
    if isinstance(user_id, str) and (row := world.user_row(user_id)) >= 0:
        out[f"account {world.user_id(row)}"] = row
    if isinstance(method, str) and (row := world.payment_row(method)) >= 0:
        out[f"payment method {world.payment_method_id(row)}"] = int(world.pm["user"][row])
    return out


def _unconfirmed(world: RetailWorld, events: Sequence[Message], at: int, role: str, call: ToolCall,
                 kinds: Mapping[str, str], results: Mapping[str | None, Message]) -> str | None:
    """Why the write at event `at` breaks "state the exact change, then act only on an explicit yes"."""
    reply = next((j for j in range(at - 1, -1, -1) if _hears(events[j], role, kinds)), None)
    if reply is None:
        return "write before the customer said anything"
    described = next((j for j in range(reply - 1, -1, -1) if events[j].speaker == role
                      and events[j].role == "assistant" and events[j].content.strip() and not events[j].invalid), None)
    if described is None:
        return "write that was never described to the customer"
    answers = [j for j in range(described + 1, reply + 1) if _hears(events[j], role, kinds)]
    refused = [j for j in answers if not is_explicit_yes(events[j].content)]
    if refused:
        return f"the customer's reply at event {refused[0]} to the change described at event {described} is not " \
               f"an explicit yes: {events[refused[0]].content.strip()[:80]!r}"
    missing = _undescribed(world, call, events[described].content)
    if missing:
        return f"the change confirmed at event {reply} (described at event {described}) does not state {missing}"
    target = _target(call.arguments)
    for j in range(reply + 1, at):
        ev = events[j]
        if ev.speaker != role:
            continue
        for c in ev.tool_calls:
            done = results.get(c.id)
            if c.name == call.name and _target(c.arguments) == target and done is not None and not done.error:
                return f"the customer's yes at event {reply} was already used by the same change at event {j}"
    return None


def _target(arguments: Any) -> Any:
    return (arguments.get("order_id") or arguments.get("user_id")) if isinstance(arguments, dict) else None


def _undescribed(world: RetailWorld, call: ToolCall, text: str) -> str | None:
    """What part of the write `call` the description `text` leaves out (None: it states the change):
    the action, the order, the items (by id or product name; new items by id or every option),
    the payment method (by id, card digits, 'PayPal' or 'gift card') and the new address's zip."""
    args = call.arguments
    low = text.lower()
    action = WRITE_ACTION.get(call.name)
    if action is not None and not action.search(text):
        return f"the action ({call.name})"
    order_id = args.get("order_id")
    if isinstance(order_id, str):
        m = _ORDER_DIGITS.search(order_id)
        if m and m.group(1) not in {x.group(1) for x in _ORDER_DIGITS.finditer(text)}:
            return f"the order {order_id}"
    for key, new in (("item_ids", False), ("new_item_ids", True)):
        ids = args.get(key)
        if not isinstance(ids, list):
            continue
        rows = world.variant_rows([str(x) for x in ids])
        for item_id, variant in zip(ids, rows.tolist()):
            if str(item_id) in text or variant < 0:
                continue
            if new:
                named = all(_names(low, v) for v in world.options_of(variant).values())
            else:
                named = _names(low, world.product_name(int(world.variants["product"][variant])))
            if not named:
                return f"the {'new ' if new else ''}item {item_id}"
    method = args.get("payment_method_id")
    if isinstance(method, str) and method not in text and (row := world.payment_row(method)) >= 0:
        kind = world.data.vocab["payment_kind"][int(world.pm["kind"][row])]
        named = {"credit_card": lambda: f"{int(world.pm['last_four'][row]):04d}" in text,
                 "paypal": lambda: "paypal" in low, "gift_card": lambda: "gift card" in low}.get(kind, lambda: False)()
        if not named:
            return f"the payment method {method}"
    zip_code = args.get("zip")
    if "address1" in args and isinstance(zip_code, str) and zip_code.strip() not in text:
        return f"the new address (zip {zip_code})"
    return None


def _names(low: str, phrase: str) -> bool:
    return re.search(r"(?<![\w])" + re.escape(phrase.lower()) + r"(?![\w])", low) is not None
