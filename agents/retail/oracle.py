"""The scripted retail support agent (``oracle``): authenticates, plans, confirms, acts, reports.

It knows only what a support agent knows: the store policy, its tools, and what the customer says
and the tools return (it never reads the task's gold plan or the customer's private brief). For
each request it

1. recognises the intent in the customer's words and picks the write (or read) tool that serves it;
2. plans the lookups that make that tool callable from the world's tool graph
   (:class:`~.plan.ToolPlanner`: find the user id by e-mail or name + zip, their details, the
   order, the product catalog entry), asking the customer for every fact no tool produces;
3. resolves the customer's descriptions against tool results (order by id or by a product it
   contains, items by name and options, new items among the product's variants, payment method by
   kind and last four digits);
4. checks the store policy and refuses, with the reason, what it forbids (no write);
5. lists the exact change and asks for an explicit yes; on yes calls the tool, on no takes the
   correction; then states the result (status, refund, charge, price difference) and asks whether
   there is anything else.

One tool call per turn, and no text in a turn with a tool call, as the policy asks.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from simworld import registry
from simworld.agent import Agent, AgentParams, View, same_move
from simworld.types import Message, ToolCall

from . import nlu
from .plan import ToolPlanner, planner_for
from .text import Dice, compile_bank, join_list, money

WRITE_TOOL = {
    "cancel": "cancel_pending_order",
    "modify_address": "modify_pending_order_address",
    "modify_payment": "modify_pending_order_payment",
    "modify_items": "modify_pending_order_items",
    "return": "return_delivered_order_items",
    "exchange": "exchange_delivered_order_items",
    "modify_user_address": "modify_user_address",
}
TARGET_TOOL = {**WRITE_TOOL, "order_status": "get_order_details"}
# Preconditions beyond what each tool consumes: policy says to check the order's status first; old
# items come from the order, new items from the product catalog.
NEEDS: dict[str, tuple[str, ...]] = {
    "order_status": ("order_status",),
    "cancel": ("order_status",),
    "modify_address": ("order_status",),
    "modify_payment": ("order_status", "payment_method_id"),
    "modify_items": ("order_status", "item_id@get_order_details", "item_id@get_product_details"),
    "return": ("order_status", "item_id@get_order_details", "payment_method_id"),
    "exchange": ("order_status", "item_id@get_order_details", "item_id@get_product_details"),
    "modify_user_address": ("user_id",),
}
# Tools the oracle cannot serve a request without: it reads the customer's orders and payment
# methods from their results (the rest, calculate, the catalog listing, a second way to authenticate
# and transfer, are optional: it adds up itself, asks, or apologises).
IDENTIFY = ("find_user_id_by_email", "find_user_id_by_name_zip")  # either one
REQUIRED_TOOLS: dict[str, tuple[str, ...]] = {
    intent: (*(() if intent == "modify_user_address" else ("get_user_details", "get_order_details")),
             *(("get_product_details",) if intent in ("modify_items", "exchange") else ()), tool)
    for intent, tool in TARGET_TOOL.items()}


@functools.lru_cache(maxsize=256)
def missing_tools(intent: str, tools: frozenset[str]) -> tuple[str, ...]:
    """What the oracle lacks among `tools` to serve `intent` (an authentication lookup reads as
    "find_user_id_by_email or find_user_id_by_name_zip"). Cached: asked at every turn, with the
    one tool set a role has."""
    missing = () if tools & set(IDENTIFY) else (" or ".join(IDENTIFY),)
    return missing + tuple(t for t in dict.fromkeys(REQUIRED_TOOLS[intent]) if t not in tools)


REQUIRED_STATUS = {"cancel": "pending", "modify_address": "pending", "modify_payment": "pending",
                   "modify_items": "pending", "return": "delivered", "exchange": "delivered"}
VERB = {"cancel": "cancel", "modify_address": "update", "modify_payment": "change the payment of",
        "modify_items": "modify", "return": "return", "exchange": "exchange", "order_status": "look up",
        "modify_user_address": "update"}

_SAY = compile_bank({
    "greet": ["Hi! How can I help you today?", "Hello, how can I help you?", "Hi there, what can I do for you today?",
              "Good day! How may I help you?"],
    "what_intent": ["Sorry, I didn't get what you need. I can check an order's status, cancel or modify pending "
                    "orders, return or exchange delivered items, or update your address. How can I help?",
                    "Could you tell me what you'd like to do? For example check an order, cancel or modify a "
                    "pending order, return or exchange delivered items, or change your address."],
    "ask_identity": ["I can help with that. First, could you give me your email address, or your first name, last "
                     "name and zip code, so I can verify your identity?",
                     "Sure. To verify your identity, please tell me your email address (or your full name and zip "
                     "code).",
                     "Happy to help. Before we start, I need to authenticate you: what's your email address? Your "
                     "name and zip code work too.",
                     "Of course. Could you share the email address on your account first? If you don't have it, your "
                     "full name and zip code will do.",
                     "I'd be glad to help. For security, please give me your email address, or your first and last "
                     "name with your zip code."],
    "ask_name_zip": ["I couldn't find an account with that email. Could you give me your first and last name and "
                     "your zip code instead?",
                     "Sorry, that email doesn't match any account. Please tell me your full name and zip code."],
    # an address change needs nothing but the account: both asked at once now and then
    "ask_identity_address": ["Sure. Please tell me your email address (or your full name and zip code) so I can "
                             "verify your identity, and the new address you'd like on your account.",
                             "I can update that. I'll need your email address, or your name and zip code, and the "
                             "new address, including the zip code."],
    "ask_identity_again": ["I couldn't find an account with those details. Could you double-check your email "
                           "address, or your full name and zip code?"],
    "ask_order": ["Thanks, {first}. Which order is it about? Do you have the order id?",
                  "Thank you, {first}, you're verified. What's the order id?",
                  "Got it, {first}. Could you tell me the order id, or describe the order?",
                  "Thanks {first}, I found your account. Which order do you mean? The order id is best."],
    # a later request of the same conversation: the customer was verified long ago
    "ask_order_next": ["Sure. Which order is this one about?", "Of course. What's the order id for this one?",
                       "Okay. Which order would that be? The order id helps, or describe it.",
                       "Happy to. Do you have the order id of that one?",
                       "No problem. Which of your orders is it?"],
    "ask_order_again": ["I couldn't find that order on your account. Could you check the order id, or tell me an "
                        "item in the order?",
                        "Sorry, I can't match that to one of your orders. Do you have the order id?"],
    "ask_items": ["Which items from order {order_id} would you like to {verb}?",
                  "I see order {order_id}. Which items would you like to {verb}?",
                  "Order {order_id} is {status}. Which items should I {verb}?",
                  "Which of the items in order {order_id} should I {verb}?"],
    "ask_items_refund": ["Which items from order {order_id} would you like to return, and which payment method "
                         "should the refund go to (the original payment method or a gift card)?"],
    "ask_items_again": ["Sorry, I couldn't match that to the items of order {order_id}, which has: {listing}. "
                        "Which items do you mean?"],
    "ask_new_items": ["And what would you like instead? Please give me the new options for each item.",
                      "Which options would you like instead? Tell me the new color, size and so on for each item.",
                      "What options would you like for each item instead?"],
    "ask_new_items_again": ["Sorry, I couldn't find that option of the {name}. Which options would you like "
                            "instead?"],
    "ask_payment_refund": ["Which payment method should the refund go to? It can be the original payment method "
                           "or a gift card."],
    "ask_payment_diff": ["Which payment method should we use for any price difference?",
                         "Which payment method should pay or receive the price difference?"],
    "ask_payment_new": ["Which payment method would you like to use instead?",
                        "Sure. Which payment method should the order be paid with now?",
                        "Which payment method should I switch it to?"],
    "ask_payment_again": ["Sorry, I couldn't match that to your payment methods: {listing}. Which payment method "
                          "do you mean?"],
    "list_methods": ["You have these payment methods on file: {listing}. Which payment method would you like?"],
    "ask_reason": ["Could you tell me the reason for the cancellation: 'no longer needed' or 'ordered by mistake'?",
                   "May I ask the reason for cancelling?", "What's the reason for the cancellation?",
                   "Why would you like to cancel it?"],
    "ask_reason_again": ["Sorry, for the records I need the reason: is it 'no longer needed' or 'ordered by "
                         "mistake'?"],
    "ask_address": ["What's the new address?", "Sure. What is the new address, including the zip code?",
                    "Where should it go now? Please give me the new address.",
                    "Which address should I use? Street, city, state and zip, please."],
    "ask_address_again": ["Sorry, I couldn't read that address. What's the new address (street, city, state, "
                          "zip)?"],
    "ask_yes_no": ["Sorry, I need a clear yes or no: shall I proceed?"],
    "ask_what_changed": ["Sorry about that. What should be different?"],
    # every proposal carries a phrase the customer reads as asking for a yes (customer._CUES "confirm")
    "confirm": ["To confirm, I'll {action}. Shall I proceed? (yes/no)",
                "Here is the change: {action}. Do you want me to go ahead? (yes/no)",
                "Just to confirm: I will {action}. Is that correct? (yes/no)",
                "I'm about to {action}. Shall I go ahead?",
                "Before I do anything: I would {action}. Do you want me to proceed?",
                "So the plan is to {action}. Is that right? Please answer yes or no.",
                "Let me make sure I have this right: I'll {action}. Should I proceed?",
                "Okay, I can {action}. Would you like me to go ahead?",
                "Please confirm: I will {action}. OK to proceed?"],
    "anything_else": [" Is there anything else I can help you with?", " Anything else I can do for you?",
                      " Can I help you with anything else?", " Is there something else you need?",
                      " Anything else on your mind today?", " Can I help with anything else?"],
    "refuse": ["I'm sorry, but I can't do that: {why}.", "Unfortunately that isn't possible: {why}.",
               "I'm afraid I can't help with that, because {why}."],
    "failed": ["Sorry, that didn't work: {why}."],
})
# What the support side reports once a change is made (each states its result in one sentence, as
# the required outputs are checked sentence by sentence).
_DONE = compile_bank({
    "modify_user_address": ["Done: your default address is now {address}.",
                            "Your profile address has been updated to {address}.",
                            "I've changed the default address on your account to {address}."],
    "cancel": ["Order {order_id} is now cancelled. {amount} will be refunded to the original payment method (at "
               "once for a gift card, otherwise within 5-7 business days).",
               "Done, order {order_id} has been cancelled. You'll be refunded {amount} to the original payment "
               "method: at once for a gift card, within 5-7 business days otherwise.",
               "I've cancelled order {order_id}. The refund of {amount} goes to the original payment method within "
               "5-7 business days (immediately for a gift card).",
               "Order {order_id} is cancelled now. {amount} will be refunded to your original payment method "
               "in 5-7 business days, or right away if it was a gift card."],
    "modify_address": ["Order {order_id} will now ship to {address}.",
                       "Done: the shipping address of order {order_id} is now {address}.",
                       "I've updated order {order_id}; it will go to {address}."],
    "modify_payment": ["Order {order_id} is now paid with {method}: {amount} charged, and the original payment "
                       "method refunded.",
                       "Done: {amount} was charged to {method} for order {order_id}, and the original payment "
                       "method was refunded.",
                       "Order {order_id} now uses {method}. It was charged {amount}, and the original payment "
                       "method has been refunded."],
    "return": ["The return is requested: order {order_id} is now '{status}'. You'll receive {amount} on {method} "
               "once the items are back, and an email with instructions.",
               "Your return is set up, and order {order_id} is now '{status}'. Once the items arrive back, "
               "{amount} will be refunded to {method}. An email with the return instructions is on its way.",
               "Done: order {order_id} is now '{status}'. A refund of {amount} to {method} follows once we receive "
               "the items; you'll get the instructions by email."],
    "swap": ["Done: order {order_id} is now '{status}', and {diff}.",
             "The change is made. Order {order_id} is now '{status}'; {diff}.",
             "All set, order {order_id} is now '{status}', and {diff}."],
    "status": ["Order {order_id} is '{status}'.", "Your order {order_id} is '{status}' at the moment.",
               "I checked order {order_id}: it is '{status}'.", "The status of order {order_id} is '{status}'."],
    "total": ["Its total is {amount}.", "The order total comes to {amount}.", "The total is {amount}."],
    "items": ["It contains {items}.", "The items in it are {items}.", "In the order: {items}."],
    "tracking": ["The tracking number is {tracking}.", "You can track it with number {tracking}.",
                 "Tracking number: {tracking}."],
    "no_tracking": ["It has not shipped yet, so there is no tracking number.",
                    "There's no tracking number yet, as it hasn't shipped."],
})


@dataclass
class RequestState:
    """What the oracle knows about the request it is serving."""

    intent: str | None = None
    text: str = ""
    order_ref: str | None = None
    hint: str = ""
    order_id: str | None = None
    scanned: set[str] = field(default_factory=set)
    order_lookup_failed: bool = False
    items_text: str = ""
    new_items_text: str = ""
    payment_text: str = ""
    reason: str | None = None
    address: dict[str, str] | None = None
    items: list[dict[str, Any]] | None = None
    new_items: list[dict[str, Any]] | None = None
    payment_id: str | None = None
    amount: str | None = None
    asks: dict[str, int] = field(default_factory=dict)
    proposal: ToolCall | None = None
    confirmed: bool = False
    other_product: bool = False


def _lookup_key(call: ToolCall) -> tuple[str, ...] | None:
    """How `SupportOracle.tried` names a user lookup call; None for other calls."""
    args = call.arguments
    if call.name == "find_user_id_by_email":
        return ("email", str(args.get("email", "")))
    if call.name == "find_user_id_by_name_zip":
        return ("name", str(args.get("first_name", "")), str(args.get("last_name", "")), str(args.get("zip", "")))
    return None


class OracleParams(AgentParams):
    """The oracle has no knobs: what it does follows from the conversation and the tools."""


@registry.register_agent("oracle")
class SupportOracle(Agent):
    """The scripted support agent (see the module docstring)."""

    Params: type[AgentParams] = OracleParams
    worlds = ("retail",)
    kinds = ("assistant",)  # it is the support side: validate refuses it in a user role

    def __init__(self, params: AgentParams, role: str, rng: np.random.Generator) -> None:
        super().__init__(params, role, rng)
        self.dice = Dice(rng)
        self.seen = 0
        self.tools: frozenset[str] = frozenset()
        self.planner: ToolPlanner | None = None
        self.email: str | None = None
        self.name_zip: tuple[str, str, str] | None = None
        self.tried: set[tuple[str, ...]] = set()
        self.user_id: str | None = None
        self.user: dict[str, Any] | None = None
        self.user_stale = False
        self.orders: dict[str, dict[str, Any]] = {}
        self.products: dict[str, dict[str, Any]] = {}
        self.catalog: dict[str, str] | None = None
        self.req = RequestState()
        self.awaiting: set[str] = set()
        self.pending: ToolCall | None = None
        self.foreign = False
        """The pending call is another agent's (a fork's prefix), not one this oracle would have made."""
        self.greeted = False
        self.unclear = 0
        self.asked_order = False
        self.decided_from: tuple[RequestState, dict[str, int], ToolCall | None] | None = None
        """The request, its question counts and its proposal before this turn's decision (undone in
        `adopt` when the reply was not what the record says happened)."""

    # -- output
    def say(self, key: str, values: dict[str, str] | None = None) -> str:
        return self.dice.pick(_SAY[key]).render(values)

    def done(self, key: str, values: dict[str, str]) -> str:
        return self.dice.pick(_DONE[key]).render(values)

    def text(self, content: str, awaiting: set[str] | None = None) -> Message:
        self.awaiting = awaiting or set()
        return Message(role="assistant", content=content, tool_calls=[])

    def call(self, name: str, arguments: dict[str, Any]) -> Message:
        call = ToolCall(id="call", name=name, arguments=arguments)
        self.pending, self.foreign = call, False
        return Message(role="assistant", content="", tool_calls=[self.emit(call)])

    def emit(self, call: ToolCall) -> ToolCall:
        """The call actually sent (the noisy oracle corrupts some)."""
        return call

    def adopt(self, reply: Message | str, taken: Message) -> None:
        """Catching up on a fork's prefix: results are read against the call that was made, and a
        question that was not asked awaits no answer."""
        if isinstance(reply, Message) and same_move(reply, taken):
            return
        # A lookup counts as tried with what was sent: details another agent mistyped are worth
        # trying again when the customer repeats them.
        for move, tried in ((reply, self.tried.discard), (taken, self.tried.add)):
            for call in move.tool_calls if isinstance(move, Message) else ():
                key = _lookup_key(call)
                if key is not None:
                    tried(key)
        undo, self.decided_from = self.decided_from, None
        if undo is not None:  # the customer never heard that reply: a question it counted, a change it proposed
            req, asks, proposal = undo
            self.req, req.asks, req.proposal = req, asks, proposal
        self.pending = taken.tool_calls[0] if taken.tool_calls else None
        self.foreign = self.pending is not None
        # The customer answers what the other agent said, whatever this oracle would have asked.
        self.awaiting = {OTHERS_QUESTION} if taken.content.strip() and not taken.tool_calls else set()

    # -- the turn
    async def act(self, view: View) -> Message:
        if self.planner is None:
            self.tools = frozenset(t.name for t in view.tools)
            self.planner = planner_for(registry.get_world(view.episode.sc.world.type), tuple(sorted(self.tools)))
        new = view.visible_since(self.seen)
        self.seen = len(view.episode.events)
        self.decided_from = None
        heard: list[str] = []
        for ev in new:
            if ev.role == "tool" and ev.speaker == self.role:
                retry = self.absorb_result(ev.name or "", ev.content, ev.error)
                if retry is not None:
                    return retry
            elif ev.speaker != self.role and ev.content and ev.role == "user" and ev.speaker != "world":
                heard.append(ev.content)
        if heard:
            self.absorb_customer("\n".join(heard))
        self.decided_from = (self.req, dict(self.req.asks), self.req.proposal)
        return self.decide()

    # -- reading the customer
    def absorb_customer(self, text: str) -> None:
        req = self.req
        awaiting = self.awaiting
        self.awaiting = set()
        if req.proposal is not None and not req.confirmed:
            answer = nlu.yes_no(text)
            if answer is True:
                req.confirmed = True
                return
            if answer is False:
                req.proposal = None
                self.take_correction(text)
                return
            self.awaiting = {"confirm"}
            return
        if OTHERS_QUESTION in awaiting:
            if req.intent is not None and nlu.yes_no(text) is False:
                self.take_correction(text)  # a no to the other agent's proposal restates what is wanted
                return
            awaiting = self.slots_answered(text)
        if self.user_id is None:
            found = nlu.email(text)
            if found:
                self.email = found
            nz = nlu.name_and_zip(text)
            if nz:
                self.name_zip = nz
        if req.intent is None:
            req.intent = nlu.intent(text)
            if req.intent is not None:
                req.text = text
        ids = nlu.order_ids(text)
        if ids and req.intent not in (None, "modify_user_address"):
            if ids[0] != req.order_ref:
                req.order_ref, req.order_id, req.order_lookup_failed = ids[0], None, False
        elif "order" in awaiting:
            req.hint = text
        if "items" in awaiting:
            req.items_text, req.items = text, None
        if "new_items" in awaiting:
            req.new_items_text, req.new_items = text, None
        if "payment" in awaiting:
            if _ASKS_METHODS.search(text.lower()):
                req.asks["list_methods"] = 1
            else:
                req.payment_text, req.payment_id = text, None
        if req.intent == "cancel" and ("reason" in awaiting or req.text == text):
            req.reason = nlu.cancel_reason(text) or req.reason
        if req.intent in ("modify_address", "modify_user_address"):
            req.address = nlu.address(text) or req.address

    def slots_answered(self, text: str) -> set[str]:
        """The open slots of the request that `text` fills: what the customer answered when another
        agent asked (a fork's prefix), read from the answer since the question was not this oracle's."""
        req = self.req
        if req.intent is None:
            return set()  # a request opened now: read as an opening
        slots = set()
        order = self.orders.get(req.order_id or "")
        if order is None and req.intent != "modify_user_address" and not (nlu.email(text) or nlu.name_and_zip(text)):
            slots.add("order")
        if order is not None and nlu.mentions(text, {i["name"] for i in order["items"]}):
            if req.items is None:
                slots.add("items")
            elif req.intent in ("modify_items", "exchange") and req.new_items is None:
                slots.add("new_items")
        if req.intent in _USES_PAYMENT and req.payment_id is None \
                and (_payment_words(text) or _ASKS_METHODS.search(text.lower())):
            slots.add("payment")
        if req.intent == "cancel" and nlu.cancel_reason(text):
            slots.add("reason")
        return slots

    def take_correction(self, text: str) -> None:
        """The customer said no to a proposed change: re-read whatever the correction restates."""
        req = self.req
        touched = False
        ids = nlu.order_ids(text)
        if ids and ids[0] != req.order_id:
            req.order_ref, req.order_id, req.items, req.new_items = ids[0], None, None, None
            req.amount = None
            touched = True
        order = self.orders.get(req.order_id or "")
        if order and nlu.mentions(text, {i["name"] for i in order["items"]}):
            if req.intent in ("exchange", "modify_items") and req.items is not None and _WANT.search(text.lower()):
                req.new_items_text, req.new_items = text, None
            else:
                req.items_text, req.items, req.new_items = text, None, None
            req.amount = None  # amounts follow the items
            touched = True
        if req.intent in ("return", "exchange", "modify_items", "modify_payment") and _payment_words(text):
            req.payment_text, req.payment_id = text, None
            touched = True
        if nlu.address(text):
            req.address = nlu.address(text)
            touched = True
        reason = nlu.cancel_reason(text)
        if reason:
            req.reason = reason
            touched = True
        if not touched:
            req.asks["what_changed"] = 1

    # -- reading tool results
    def absorb_result(self, name: str, content: str, error: bool) -> Message | None:
        """Learn from a result; a message returned here is sent at once (a retry)."""
        call, self.pending = self.pending, None
        foreign, self.foreign = self.foreign, False
        if error and foreign:
            # Another agent's call failed (a fork's prefix): that says nothing of the request, which
            # this oracle goes on serving with its own calls.
            return None
        req = self.req
        args = call.arguments if call is not None and call.name == name else {}
        if name in ("find_user_id_by_email", "find_user_id_by_name_zip"):
            if not error:
                self.user_id = content.strip().strip('"')
            return None
        if error:
            return self.on_error(name, args, content)
        if name == "get_user_details":
            self.user, self.user_stale = orjson.loads(content), False
        elif name == "get_order_details":
            order = orjson.loads(content)
            oid = order["order_id"]
            self.orders[oid] = order
            if req.order_ref == oid:
                req.order_id = oid
            elif req.order_ref is None and req.hint and oid in self.user_orders():
                req.scanned.add(oid)
                if any(nlu.names_product(req.hint, i["name"]) for i in order["items"]):
                    req.order_id = oid
        elif name == "get_product_details":
            product = orjson.loads(content)
            self.products[product["product_id"]] = product
        elif name == "list_all_product_types":
            self.catalog = orjson.loads(content)
        elif name == "calculate":
            req.amount = content.strip().strip('"')
        elif name in WRITE_TOOL.values():
            return self.report(name, orjson.loads(content))
        return None

    def on_error(self, name: str, args: dict[str, Any], content: str) -> Message | None:
        req = self.req
        if name == "get_order_details" and args.get("order_id") == req.order_ref:
            req.order_lookup_failed = True
        elif name == "calculate":
            req.amount = _evaluate_sum(args.get("expression", ""))
        elif name in WRITE_TOOL.values():
            why = content.removeprefix("Error: ")
            self.finish_request()
            return self.text(self.say("failed", {"why": why}) + self.say("anything_else"))
        return None

    # -- deciding
    def decide(self) -> Message:
        req = self.req
        if req.intent is None:
            if not self.greeted and not req.text:
                self.greeted = True
                return self.text(self.say("greet"))
            self.unclear += 1
            if self.unclear > 3:
                return self.give_up("could not tell what the customer needs")
            return self.text(self.say("what_intent"))
        missing = missing_tools(req.intent, self.tools)
        if missing:  # what it would need to read or write cannot be had: say so, never guess
            return self.give_up(f"cannot serve the {req.intent.replace('_', ' ')} request without "
                                + ", ".join(missing))
        planner = self.planner
        assert planner is not None
        target = TARGET_TOOL[req.intent]
        steps = planner.steps(target, NEEDS[req.intent])
        if not planner.writes.get(target, True):
            steps += ((target,),)  # a read-only request ends with the read itself
        for step in steps:
            action = self.run_step(step)
            if action is not None:
                return action
        return self.finish()

    def run_step(self, step: tuple[str, ...]) -> Message | None:
        """The next message for one planned step, or None when the step's outputs are known."""
        tool = step[0]
        if tool in ("find_user_id_by_email", "find_user_id_by_name_zip"):
            return self.authenticate(step)
        if self.user_id is None:
            return self.authenticate(("find_user_id_by_email", "find_user_id_by_name_zip"))
        if tool == "get_user_details":
            if self.user is None or (self.user_stale and self.req.intent in _USES_PAYMENT):
                return self.call("get_user_details", {"user_id": self.user_id})
            return None
        if tool == "get_order_details":
            return self.locate_order()
        if tool == "get_product_details":
            return self.look_up_products()
        return None  # other read tools (the catalog listing) are called on demand in `collect`

    def authenticate(self, step: tuple[str, ...]) -> Message | None:
        if self.user_id is not None:
            return None
        if self.email and "find_user_id_by_email" in step and ("email", self.email) not in self.tried:
            self.tried.add(("email", self.email))
            return self.call("find_user_id_by_email", {"email": self.email})
        if self.name_zip and "find_user_id_by_name_zip" in step and ("name",) + self.name_zip not in self.tried:
            self.tried.add(("name",) + self.name_zip)
            first, last, zip_code = self.name_zip
            return self.call("find_user_id_by_name_zip", {"first_name": first, "last_name": last, "zip": zip_code})
        if self.email and ("email", self.email) in self.tried and not self.name_zip \
                and "find_user_id_by_name_zip" in self.tools:
            return self.ask("ask_name_zip", "identity")
        if self.tried:
            return self.ask("ask_identity_again", "identity")
        if self.req.intent == "modify_user_address" and self.req.address is None and self.dice.chance(0.5):
            return self.ask("ask_identity_address", "identity", also="address")
        return self.ask("ask_identity", "identity")

    def ask(self, key: str, slot: str, values: dict[str, str] | None = None, also: str | None = None) -> Message:
        count = self.req.asks.get(slot, 0) + 1
        self.req.asks[slot] = count
        if count > 4:
            return self.give_up(f"could not get the {slot.replace('_', ' ')} from the customer")
        return self.text(self.say(key, values), {slot} | ({also} if also else set()))

    def give_up(self, summary: str) -> Message:
        if "transfer_to_human_agents" in self.tools:
            return self.call("transfer_to_human_agents", {"summary": summary})
        self.finish_request()
        return self.text("I'm sorry, I'm not able to help with this in chat." + self.say("anything_else"))

    def user_orders(self) -> list[str]:
        return list(self.user["orders"]) if self.user else []

    def first_name(self) -> str:
        return self.user["name"]["first_name"] if self.user else "there"

    def locate_order(self) -> Message | None:
        req = self.req
        if req.intent == "modify_user_address":
            return None
        if req.order_id is not None and req.order_id in self.orders:
            return self.check_order()
        mine = self.user_orders()
        if req.order_ref is not None:
            if req.order_ref not in mine:
                if req.order_lookup_failed or req.asks.get("order", 0) < 2:
                    req.order_ref, req.order_lookup_failed = None, False
                    return self.ask("ask_order_again", "order")
                return self.refuse("that order is not on your account, and I can only help with your own orders")
            if req.order_lookup_failed:
                req.order_ref, req.order_lookup_failed = None, False
                return self.ask("ask_order_again", "order")
            return self.call("get_order_details", {"order_id": req.order_ref})
        if req.hint:
            for oid in mine:
                if oid not in req.scanned:
                    known = self.orders.get(oid)
                    if known is not None and not self.user_stale:
                        req.scanned.add(oid)
                        if any(nlu.names_product(req.hint, i["name"]) for i in known["items"]):
                            req.order_id = oid
                            return self.check_order()
                        continue
                    return self.call("get_order_details", {"order_id": oid})
            req.hint, req.scanned = "", set()
            return self.ask("ask_order_again", "order")
        if self.asked_order:  # a later request: the customer knows they are verified
            return self.ask("ask_order_next", "order")
        self.asked_order = True
        return self.ask("ask_order", "order", {"first": self.first_name()})

    def check_order(self) -> Message | None:
        """Policy on the order itself: ownership and status."""
        req = self.req
        order = self.orders[req.order_id]  # type: ignore[index]
        if order["user_id"] != self.user_id:
            return self.refuse("that order is not on your account, and I can only help with your own orders")
        needed = REQUIRED_STATUS.get(req.intent or "")
        if needed is not None and order["status"] != needed:
            action = {"cancel": "cancelled", "return": "returned", "exchange": "exchanged"}.get(req.intent or "",
                                                                                                  "modified")
            return self.refuse(f"order {req.order_id} is '{order['status']}', and only {needed} orders can be "
                               f"{action}")
        return None

    def look_up_products(self) -> Message | None:
        req = self.req
        if req.intent not in ("modify_items", "exchange"):
            return None
        items = self.resolve_items()
        if isinstance(items, Message):
            return items
        for item in items:
            if item["product_id"] not in self.products:
                return self.call("get_product_details", {"product_id": item["product_id"]})
        return None

    # -- slots
    def resolve_items(self) -> list[dict[str, Any]] | Message:
        req = self.req
        if req.items is not None:
            return req.items
        order = self.orders[req.order_id]  # type: ignore[index]
        verb = VERB[req.intent or ""]
        if not req.items_text:
            values = {"order_id": req.order_id, "verb": verb, "status": order["status"]}
            if req.intent == "return" and not req.payment_text and self.dice.chance(0.5):
                return self.ask("ask_items_refund", "items", values, also="payment")
            return self.ask("ask_items", "items", values)
        chosen = match_items(order["items"], req.items_text)
        if not chosen:
            req.items_text = ""
            listing = join_list([describe_item(i) for i in order["items"]])
            return self.ask("ask_items_again", "items", {"order_id": req.order_id, "listing": listing})
        req.items = chosen
        return chosen

    def resolve_new_items(self) -> list[dict[str, Any]] | Message:
        req = self.req
        if req.new_items is not None:
            return req.new_items
        if not req.new_items_text:
            return self.ask("ask_new_items", "new_items")
        items = req.items or []
        segs = nlu.segments(req.new_items_text, {i["name"] for i in items})
        used = [False] * len(segs)
        out = []
        for item in items:
            k = next((j for j, (name, _) in enumerate(segs) if name == item["name"] and not used[j]), None)
            if k is None:
                if self.mentions_other_product(req.new_items_text, items):
                    req.other_product = True
                    return []
                req.new_items_text = ""
                return self.ask("ask_new_items_again", "new_items", {"name": item["name"]})
            used[k] = True
            variant = match_variant(self.products[item["product_id"]], item, segs[k][1])
            if variant is None:
                req.new_items_text = ""
                return self.ask("ask_new_items_again", "new_items", {"name": item["name"]})
            out.append(variant)
        req.new_items = out
        return out

    def mentions_other_product(self, text: str, items: list[dict[str, Any]]) -> bool:
        names = set(self.catalog) if self.catalog else set()
        names -= {i["name"] for i in items}
        return bool(names and nlu.mentions(text, names))

    def resolve_payment(self, key: str) -> str | Message:
        req = self.req
        if req.payment_id is not None:
            return req.payment_id
        methods = self.user["payment_methods"] if self.user else {}
        listing = join_list([describe_method(m) for m in methods.values()])
        if req.asks.pop("list_methods", None):
            return self.text(self.say("list_methods", {"listing": listing}), {"payment"})
        if not req.payment_text:
            return self.ask(key, "payment")
        order = self.orders.get(req.order_id or "")
        found = match_payment(methods, req.payment_text, order)
        if found is None:
            req.payment_text = ""
            return self.ask("ask_payment_again", "payment", {"listing": listing})
        req.payment_id = found
        return found

    # -- finishing a request
    def finish(self) -> Message:
        """All lookups done: gather what the customer still has to say, check policy, confirm, act."""
        req = self.req
        intent = req.intent or ""
        if req.asks.pop("what_changed", None):
            return self.text(self.say("ask_what_changed"), {"items", "new_items", "payment", "order"})
        if intent == "order_status":
            return self.report_status()
        if req.proposal is not None and not req.confirmed:
            return self.text(self.say("ask_yes_no"), {"confirm"})
        if req.confirmed and req.proposal is not None:
            proposal = req.proposal
            return self.call(proposal.name, dict(proposal.arguments))
        args = self.collect(intent)
        if isinstance(args, Message):
            return args
        req.proposal = ToolCall(id="proposal", name=WRITE_TOOL[intent], arguments=args)
        return self.propose(intent, args)

    def propose(self, intent: str, args: dict[str, Any]) -> Message:
        """State the change `req.proposal` makes and ask for an explicit yes."""
        return self.text(self.say("confirm", {"action": self.describe_change(intent, args)}), {"confirm"})

    def collect(self, intent: str) -> dict[str, Any] | Message:
        """The write's arguments, asking for and checking whatever is missing; a Message when not ready."""
        req = self.req
        order = self.orders.get(req.order_id or "")
        if intent == "cancel":
            if req.reason is None:
                return self.ask("ask_reason" if req.asks.get("reason", 0) == 0 else "ask_reason_again", "reason")
            return {"order_id": req.order_id, "reason": req.reason}
        if intent in ("modify_address", "modify_user_address"):
            if req.address is None:
                return self.ask("ask_address" if req.asks.get("address", 0) == 0 else "ask_address_again", "address")
            head = {"order_id": req.order_id} if intent == "modify_address" else {"user_id": self.user_id}
            return {**head, **req.address}
        if intent == "modify_payment":
            pid = self.resolve_payment("ask_payment_new")
            if isinstance(pid, Message):
                return pid
            paid = net_payment(order)  # type: ignore[arg-type]
            method = self.user["payment_methods"].get(pid, {})  # type: ignore[index]
            if paid is not None and paid[0] == pid:
                return self.refuse(f"order {req.order_id} is already paid with {describe_method(method)}; the new "
                                   "payment method must be a different one")
            total = order_total(order)  # type: ignore[arg-type]
            if method.get("source") == "gift_card" and method.get("balance", 0) + 1e-9 < total:
                return self.refuse(f"the gift card balance ({money(method['balance'])}) does not cover the order "
                                   f"total of {money(total)}")
            req.amount = f"{total:.2f}"
            return {"order_id": req.order_id, "payment_method_id": pid}
        items = self.resolve_items()
        if isinstance(items, Message):
            return items
        if intent == "return":
            pid = self.resolve_payment("ask_payment_refund")
            if isinstance(pid, Message):
                return pid
            original = order["payment_history"][0]["payment_method_id"]  # type: ignore[index]
            method = self.user["payment_methods"].get(pid, {})  # type: ignore[index]
            if pid != original and method.get("source") != "gift_card":
                return self.refuse(f"a refund can only go to the original payment method "
                                   f"({describe_method(self.user['payment_methods'].get(original, {'id': original}))}) "  # type: ignore[index]
                                   "or to a gift card")
            amount = self.amount([i["price"] for i in items], [])
            if isinstance(amount, Message):
                return amount
            return {"order_id": req.order_id, "item_ids": [i["item_id"] for i in items], "payment_method_id": pid}
        # modify_items / exchange
        if "list_all_product_types" in self.tools and self.catalog is None and req.new_items_text and not _all_named(req.new_items_text, items):
            return self.call("list_all_product_types", {})
        new_items = self.resolve_new_items()
        if isinstance(new_items, Message):
            return new_items
        if req.other_product or not new_items:
            return self.refuse("an item can only be exchanged or modified for another option of the same product, "
                               "not for a different product")
        for old, new in zip(items, new_items):
            if new["item_id"] == old["item_id"]:
                return self.refuse(f"the {old['name']} you have already has those options")
            if not new["available"]:
                return self.refuse(f"the {old['name']} with {', '.join(new['options'].values())} is out of stock")
        pid = self.resolve_payment("ask_payment_diff")
        if isinstance(pid, Message):
            return pid
        diff = round(sum(n["price"] for n in new_items) - sum(o["price"] for o in items), 2)
        method = self.user["payment_methods"].get(pid, {})  # type: ignore[index]
        if method.get("source") == "gift_card" and diff > 0 and method.get("balance", 0) + 1e-9 < diff:
            return self.refuse(f"the gift card balance ({money(method['balance'])}) does not cover the price "
                               f"difference of {money(diff)}")
        amount = self.amount([n["price"] for n in new_items], [o["price"] for o in items])
        if isinstance(amount, Message):
            return amount
        return {"order_id": req.order_id, "item_ids": [i["item_id"] for i in items],
                "new_item_ids": [n["item_id"] for n in new_items], "payment_method_id": pid}

    def amount(self, plus: list[float], minus: list[float]) -> Message | None:
        """The amount to state; sums of several prices go through the calculate tool when there is one."""
        req = self.req
        if req.amount is not None:
            return None
        value = round(sum(plus) - sum(minus), 2)
        if "calculate" in self.tools and len(plus) + len(minus) > 1:
            expr = " + ".join(f"{p:.2f}" for p in plus) + "".join(f" - {m:.2f}" for m in minus)
            return self.call("calculate", {"expression": expr})
        req.amount = f"{value:.2f}"
        return None

    def refuse(self, why: str) -> Message:
        self.finish_request()
        return self.text(self.say("refuse", {"why": why}) + self.say("anything_else"))

    def finish_request(self) -> None:
        self.req = RequestState()
        self.awaiting = set()

    # -- what the customer is told
    def describe_change(self, intent: str, args: dict[str, Any]) -> str:
        req = self.req
        oid = args.get("order_id")
        if intent == "cancel":
            order = self.orders[oid]
            return (f"cancel order {oid} (reason: {args['reason']}); the amount paid, {money(order_total(order))}, "
                    "will be refunded to the original payment method")
        if intent in ("modify_address", "modify_user_address"):
            where = f"the shipping address of order {oid}" if oid else "your default address"
            return f"change {where} to {nlu.format_address(req.address or {})}"
        methods = self.user["payment_methods"] if self.user else {}
        method = describe_method(methods.get(args.get("payment_method_id", ""), {"id": args.get("payment_method_id")}))
        if intent == "modify_payment":
            return f"change the payment method of order {oid} to {method}; {money(float(req.amount or 0))} " \
                   "will be charged to it and the original payment refunded"
        items = req.items or []
        listing = join_list([describe_item(i) for i in items])
        if intent == "return":
            return f"return {listing} from order {oid}, with a refund of {money(float(req.amount or 0))} to {method}"
        pairs = join_list([f"{describe_item(o)} to {describe_item(n, o['name'])}"
                           for o, n in zip(items, req.new_items or [])])
        verb = "exchange" if intent == "exchange" else "modify"
        return f"{verb}, in order {oid}, {pairs}; {self.difference_words(method)}"

    def difference_words(self, method: str) -> str:
        value = float(self.req.amount or 0)
        if value > 0:
            return f"the price difference of {money(value)} will be charged to {method}"
        if value < 0:
            return f"the price difference of {money(-value)} will be refunded to {method}"
        return f"there is no price difference (payment method: {method})"

    def report(self, tool: str, order: dict[str, Any]) -> Message:
        req = self.req
        intent = req.intent or ""
        oid = req.order_id
        if tool == "modify_user_address":
            self.user = order
            text = self.done("modify_user_address", {"address": nlu.format_address(order["address"])})
        else:
            before = self.orders.get(order["order_id"], {}).get("payment_history", [])
            self.orders[order["order_id"]] = order
            self.user_stale = True
            methods = self.user["payment_methods"] if self.user else {}
            pid = req.proposal.arguments.get("payment_method_id") if req.proposal else None
            method = describe_method(methods.get(pid, {"id": pid})) if pid else ""
            amount = float(req.amount or 0)
            if intent == "cancel":
                added = order["payment_history"][len(before):]  # the refunds this cancellation made
                refunds = [p["amount"] for p in added if p["transaction_type"] == "refund"]
                amount = round(sum(refunds), 2) if refunds else order_total(order)
            stated = self.reported_amount(intent, amount, order)
            if stated != amount:
                amount = stated
                req.amount = f"{stated:.2f}"  # what difference_words reads
            values = {"order_id": str(oid), "method": method, "status": order["status"],
                      "amount": money(amount), "address": nlu.format_address(order["address"])}
            if intent in ("cancel", "modify_address", "modify_payment", "return"):
                text = self.done(intent, values)
            else:
                text = self.done("swap", {**values, "diff": self.difference_words(method)})
        self.finish_request()
        return self.text(text + self.say("anything_else"))

    def reported_amount(self, intent: str, amount: float, order: dict[str, Any]) -> float:
        """The amount a report states (the noisy oracle misstates some)."""
        return amount

    def report_status(self) -> Message:
        req = self.req
        order = self.orders[req.order_id]  # type: ignore[index]
        topics = nlu.status_topics(req.text) or ["status"]
        parts = [self.done("status", {"order_id": str(req.order_id), "status": order["status"]})]
        extra = []
        if "total" in topics:
            extra.append(self.done("total", {"amount": money(order_total(order))}))
        if "items" in topics:
            extra.append(self.done("items", {"items": join_list([describe_item(i) for i in order["items"]])}))
        if "tracking" in topics:
            tracking = [t for f in order.get("fulfillments", []) for t in f.get("tracking_id", [])]
            extra.append(self.done("tracking", {"tracking": ", ".join(tracking)}) if tracking
                         else self.done("no_tracking", {}))
        if len(extra) > 1 and self.dice.chance(0.5):
            extra.reverse()  # the answers in another order now and then
        parts += extra
        self.finish_request()
        return self.text(" ".join(parts) + self.say("anything_else"))


OTHERS_QUESTION = "others_question"
"""Awaiting marker: the customer answers another agent's words (a fork's prefix), read by `slots_answered`."""
_USES_PAYMENT = frozenset({"modify_payment", "modify_items", "return", "exchange"})
_ASKS_METHODS = re.compile(r"\bwhich payment methods\b|\bwhat payment methods\b|\bon file\b")
_WANT = re.compile(r"\bi want\b|\binstead\b|\bi'd like\b|\bchanged to\b")


def _payment_words(text: str) -> bool:
    low = text.lower()
    return bool(nlu.PAYMENT_ID.search(text) or "paypal" in low or "gift card" in low or "card" in low
                or "original" in low)


def _all_named(text: str, items: list[dict[str, Any]]) -> bool:
    return all(nlu.has_phrase(text.lower(), i["name"]) for i in items)


def _evaluate_sum(expression: str) -> str:
    """Fallback when the calculate tool fails: sums and differences of plain numbers only."""
    total = 0.0
    for sign, number in re.findall(r"([+-]?)\s*(\d+(?:\.\d+)?)", expression):
        total += -float(number) if sign == "-" else float(number)
    return f"{total:.2f}"


def order_total(order: dict[str, Any]) -> float:
    return round(sum(i["price"] for i in order["items"]), 2)


def net_payment(order: dict[str, Any]) -> tuple[str, float] | None:
    """(method id, amount) of an order paid by exactly one method, else None."""
    paid: dict[str, float] = {}
    for p in order["payment_history"]:
        sign = 1 if p["transaction_type"] == "payment" else -1
        paid[p["payment_method_id"]] = paid.get(p["payment_method_id"], 0.0) + sign * p["amount"]
    live = [(k, v) for k, v in paid.items() if v > 0.005]
    return live[0] if len(live) == 1 else None


def describe_item(item: dict[str, Any], name: str | None = None) -> str:
    opts = ", ".join(item["options"].values())
    return f"the {name or item['name']} ({opts}; item {item['item_id']})"


def describe_method(method: dict[str, Any]) -> str:
    source = method.get("source")
    if source == "credit_card":
        brand = method.get("brand", "")
        brand = "Amex" if brand == "amex" else brand.capitalize()
        return f"{brand} credit card ending in {method.get('last_four')} ({method['id']})"
    if source == "paypal":
        return f"PayPal ({method['id']})"
    if source == "gift_card":
        return f"gift card ({method['id']}, balance {money(method.get('balance', 0))})"
    return str(method.get("id"))


def match_items(items: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """The order's items a customer names (product name, then options), in the order named."""
    chosen: list[dict[str, Any]] = []
    for name, segment in nlu.segments(text, {i["name"] for i in items}):
        candidates = [i for i in items if i["name"] == name]
        if len(candidates) == 1:
            pick = candidates[0]
        else:
            k = nlu.best_options_match(segment, [c["options"] for c in candidates])
            if k is None:
                continue
            pick = candidates[k]
        if pick not in chosen:
            chosen.append(pick)
    return chosen


def match_variant(product: dict[str, Any], old: dict[str, Any], segment: str) -> dict[str, Any] | None:
    """The product variant with the options the customer states (unstated options stay as they were)."""
    variants = list(product["variants"].values())
    wanted = {}
    for key, old_value in old["options"].items():
        values = {v["options"].get(key) for v in variants} - {None}
        stated = [v for v in values if nlu.has_phrase(segment, v)]
        wanted[key] = max(stated, key=len) if stated else old_value
    for v in variants:
        if v["options"] == wanted:
            return v
    return None


def match_payment(methods: dict[str, dict[str, Any]], text: str, order: dict[str, Any] | None) -> str | None:
    """A payment method id of the user from how the customer names it."""
    for pid in nlu.PAYMENT_ID.findall(text):
        if pid in methods:
            return pid
    low = text.lower()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for m in methods.values():
        by_kind.setdefault(m.get("source", ""), []).append(m)
    if "paypal" in low and by_kind.get("paypal"):
        return by_kind["paypal"][0]["id"]
    if "gift" in low and by_kind.get("gift_card"):
        return by_kind["gift_card"][0]["id"]
    cards = by_kind.get("credit_card", [])
    if cards:
        for four in nlu.LAST_FOUR.findall(text):
            for c in cards:
                if c.get("last_four") == four:
                    return c["id"]
        if "card" in low and len(cards) == 1 and not nlu.LAST_FOUR.search(text):
            return cards[0]["id"]
    if "original" in low and order is not None and order.get("payment_history"):
        return order["payment_history"][0]["payment_method_id"]
    return None
