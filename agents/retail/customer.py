"""The scripted retail customer: plays a :class:`CustomerBrief` against any support agent.

It opens with what it wants, then answers what it is asked: identity when asked to authenticate,
the order id (or, when it does not know it, a description of the order) when asked which order,
items, new options, payment method, reason or address when asked for them. A forthcoming customer
(``forthcoming_rate``, drawn once per conversation) now and then says some of these before it is
asked: its identity, order id or cancellation reason with its request, its order id with its
identity; only facts its brief holds, and only those a support agent asks for next. It says "yes"
to a proposed change that matches its request and "no" (with the correction) to one that does not,
moves on to its next request when the agent asks whether there is anything else, and ends the
conversation with ``###STOP###`` when everything is handled or refused, when the agent transfers
it, or when the conversation stalls.

Styles: ``short`` (terse), ``long`` (polite, wordy), ``sloppy`` (lower case, chat abbreviations,
extra typos). ``typo_rate`` adds keyboard slips to the words around facts, never to the facts.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from pydantic import Field

from simworld.agent import Agent, AgentParams, View
from simworld.episode import STOP
from simworld.registry import register_agent
from simworld.types import Message

from simworld.environments.retail import vocab
from simworld.environments.retail.vocab import money_claims

from . import nlu
from .text import Dice, Template, compile_bank, join_list, money

SLOPPY_EXTRA_TYPOS = 0.04
VOLUNTEER = 0.5  # a forthcoming customer's chance, at each place a fact can come early, of giving it

# Templates: {key: {"short": [...], "long": [...]}}; sloppy draws from both, rendered sloppily.
_BANK: dict[str, dict[str, list[str]]] = {
    "hello": {
        "short": ["Hi, ", "Hello. ", ""],
        "long": ["Hello! ", "Hi there! ", "Good afternoon. "],
    },
    "open.order_status": {
        "short": ["Can you tell me the {topics} of my order?", "What's the {topics} of my order?",
                  "I need the {topics} of one of my orders."],
        "long": ["I placed an order a while ago and I'd like to know its {topics}, if you could check that for me.",
                 "Could you please look up one of my orders? I want to know the {topics}."],
    },
    "open.cancel": {
        "short": ["I need to cancel an order.", "I want to cancel my order.", "Please cancel one of my orders."],
        "long": ["I placed an order recently and I'd like to cancel it, please.",
                 "I need some help cancelling an order I made."],
    },
    "open.modify_address": {
        "short": ["I need to change the shipping address of an order.", "Can you update the address on my order?"],
        "long": ["I just placed an order but it's going to the wrong address. Could you change the shipping "
                 "address for me?", "I'd like to update the delivery address on one of my pending orders."],
    },
    "open.modify_payment": {
        "short": ["I want to change the payment method on an order.", "Can I switch how I pay for my order?"],
        "long": ["I'd like to change the payment method I used for one of my orders, please.",
                 "Is it possible to pay for my pending order with a different payment method?"],
    },
    "open.modify_items": {
        "short": ["I want to change some items in my order to different options.",
                  "Can I switch an item in my pending order to a different option?"],
        "long": ["I ordered something recently but picked the wrong options. Could I change the items before "
                 "it ships?", "I'd like to modify the items of an order I haven't received yet, just different "
                 "options of the same products."],
    },
    "open.return": {
        "short": ["I want to return some items.", "I'd like to return something I bought.",
                  "Need to return items from an order."],
        "long": ["I received my order but I'd like to return some of the items, please.",
                 "Some things I ordered didn't work out for me, so I want to return them."],
    },
    "open.exchange": {
        "short": ["I want to exchange an item I received.", "I'd like to exchange some items for other options."],
        "long": ["I got my order but I'd like to exchange some items for a different option of the same product.",
                 "Could you help me exchange items from an order that was delivered?"],
    },
    "open.modify_user_address": {
        "short": ["I moved, please update my default address.", "I need to change the address on my account."],
        "long": ["I recently moved and need to update the default address on my profile.",
                 "Could you change the address on my account? I have a new place now."],
    },
    "next": {
        "short": ["Yes, one more thing. ", "Yes. ", "Actually yes. "],
        "long": ["Yes, actually, there is one more thing. ", "Yes please, I have another request. "],
    },
    "email": {
        "short": ["{email}", "It's {email}.", "Email: {email}"],
        "long": ["Sure, my email address is {email}.", "Of course! You can find me under {email}."],
    },
    "name_zip": {
        "short": ["{first} {last}, zip {zip}.", "My name is {first} {last}, zip code {zip}."],
        "long": ["Sure. My name is {first} {last} and my zip code is {zip}.",
                 "Of course, I'm {first} {last}, and the zip code is {zip}."],
    },
    "no_email": {
        "short": ["I don't remember my email. My name is {first} {last}, zip {zip}."],
        "long": ["Hmm, I'm not sure which email I signed up with. My name is {first} {last} and my zip code "
                 "is {zip}, does that work?"],
    },
    "order_id": {
        "short": ["{order_id}", "It's {order_id}.", "Order {order_id}."],
        "long": ["Sure, the order id is {order_id}.", "Let me check... yes, it's order {order_id}."],
    },
    "order_hint": {
        "short": ["I don't have the order id. It's {hint}.", "Not sure of the number, it's {hint}."],
        "long": ["I'm afraid I don't have the order number at hand. It's {hint}, if that helps.",
                 "I can't find the order id anywhere, sorry. It should be {hint}."],
    },
    "items": {
        "short": ["{items}.", "The {items}.", "These: {items}."],
        "long": ["It's the {items}.", "I'd like to do that for the {items}, please."],
    },
    "new_items": {
        "short": ["{new_items}.", "I want {new_items}."],
        "long": ["I'd like {new_items}, please.", "Could I get {new_items} instead?"],
    },
    "payment": {
        "short": ["{payment}.", "Use my {payment}.", "My {payment}."],
        "long": ["Please use my {payment}.", "I'd like to use my {payment} for that."],
    },
    "ask_methods": {
        "short": ["Which payment methods do I have on file?"],
        "long": ["Hmm, I don't remember. Which payment methods do I have on file with you?"],
    },
    "reason.no longer needed": {
        "short": ["I don't need it anymore.", "No longer needed.", "Changed my mind, don't need it."],
        "long": ["I realised I don't need it anymore, to be honest.", "I simply no longer need it."],
    },
    "reason.ordered by mistake": {
        "short": ["I ordered it by mistake.", "It was a mistake.", "Ordered by accident."],
        "long": ["Honestly, I placed that order by mistake.", "I ordered it by accident, sorry about that."],
    },
    "reason.verbatim": {
        "short": ["{reason}.", "The reason is {reason}."],
        "long": ["Let's say {reason}.", "It would be {reason}."],
    },
    "address": {
        "short": ["{address}", "It's {address}.", "New address: {address}"],
        "long": ["Sure, the new address is {address}.", "Please use {address}."],
    },
    "yes": {
        "short": ["Yes.", "Yes, go ahead.", "Yes please.", "Yes, correct.", "Yep, do it."],
        "long": ["Yes, that's all correct. Please go ahead.", "Yes, please proceed. Thank you!",
                 "Yes, that looks right to me."],
    },
    "no": {
        "short": ["No, that's not right. ", "No. ", "Nope, that's wrong. "],
        "long": ["No, wait, that's not what I asked for. ", "No, sorry, that's not quite right. "],
    },
    "correct.order": {"short": ["It's {order}."], "long": ["I meant {order}."]},
    "correct.items": {"short": ["I meant the {items}."], "long": ["I was talking about the {items}."]},
    "correct.new_items": {"short": ["I want {new_items}."], "long": ["What I want is {new_items}."]},
    "correct.payment": {"short": ["Use my {payment}."], "long": ["I'd like to use my {payment}."]},
    "correct.address": {"short": ["The address is {address}."], "long": ["The right address is {address}."]},
    "correct.reason": {"short": ["The reason is {reason}."], "long": ["My reason is {reason}."]},
    "correct.other": {"short": ["Let's try again."], "long": ["Could we go over it again?"]},
    "correct.refund": {"short": [" That should be a refund of {amount} to me."],
                       "long": [" Also, by my count I should be refunded {amount}."]},
    "correct.charge": {"short": [" That should be a charge of {amount}."],
                       "long": [" Also, by my count I should be charged {amount} extra."]},
    "correct.cancel": {"short": ["I paid {amount} for it, so I should be refunded {amount}."],
                       "long": ["The order cost me {amount}, so by my count the refund should be {amount}."]},
    "correct.refund_only": {"short": ["A cancellation should be refunded to me, not charged."],
                            "long": ["I'd expect to be refunded for a cancelled order, not charged."]},
    "correct.payment_total": {"short": ["The order total is {amount}: my {payment} should be charged {amount}."],
                              "long": ["By my count the full {amount} should be charged to my {payment}, and "
                                       "the current method refunded."]},
    "correct.even": {"short": [" And the prices are the same, so nothing should be charged or refunded."],
                     "long": [" And by my count there's no price difference at all."]},
    "accept_refusal": {
        "short": ["Oh, okay. ", "I see. ", "Okay, understood. "],
        "long": ["Oh, that's a pity, but I understand. ", "I see, thanks for explaining. "],
    },
    "bye": {
        "short": ["No, that's all. Thanks!", "No thanks, that's it.", "That's everything, bye."],
        "long": ["No, that's everything for today. Thank you so much for your help!",
                 "Nope, that covers it. Thanks a lot, have a great day!"],
    },
    "bye_transfer": {
        "short": ["Okay, thanks.", "Alright."],
        "long": ["Okay, I'll wait for the human agent then. Thanks.", "Alright, thank you for transferring me."],
    },
    "bye_stalled": {
        "short": ["This isn't working. I'll try later.", "Never mind, bye."],
        "long": ["I don't think we're getting anywhere, so I'll try again another time. Goodbye.",
                 "Sorry, I have to go now. I'll contact you again later."],
    },
    "confused": {
        "short": ["Sorry, what do you need from me?", "I'm not sure what you mean.", "Sorry?"],
        "long": ["I'm sorry, I'm not sure what you need from me. Could you rephrase that?",
                 "Sorry, I didn't quite get that. What should I tell you?"],
    },
    # facts a forthcoming customer gives before it is asked (never the word 'address': it reads as a request)
    "volunteer.email": {
        "short": ["My email is {email}. ", "Email's {email}. "],
        "long": ["My email is {email}, in case you need it. ", "I'm writing from {email}. "],
    },
    "volunteer.name": {
        "short": ["I'm {first} {last}, zip {zip}. ", "This is {first} {last}, zip code {zip}. "],
        "long": ["My name is {first} {last} and my zip code is {zip}. ",
                 "This is {first} {last} speaking, zip code {zip}. "],
    },
    "volunteer.order_id": {
        "short": [" It's order {order_id}.", " Order {order_id}.", " The order is {order_id}."],
        "long": [" The order id is {order_id}.", " It's order {order_id}, if that helps.",
                 " I have the order id here: {order_id}."],
    },
    "remind": {
        "short": ["As I said: ", "Like I said, "],
        "long": ["As I mentioned, ", "Just to repeat, "],
    },
}

_PHRASES = {key: {style: tuple(Template(t) for t in texts) for style, texts in forms.items()}
            for key, forms in _BANK.items()}
_PHRASES_ANY = {key: compile_bank({"x": forms["short"] + forms["long"]})["x"] for key, forms in _BANK.items()}

# What the support side says, read as phrases (lower case). A confirmation mentions items and
# payment methods too, so `reply` looks at it first.
_CUES = nlu.Cues({
    "transfer": ["(transferred|transferring|transfer) you", "human agent", "to a human"],
    "confirm": ["confirm", "shall i", "should i (go ahead|proceed)", "do you want me to",
                "would you like me to (proceed|go ahead)", "is that (correct|right)", "(yes/no)", "ok to proceed",
                "can i go ahead"],
    "anything_else": ["(anything|something) else", "another request", "other (request|requests)",
                      "help you with (anything|something) more"],
    "greeting": ["how (can|may) i (help|assist)", "what can i do for you"],
    "identity": ["email", "e-mail", "zip", "authenticat*", "verify your identity", "identify you"],
    "order": ["order (id|number)", "(which|what) order", "which of your orders", "the order you"],
    "new_items": ["new (option|options)", "(which|what) (option|options|variant|variants)",
                  "(which|what) (color|size) would you like",
                  "what would you like (instead|in exchange|them to be|it to be)",
                  "(exchange|swap|change) (it|them|each one|each) (for|to|into)", "what (do|would) you want instead"],
    "items": ["(which|what) (item|items)", "which (product|products|one|ones)", "which of the items"],
    "payment": ["payment method", "which (card|method)", "how would you like to (pay|be refunded|receive)",
                "refund (go|be sent)"],
    "reason": ["reason", "why"],
    "address": ["new (shipping|default|delivery|) address", "which address", "(what's|what is) the (new|) address",
                "address (should|would you like)", "the address you"],
})
# the questions, in the order the answers are given
_QUESTIONS = ["identity", "order", "new_items", "items", "payment", "reason", "address"]


def cues(low: str) -> set[str]:
    """Which cues a (lower-case) support message contains."""
    return _CUES.find(low)


_LIST_BOTH_REASONS = re.compile(r"no longer needed.*ordered by mistake|ordered by mistake.*no longer needed")
_NOT_FOUND_EMAIL = re.compile(r"\b(?:couldn't|could not|can't|cannot|unable to) find\b.*\be-?mail\b|"
                              r"\bno (?:account|user)\b")


class CustomerParams(AgentParams):
    style: Literal["short", "long", "sloppy"] = Field(default="short", description="How the customer writes.")
    typo_rate: float = Field(default=0.0, ge=0.0, le=0.5, description="Chance of a typo per word of 4+ letters "
                                                                       "(never inside ids, e-mails or numbers).")
    clarify_rate: float = Field(default=0.15, ge=0.0, le=1.0, description="Chance of asking back instead of "
                                                                          "answering (e.g. 'which payment "
                                                                          "methods do I have?').")
    patience: int = Field(default=3, ge=1, le=50, description="Unclear or repeated questions before the "
                                                              "customer gives up and ends the conversation.")
    forthcoming_rate: float = Field(default=0.3, ge=0.0, le=1.0, description="Chance per conversation that the "
                                    "customer is forthcoming: it then now and then gives its identity, its order "
                                    "id or its reason with its request, or its order id with its identity, "
                                    "before it is asked (only facts its brief holds).")


@register_agent("customer")
class Customer(Agent):
    """A scripted customer who reveals facts only when asked (see the module docstring)."""

    Params = CustomerParams
    worlds = ("retail",)
    kinds = ("user",)  # it is the customer: validate refuses it in an assistant role

    def __init__(self, params: CustomerParams, role: str, rng: np.random.Generator) -> None:
        super().__init__(params, role, rng)
        self.dice = Dice(rng)
        self.style = params.style
        self.typo_rate = params.typo_rate + (SLOPPY_EXTRA_TYPOS if params.style == "sloppy" else 0.0)
        self.seen = 0
        self.brief: dict[str, Any] | None = None
        self.requests: list[dict[str, Any]] = []
        self.current = 0
        self.opened = False
        self.gave_email = False
        self.asked: dict[str, int] = {}
        self.confused = 0
        self.clarified = False
        self.forthcoming = False
        self.told_order = False  # the current request's order id, given before it was asked

    # -- phrasing
    def say(self, key: str, values: dict[str, str] | None = None) -> str:
        if self.style == "sloppy":
            return self.dice.pick(_PHRASES_ANY[key]).render(values, self.dice, True, self.typo_rate)
        return self.dice.pick(_PHRASES[key][self.style]).render(values, self.dice, False, self.typo_rate)

    def message(self, text: str) -> Message:
        return Message(role="user", content=text, tool_calls=[])

    # -- the turn
    async def act(self, view: View) -> Message:
        if self.brief is None:
            self.brief = view.private
            self.requests = list(view.private.get("requests") or [])
        heard = [e.content for e in view.visible_since(self.seen)
                 if e.speaker != self.role and e.content and e.role != "tool"]
        self.seen = len(view.episode.events)
        if not self.requests:
            return self.message(self.say("bye") + " " + STOP)
        if not self.opened:
            self.opened = True
            self.forthcoming = self.dice.chance(self.params.forthcoming_rate)
            return self.message(self.say("hello") + self.first_words(self.requests[0], True))
        if view.turn >= view.max_turns - 2:
            return self.message(self.say("bye_stalled") + " " + STOP)
        return self.message(self.reply("\n".join(heard)))

    def opening(self, request: dict[str, Any]) -> str:
        values = None
        if request["intent"] == "order_status":
            topics = request.get("ask") or ["status"]
            values = {"topics": join_list([t if t != "tracking" else "tracking number" for t in topics])}
        return self.say("open." + request["intent"], values)

    def first_words(self, request: dict[str, Any], first: bool) -> str:
        """The opening of a request; a forthcoming customer now and then adds (on the first request) who
        it is, the order id, or why it cancels: facts the support side would ask for next."""
        self.told_order = False
        text = self.opening(request)
        if not self.forthcoming:
            return text
        if first and self.dice.chance(VOLUNTEER):
            text = self.own_identity() + text
        if self.knows_order(request) and self.dice.chance(VOLUNTEER):
            text += self.say("volunteer.order_id", {"order_id": request["order_id"]})
            self.told_order = True
        if request["intent"] == "cancel" and request.get("reason") and self.dice.chance(VOLUNTEER):
            text += " " + self.say("reason." + request["reason"])
        return text

    def own_identity(self) -> str:
        ident = self.brief["identity"]  # type: ignore[index]
        if self.brief.get("knows_email", True):  # type: ignore[union-attr]
            self.gave_email = True
            return self.say("volunteer.email", {"email": ident["email"]})
        return self.say("volunteer.name", {"first": ident["first_name"], "last": ident["last_name"],
                                           "zip": ident["zip"]})

    @staticmethod
    def knows_order(request: dict[str, Any]) -> bool:
        return bool(request.get("order_id")) and request.get("knows_order_id", True)

    def reply(self, text: str) -> str:
        low = text.lower()
        request = self.requests[self.current]
        found = cues(low)
        if "transfer" in found:
            return self.say("bye_transfer") + " " + STOP
        if "confirm" in found:
            return self.confirm(request, text)
        if "anything_else" in found:
            prefix = self.say("accept_refusal") if request.get("expect_refusal") else ""
            self.current += 1
            self.asked.clear()
            self.clarified = False
            if self.current < len(self.requests):
                return prefix + self.say("next") + self.first_words(self.requests[self.current], False)
            return prefix + self.say("bye") + " " + STOP
        answers = []
        asked = [slot for slot in _QUESTIONS if slot in found]
        if "address" in asked and "identity" in asked and "mail" not in low:
            asked.remove("identity")  # "the new address, with its zip code" is not an identity check
        for slot in asked:
            count = self.asked.get(slot, 0) + 1
            self.asked[slot] = count
            if count > self.params.patience:
                return self.say("bye_stalled") + " " + STOP
            answer = self.answer(slot, request, low)
            if answer:
                answers.append(answer)
        if answers:
            self.confused = 0
            return " ".join(answers)
        self.confused += 1
        if self.confused > self.params.patience:
            return self.say("bye_stalled") + " " + STOP
        if "greeting" in found:
            return self.say("remind") + self.opening(request)
        return self.say("confused")

    # -- answers to questions
    def answer(self, slot: str, request: dict[str, Any], low: str) -> str:
        if slot == "identity":
            told = self.identity(low)
            if self.forthcoming and not self.told_order and self.knows_order(request) \
                    and "order" not in cues(low) and self.dice.chance(VOLUNTEER):
                self.told_order = True  # two facts in one answer: who it is, and which order
                told += self.say("volunteer.order_id", {"order_id": request["order_id"]})
            return told
        if slot == "order":
            if request.get("order_id") is None:
                return ""
            if request.get("knows_order_id", True):
                return self.say("order_id", {"order_id": request["order_id"]})
            return self.say("order_hint", {"hint": request.get("order_hint") or f"the one with the "
                                                                                   f"{request.get('order_hint_product')}"})
        if slot == "items":
            return self.say("items", {"items": self.items_text(request["items"])}) if request.get("items") else ""
        if slot == "new_items":
            if not request.get("new_items"):
                return ""
            return self.say("new_items", {"new_items": self.new_items_text(request)})
        if slot == "payment":
            method = request.get("payment_method")
            if method is None:
                return ""
            if not self.clarified and self.dice.chance(self.params.clarify_rate):
                self.clarified = True
                self.asked["payment"] -= 1  # asking back does not count as a repeated question
                return self.say("ask_methods")
            return self.say("payment", {"payment": method["description"]})
        if slot == "reason":
            reason = request.get("reason")
            if not reason:
                return ""
            if _LIST_BOTH_REASONS.search(low):
                return self.say("reason.verbatim", {"reason": reason})
            return self.say("reason." + reason)
        if slot == "address":
            addr = request.get("address")
            return self.say("address", {"address": nlu.format_address(addr)}) if addr else ""
        return ""

    def identity(self, low: str) -> str:
        ident = self.brief["identity"]  # type: ignore[index]
        names = {"first": ident["first_name"], "last": ident["last_name"], "zip": ident["zip"]}
        wants_email = "mail" in low
        wants_name = "zip" in low
        email_failed = self.gave_email and _NOT_FOUND_EMAIL.search(low) is not None
        if self.brief.get("knows_email", True) and wants_email and not email_failed \
                and not (self.gave_email and wants_name):
            self.gave_email = True
            return self.say("email", {"email": ident["email"]})
        if wants_email and not wants_name:
            return self.say("no_email", names)
        return self.say("name_zip", names)

    @staticmethod
    def item_text(item: dict[str, Any], form: int) -> str:
        values = list(item["options"].values())
        if form == 0:
            return f"{item['name']} ({', '.join(values)})"
        if form == 1:
            return f"{item['name']} in {join_list(values)}"
        return f"{item['name']} with " + join_list([f"{k} {v}" for k, v in item["options"].items()])

    def items_text(self, items: list[dict[str, Any]]) -> str:
        form = self.dice.below(3)
        return join_list([self.item_text(i, form) for i in items])

    def new_items_text(self, request: dict[str, Any]) -> str:
        # only the wanted options, product by product in the order the items were named
        form = self.dice.below(3)
        return join_list(["the " + self.item_text(new, form) for new in request["new_items"]])

    # -- confirmations
    def confirm(self, request: dict[str, Any], text: str) -> str:
        wrong = self.mismatch(request, text)
        if wrong is None:
            return self.say("yes")
        fixes = {
            "order": lambda: self.say("correct.order", {"order": request["order_id"] if request.get(
                "knows_order_id", True) else (request.get("order_hint") or request["order_id"])}),
            "items": lambda: self.say("correct.items", {"items": self.items_text(request["items"])}),
            "new_items": lambda: self.say("correct.new_items", {"new_items": self.new_items_text(request)}),
            "payment": lambda: self.say("correct.payment", {"payment": request["payment_method"]["description"]}),
            "address": lambda: self.say("correct.address", {"address": nlu.format_address(request["address"])}),
            "reason": lambda: self.say("correct.reason", {"reason": request["reason"]}),
            "money": lambda: self.money_correction(request),
        }
        return self.say("no") + fixes.get(wrong, lambda: self.say("correct.other"))()

    def money_correction(self, request: dict[str, Any]) -> str:
        """Restate what is wanted (the items, or the new items) and the money it should come to."""
        owed = expected_money(request)
        if request["intent"] == "cancel":
            return self.say("correct.cancel", {"amount": money(-owed)}) if owed else self.say("correct.refund_only")
        if request["intent"] == "modify_payment":
            return self.say("correct.payment_total", {"amount": money(owed or 0),
                                                      "payment": request["payment_method"]["description"]})
        if request.get("new_items"):
            head = self.say("correct.new_items", {"new_items": self.new_items_text(request)})
        else:
            head = self.say("correct.items", {"items": self.items_text(request["items"])})
        if owed is None or abs(owed) < 0.005:
            return head + self.say("correct.even")
        return head + self.say("correct.charge" if owed > 0 else "correct.refund", {"amount": money(abs(owed))})

    def mismatch(self, request: dict[str, Any], text: str) -> str | None:
        """Which part of a proposed change differs from the request (None: it matches).

        Checks the order, the items (by id, or by name), the new items (by id, or by the options
        named for each product), the payment method, the address, the reason, and the money: the
        amount and whether it is charged or refunded, where the proposal states them.
        """
        low = text.lower()
        if not _ACTION[request["intent"]].search(low):
            return "other"
        if request.get("order_id"):
            ids = nlu.order_ids(text)
            if ids and ids != [request["order_id"]]:
                return "order"
        items = request.get("items") or []
        new_items = request.get("new_items") or []
        if items:
            stated = set(nlu.ITEM_ID.findall(text))
            old_ids = {i["item_id"] for i in items}
            new_ids = {i["item_id"] for i in new_items}
            if stated:
                if old_ids - stated:
                    return "items"
                if new_ids - stated:
                    return "new_items"  # a wrong new item is corrected as the new item, not the old one
                if stated - old_ids - new_ids:
                    return "items"
            else:
                if not all(nlu.has_phrase(low, i["name"]) for i in items):
                    return "items"
                if new_items and not self.new_options_named(low, items, new_items):
                    return "new_items"
        method = request.get("payment_method")
        if method:
            ids = set(nlu.PAYMENT_ID.findall(text))
            if ids and ids != {method["id"]} and not (request["intent"] == "modify_payment" and method["id"] in ids):
                return "payment"  # a payment change may name the method it moves from too
            if not ids and method["description"].lower() not in low:
                return "payment"
        addr = request.get("address")
        if addr and not (addr["address1"].lower() in low and addr["zip"] in text):
            return "address"
        reason = request.get("reason")
        if reason and reason not in low:
            return "reason"
        if not money_matches(request, text):
            return "money"
        return None

    @staticmethod
    def new_options_named(low: str, items: list[dict[str, Any]], new_items: list[dict[str, Any]]) -> bool:
        """Each new item's options are all stated after one mention of its product (its old options
        are stated after another mention, or changed in place: 'the Notebook (S) to M')."""
        segs = nlu.segments(low, {i["name"] for i in items})
        for new in new_items:
            wanted = list(new["options"].values())
            if not any(name == new["name"] and all(nlu.has_phrase(seg, v) for v in wanted) for name, seg in segs):
                return False
        return True


_MONEY_INTENTS = frozenset({"return", "modify_items", "exchange", "cancel", "modify_payment"})


def expected_money(request: dict[str, Any]) -> float | None:
    """What the customer expects to pay (> 0) or get back (< 0): the brief's ``money_owed`` (a
    cancellation's refund, the order total a payment change charges), else worked out from the prices
    of the items in the brief; None when the brief does not say."""
    stated = request.get("money_owed")
    if stated:
        way, amount = stated.split()
        return round(float(amount) if way == "charge" else -float(amount), 2)
    intent = request["intent"]
    if intent not in ("return", "modify_items", "exchange") or not request.get("items"):
        return None
    old = sum(_price(i) for i in request["items"])
    if intent == "return":
        return -round(old, 2)
    return round(sum(_price(i) for i in request.get("new_items") or []) - old, 2)


def _price(item: dict[str, Any]) -> float:
    return float(str(item["price"]).replace("$", "").replace(",", ""))


def money_matches(request: dict[str, Any], text: str) -> bool:
    """Does the money a proposal states agree with the brief (amount and direction, where stated)?

    The proposal is read with the retail world's own reading of money (:func:`money_claims`), the one
    its required-output check uses. An amount stated with a direction must match the brief in amount
    and way (one such match is enough); where none has a direction, an amount said bare ('The total is
    $54.20.') must be the amount owed, unless it is plainly something else (:func:`bare_money`). A
    denial ('there's no charge', 'nothing to pay'; or '$0.00 will be charged') states a zero amount
    that way: it agrees when nothing goes that way, and is turned down when money the brief owes goes
    that way and nothing else in the proposal (a direction word, or the amount said bare) says it does.
    A payment change charges the new method and refunds the old one as much
    (:func:`payment_change_matches`).
    """
    intent = request["intent"]
    if intent not in _MONEY_INTENTS:
        return True
    owed = expected_money(request)
    claims, denied = _moved_and_denied(text)
    if owed is None:  # a brief without the amount: a cancellation refunds, that much is known
        if intent != "cancel":
            return True
        refunds = any(ways == {"refund"} for _, ways in claims)
        return refunds or not (claims or "refund" in denied)
    if intent == "modify_payment":
        return payment_change_matches(request, text, owed)
    if abs(owed) < 0.005:
        if any(amount is not None for amount, _ in claims):
            return False
        return _adds_up(bare_money(request, text), 0.0)
    way = "charge" if owed > 0 else "refund"
    stated = [c for c in claims if c[0] is not None]
    if stated:
        return any(abs(amount - abs(owed)) < 0.005 and ways == {way} for amount, ways in stated)  # type: ignore[operator]
    if claims and not any(ways == {way} for _, ways in claims):  # a direction without an amount
        return False
    return _owed_said(bare_money(request, text), abs(owed), way in denied and not claims)


def _moved_and_denied(text: str) -> tuple[list[vocab.Claim], set[str]]:
    """The claims of `text` that move money (a direction, and an amount that is not zero, or none), and
    the ways it says move nothing (:func:`money_claims`'s zero amounts)."""
    moved, denied = [], set()
    for amount, ways in money_claims(text):
        if amount is not None and amount < 0.005:
            denied |= ways
        elif ways:
            moved.append((amount, ways))
    return moved, denied


def _owed_said(amounts: list[float], owed: float, denied: bool) -> bool:
    """Do the `amounts` said bare agree with `owed`? Where the way it goes is `denied` ('there's no
    charge'), one of them must state it; else saying none is no objection."""
    return _adds_up(amounts, owed) and (bool(amounts) or not denied)


def _adds_up(amounts: list[float], wanted: float) -> bool:
    """No amounts, or one of them is `wanted`, or all together are (items listed with their prices)."""
    return not amounts or any(abs(amount - wanted) < 0.005 for amount in amounts) or abs(sum(amounts) - wanted) < 0.005


def bare_money(request: dict[str, Any], text: str) -> list[float]:
    """The amounts `text` states without a direction that can only be the money of the change.

    Left out: a gift card's balance, an item's price ('costs $35.50', 'the Mug ($9.99)', or a price
    of the brief's items, alone or summed), and, where the money is not the order's total (a return
    or a swap of some items), the order's total.
    """
    known = set()
    for key in ("items", "new_items"):
        prices = [_price(i) for i in request.get(key) or []]
        known |= {round(p, 2) for p in prices} | {round(sum(prices), 2)}
    total_is_money = request["intent"] in ("cancel", "modify_payment")
    return [amount for amount, kind in vocab.bare_amounts(text)
            if (kind == "" or (kind == "order total" and total_is_money)) and round(amount, 2) not in known]


_KIND_WORDS = {"paypal": "paypal", "gift_card": "gift card"}
# the method an order is paid with now, as a proposal calls it ('refunded to your original payment')
_OLD_METHOD = re.compile(r"\b(?:original|current|old|previous|existing|prior|initial|first)(?: \w+)? "
                         r"(?:payment method|method of payment|form of payment|payment|method|credit card|card)\b")
_NEW_METHOD = re.compile(r"\bnew (?:payment method|method of payment|form of payment|payment|method|card)\b")
_OTHER_CARD = re.compile(r"\b(?:(?:visa|mastercard|amex|discover) )?(?:credit card |card )?ending (?:in|with) "
                         r"(\d{4})\b")
# between a direction word and the method it moves money on: 'charged to your', 'refund $5.00 back to the',
# 'the refund of $5.00 will be issued to your'
_WAY_TO_METHOD = re.compile(r"(?:\s+(?:back|to|on|onto|into|from|via|using|with|through|your|the|my|an?|that|this"
                            r"|same|full|amount|total|of|it|will|be|is|goes|go|sent|issued|applied|made|put|paid"
                            r"|appears?|shows? up|\$?[\d,]+\.\d\d))*\s+")
# between a method and the direction word after it: 'your PayPal account will be charged'
_METHOD_TO_WAY = re.compile(r"(?:\s*,?\s+(?:account|card|method|payment|one|which|that|will|would|shall|is|are|get"
                            r"|gets|be|being|been|then|also|instead|immediately|now|fully|simply|has|have|had|was"
                            r"|were))*\s+")
_PAST = re.compile(r"\b(?:was|were|been)\s+$")


@lru_cache(maxsize=1024)
def _method_name(method_id: str, word: str, description: str) -> re.Pattern[str]:
    """A payment method named by its id, its description ('Visa credit card ending in 1234'), or its
    card's last four digits or its kind ('PayPal')."""
    names = "|".join(re.escape(n) for n in (description, method_id, word))  # the longest name first
    return re.compile(rf"(?<!\w)(?:{names})(?!\w)", re.IGNORECASE)


def _way_on(ways: list[tuple[vocab.Way, int, int]], low: str, start: int, end: int) -> vocab.Way | None:
    """The way money moves on the method named at start:end of `low`: the direction word that leads to
    it ('charged to your PayPal', 'the refund goes to your card'), else the one it leads to ('PayPal
    will be charged'). None when no direction word is bound to it ('switching from your card to PayPal,
    $5.00 will be charged') or the one bound tells what was done before ('your Visa was charged')."""
    before = [w for w in ways if w[2] <= start and _WAY_TO_METHOD.fullmatch(low, w[2], start)]
    after = [w for w in ways if w[1] >= end and _METHOD_TO_WAY.fullmatch(low, end, w[1])]
    if not (before or after):
        return None
    way, s, _ = before[-1] if before else after[0]
    return None if _PAST.search(low, max(0, s - 12), s) else way


def _method_mentions(method: dict[str, Any], low: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Where a lower-case clause names the new method (by id, last four digits, kind or 'new card'), and
    where another one (the one paid with now: 'original payment', another method's id or card)."""
    word = method.get("last_four") or _KIND_WORDS.get(method["kind"], method["id"])
    new = [m.span() for m in _method_name(method["id"], word, method["description"].lower()).finditer(low)]
    new += [m.span() for m in _NEW_METHOD.finditer(low)]
    old = [m.span() for m in _OLD_METHOD.finditer(low)]
    old += [m.span() for m in nlu.PAYMENT_ID.finditer(low) if m.group() != method["id"]]
    old += [m.span() for m in _OTHER_CARD.finditer(low) if m.group(1) != method.get("last_four")]
    old += [m.span() for kind, name in _KIND_WORDS.items() if kind != method["kind"]
            for m in re.finditer(rf"\b{name}\b", low)]
    return new, old


def payment_change_matches(request: dict[str, Any], text: str, total: float) -> bool:
    """A payment change charges the order `total` to the new method and refunds the old one as much.

    In each clause, the new method (named by id, last four digits or kind, or 'new card') must not be
    refunded and the old one ('original payment', another method) not charged: the direction word
    that leads to a method's name or follows it decides ('refunded to your original payment and charged
    to the new card'), not the one nearest an amount. The amounts stated with a direction, or else
    those said bare (:func:`bare_money`), must include the total: both directions move that much.
    """
    method = request["payment_method"]
    for clause in vocab.clauses(text):
        ways = vocab.ways_said(clause)
        if not ways:
            continue
        low = clause.lower()
        new, old = _method_mentions(method, low)
        if any(_way_on(ways, low, s, e) == "refund" for s, e in new) or \
                any(_way_on(ways, low, s, e) == "charge" for s, e in old):
            return False
    claims, denied = _moved_and_denied(text)
    amounts = [amount for amount, _ in claims if amount is not None]
    if amounts:
        return any(abs(amount - total) < 0.005 for amount in amounts)
    charged = any("charge" in ways for _, ways in claims)
    return _owed_said(bare_money(request, text), total, "charge" in denied and not charged)


_ACTION = {
    "order_status": re.compile(r"."),
    "cancel": re.compile(r"\bcancel"),
    "modify_address": re.compile(r"\baddress\b"),
    "modify_user_address": re.compile(r"\baddress\b"),
    "modify_payment": re.compile(r"\bpayment\b|\bpay\b"),
    "modify_items": re.compile(r"\b(?:modify|change|swap|switch|replace)"),
    "return": re.compile(r"\breturn"),
    "exchange": re.compile(r"\bexchang"),
}
