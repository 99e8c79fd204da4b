"""``noisy_oracle``: the support oracle with recoverable mistakes, for error-recovery training data.

At rate ``error_rate`` it makes one of the mistakes real agents make, then recovers:

* a tool call with a typo'd id (a digit dropped), a wrong argument name, an invalid argument value,
  a product id confused with an item id, a malformed calculation, or the wrong write tool for the
  order's status. Each is built so that the tool rejects it (an error result, state untouched);
  the agent then makes the intended call;
* a proposed change with a wrong detail (another payment method, an item left out). The customer
  says no and restates it; the agent re-reads the correction and proposes again.

At rate ``unrecovered_rate`` per request (default 0: none) it makes one mistake it does not
recover from, of a kind real tool-use agents make, each one caught by a scorer, so that its
episodes are the rejected side of preference pairs against the oracle's (``--format dpo``):

* ``unconfirmed_write``: makes the change without proposing it and waiting for a yes
  (``policy_violations``, rule ``confirmation``);
* ``wrong_write``: the customer says yes to the right change, then the call carries a wrong but
  valid detail the tool accepts: the other cancellation reason, a slipped digit in the street
  number, another payment method, another item or option, an item left out (``state_match``: the
  field diff);
* ``wrong_output``: proposes the change without its money, then states a wrong amount (an item
  left out of the sum, the charge and the refund swapped, the new items' price as the difference)
  or, asked about an order, a wrong status, total or tracking number (``outputs_stated``);
* ``needless_transfer``: transfers a request it could serve to a human agent (``state_match``,
  or ``outputs_stated`` for a question);
* ``collateral_change``: proposes and makes, with the asked address change, one nobody asked for:
  the account's default address with an order's, a pending order's with the account's
  (``collateral_damage``).

A kind is drawn only among those that fit the request (a change of address has no money to
misstate). What it did is recorded in the trajectory's provenance (``provenance.models[role]``):
the mistakes by kind, how many were recovered and, when ``unrecovered_rate`` is above 0, how many
were not (``unrecovered``).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np
import orjson
from pydantic import Field

from simworld.agent import AgentParams, View, same_move
from simworld.registry import register_agent
from simworld.types import Message, ToolCall

from . import nlu
from .oracle import VERB, WRITE_TOOL, RequestState, SupportOracle, describe_item, describe_method, net_payment, \
    order_total
from .text import join_list


class NoisyOracleParams(AgentParams):
    error_rate: float = Field(default=0.2, ge=0.0, le=1.0, description="Chance of a mistake per tool call and "
                                                                       "per proposed change.")
    unrecovered_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Chance per request of a mistake "
                                    "it does not recover from: a write without a yes, a wrong write, a wrong "
                                    "amount or status stated, a needless transfer, an unasked change.")


UNRECOVERED = ("unconfirmed_write", "wrong_write", "wrong_output", "needless_transfer", "collateral_change")
"""The kinds of unrecovered mistakes (see the module docstring), in the order they are drawn from."""
# Statuses an agent confuses with each status (the neighbours in an order's life).
_CONFUSED_STATUS = {"pending": ("processed",), "processed": ("pending", "delivered"), "delivered": ("processed",),
                    "cancelled": ("pending",), "pending (item modified)": ("pending", "processed"),
                    "return requested": ("delivered",), "exchange requested": ("delivered",)}


def _swap_digits(text: str) -> str | None:
    """'7693 Forest Street' -> '7639 Forest Street': the rightmost two adjacent different digits of
    the first number swapped; None when it has none."""
    m = re.search(r"\d+", text)
    if m is None:
        return None
    digits = m.group()
    for i in range(len(digits) - 2, -1, -1):
        if digits[i] != digits[i + 1]:
            return text[:m.start()] + digits[:i] + digits[i + 1] + digits[i] + digits[i + 2:] + text[m.end():]
    return None


def _slipped_amount(value: float) -> float:
    """An amount with two digits swapped (123.45 -> 123.54), or off by ten when no two differ."""
    text = f"{abs(value):.2f}"
    cents = text.replace(".", "")
    for i in range(len(cents) - 2, -1, -1):
        if cents[i] != cents[i + 1]:
            cents = cents[:i] + cents[i + 1] + cents[i] + cents[i + 2:]
            return round((1 if value >= 0 else -1) * int(cents) / 100, 2)
    return round(value + 10, 2)


def _drop_digit(value: str) -> str:
    """'#W0420819' -> '#W042081': the id no longer has the right length, so no lookup can match it."""
    for i in range(len(value) - 1, -1, -1):
        if value[i].isdigit():
            return value[:i] + value[i + 1:]
    return value + "x"


@register_agent("noisy_oracle")
class NoisySupportOracle(SupportOracle):
    """The oracle plus recoverable mistakes at `error_rate` and unrecovered ones at `unrecovered_rate` (see the
    module docstring)."""

    Params = NoisyOracleParams

    def __init__(self, params: NoisyOracleParams, role: str, rng: np.random.Generator) -> None:
        super().__init__(params, role, rng)
        self.error_rate = params.error_rate
        self.unrecovered_rate = params.unrecovered_rate
        self.intended: ToolCall | None = None
        self.mistakes: Counter[str] = Counter()
        self.recovered = 0
        self.tampered = False
        self.untampered: tuple[Any, ...] = ()
        """The request's items, new items, payment method and amount before a proposal was tampered with."""
        self.unrecovered = 0
        self.slip: str | None = None
        """The unrecovered mistake planned for the request `slip_for` (drawn once per request)."""
        self.slip_for: RequestState | None = None
        self.extra: ToolCall | None = None
        """A collateral change's write, made after the request's own."""
        self.extra_done = ""
        """What a report says about the collateral change it made."""
        self.main_result: tuple[str, str] | None = None

    def provenance(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mistakes": dict(sorted(self.mistakes.items())), "recovered": self.recovered}
        if self.unrecovered_rate > 0:
            out["unrecovered"] = self.unrecovered
        return out

    def _mistake_state(self) -> tuple[Any, ...]:
        return (Counter(self.mistakes), self.tampered, self.unrecovered, self.slip, self.slip_for, self.extra,
                self.extra_done, self.main_result)

    async def observe(self, view: View, taken: Message) -> None:
        """A mistake it would have made at a turn it did not play was not made: forget it."""
        before = self._mistake_state()
        reply = await self.act(view)
        if not (isinstance(reply, Message) and same_move(reply, taken)):
            (self.mistakes, self.tampered, self.unrecovered, self.slip, self.slip_for, self.extra, self.extra_done,
             self.main_result) = before
            self.intended = None
        self.adopt(reply, taken)

    # -- wrong tool calls
    def emit(self, call: ToolCall) -> ToolCall:
        slip = self.planned_slip()
        if slip is not None and call.name in WRITE_TOOL.values():
            proposal = self.req.proposal
            if slip == "wrong_write" and proposal is not None and call.name == proposal.name:
                options = self.wrong_arguments(call.name, call.arguments)
                if options:
                    self.commit_slip(slip)
                    return ToolCall(id=call.id, name=call.name, arguments=options[self.dice.below(len(options))])
            return call  # a write carrying an unrecovered mistake gets no recoverable one on top
        if self.intended is not None or not self.dice.chance(self.error_rate):
            return call
        wrong = self.corrupt(call)
        if wrong is None:
            return call
        kind, name, arguments = wrong
        self.intended = call
        self.mistakes[kind] += 1
        return ToolCall(id=call.id, name=name, arguments=arguments)

    def corrupt(self, call: ToolCall) -> tuple[str, str, dict[str, Any]] | None:
        """A wrong version of `call` that the tool rejects, as (kind, tool, arguments); None if none fits."""
        args = dict(call.arguments)
        name = call.name
        options: list[tuple[str, str, dict[str, Any]]] = []
        if name == "find_user_id_by_email":
            options.append(("typo_email", name, {"email": args["email"].replace("@example.", "@exmaple.")}))
        elif name == "find_user_id_by_name_zip":
            options.append(("bad_zip", name, {**args, "zip": args["zip"][:-1]}))
        elif name == "get_user_details":
            options.append(("typo_user_id", name, {"user_id": args["user_id"].rsplit("_", 1)[0]}))
        elif name == "get_product_details":
            order = self.orders.get(self.req.order_id or "")
            item = next((i for i in (order or {}).get("items", []) if i["product_id"] == args["product_id"]), None)
            if item is not None:
                options.append(("item_id_as_product_id", name, {"product_id": item["item_id"]}))
        elif name == "calculate":
            options.append(("bad_expression", name, {"expression": "$" + args["expression"].replace(" + ", " + $")}))
        elif name == "cancel_pending_order":
            options.append(("invalid_reason", name, {**args, "reason": args["reason"].replace("needed", "need")
                                                     .replace("by mistake", "mistakenly")}))
        elif name in ("modify_pending_order_address", "modify_user_address"):
            options.append(("missing_argument", name, {k: v for k, v in args.items() if k != "zip"}))
        elif name in ("modify_pending_order_payment",):
            options.append(("typo_payment_id", name, {**args, "payment_method_id": _drop_digit(args["payment_method_id"])}))
        if name in WRITE_TOOL.values() and "item_ids" in args:
            ids = list(args["item_ids"])
            ids[-1] = _drop_digit(ids[-1])
            options.append(("typo_item_id", name, {**args, "item_ids": ids}))
            wrong_tool = {"modify_pending_order_items": "return_delivered_order_items",
                          "exchange_delivered_order_items": "modify_pending_order_items",
                          "return_delivered_order_items": "modify_pending_order_items"}[name]
            if wrong_tool in self.tools:
                wrong_args = {k: v for k, v in args.items() if k != "new_item_ids"}
                if wrong_tool == "modify_pending_order_items":
                    wrong_args["new_item_ids"] = args.get("new_item_ids", args["item_ids"])
                options.append(("wrong_tool", wrong_tool, wrong_args))
        if "order_id" in args:
            options.append(("typo_order_id", name, {**args, "order_id": _drop_digit(args["order_id"])}))
            options.append(("wrong_argument_name", name, {("orderId" if k == "order_id" else k): v
                                                          for k, v in args.items()}))
        if not options:
            return None
        return options[self.dice.below(len(options))]

    def absorb_result(self, name: str, content: str, error: bool) -> Message | None:
        intended, self.intended = self.intended, None
        if intended is None:
            return self.absorb_collateral(name, content, error) or super().absorb_result(name, content, error)
        self.recovered += 1
        if error or not self.tools_write(name):
            # the mistake was rejected (or was a read of the wrong thing): make the intended call
            self.pending = intended
            return Message(role="assistant", content="", tool_calls=[intended])
        self.recovered -= 1  # a wrong write went through: not recoverable, carry on from its result
        return super().absorb_result(name, content, error)

    def tools_write(self, name: str) -> bool:
        return name in WRITE_TOOL.values()

    # -- wrong proposals
    def absorb_customer(self, text: str) -> None:
        proposing = self.req.proposal is not None and not self.req.confirmed
        if proposing and self.planned_slip() in ("wrong_output", "collateral_change") \
                and nlu.yes_no(text) is False:
            self.slip = None  # the customer turned that proposal down: proposed again as the oracle would
        if proposing and self.tampered and nlu.yes_no(text) is False:
            # What it got wrong is forgotten, whatever part of the change the correction restates: a
            # customer who restates only the new items would otherwise see the same items left out again.
            req = self.req
            req.items, req.new_items, req.payment_id, req.amount = self.untampered
        super().absorb_customer(text)
        if proposing and self.tampered:
            if self.req.proposal is None:
                self.recovered += 1  # the customer said no and restated it
                self.tampered = False
            elif self.req.confirmed:
                self.tampered = False  # accepted as it was: the wrong change goes through

    def collect(self, intent: str) -> dict[str, Any] | Message:
        args = super().collect(intent)
        if isinstance(args, Message):
            return args
        self.plan_slip(intent, args)
        if self.planned_slip() == "collateral_change" and self.extra is None:
            found = self.plan_collateral(intent, args)
            if isinstance(found, Message):
                return found
        if self.planned_slip() is not None:
            return args  # no recoverable mistake on top of an unrecovered one
        if not self.dice.chance(self.error_rate):
            return args
        return self.tamper(args)

    def tamper(self, args: dict[str, Any]) -> dict[str, Any]:
        """A proposal with one wrong detail the customer will notice (when there is one to get wrong)."""
        req = self.req
        choices = []
        methods = list(self.user["payment_methods"]) if self.user else []
        pid = args.get("payment_method_id")
        if pid is not None and len(methods) > 1:
            choices.append("payment")
        if len(args.get("item_ids", ())) > 1:
            choices.append("items")
        if not choices:
            return args
        kind = choices[self.dice.below(len(choices))]
        self.mistakes["proposal_" + kind] += 1
        self.tampered = True
        self.untampered = (req.items, req.new_items, req.payment_id, req.amount)
        out = dict(args)
        if kind == "payment":
            others = [m for m in methods if m != pid]
            req.payment_id = out["payment_method_id"] = others[self.dice.below(len(others))]
        else:
            out["item_ids"] = out["item_ids"][:-1]
            if "new_item_ids" in out:
                out["new_item_ids"] = out["new_item_ids"][:-1]
                req.new_items = (req.new_items or [])[:-1]
            req.items = (req.items or [])[:-1]
            # the wrong change is stated whole: its refund or price difference is that of the items it lists
            old = sum(i["price"] for i in req.items)
            value = sum(n["price"] for n in req.new_items or []) - old if "new_item_ids" in out else old
            req.amount = f"{round(value, 2):.2f}"
        return out

    # -- unrecovered mistakes
    def planned_slip(self) -> str | None:
        """The unrecovered mistake planned for the current request, if any."""
        return self.slip if self.slip_for is self.req else None

    def commit_slip(self, kind: str) -> None:
        self.mistakes[kind] += 1
        self.unrecovered += 1
        self.slip = None  # made: once per request

    def plan_slip(self, intent: str, args: dict[str, Any], exclude: tuple[str, ...] = ()) -> None:
        """Draw, once per request, whether it carries an unrecovered mistake and of which kind (among
        the kinds that fit it)."""
        if self.slip_for is self.req and not exclude:
            return
        self.slip_for, self.slip, self.extra = self.req, None, None
        if not exclude and not self.dice.chance(self.unrecovered_rate):
            return
        kinds = [k for k in UNRECOVERED if k not in exclude and self.slip_fits(k, intent, args)]
        if kinds:
            self.slip = kinds[self.dice.below(len(kinds))]

    def slip_fits(self, kind: str, intent: str, args: dict[str, Any]) -> bool:
        if kind == "needless_transfer":
            return "transfer_to_human_agents" in self.tools
        if intent == "order_status":
            return kind == "wrong_output" and self.misread_order() is not None
        if kind == "unconfirmed_write":
            return True
        if kind == "wrong_write":
            return bool(self.wrong_arguments(WRITE_TOOL[intent], args))
        if kind == "wrong_output":
            return intent in ("cancel", "modify_payment", "return") or abs(float(self.req.amount or 0)) >= 0.005
        if kind == "collateral_change":
            if intent == "modify_address":
                return "modify_user_address" in self.tools
            return intent == "modify_user_address" and "modify_pending_order_address" in self.tools \
                and {"get_user_details", "get_order_details"} <= self.tools
        return False

    def wrong_arguments(self, tool: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        """Wrong but valid arguments for the write `tool` (the tool accepts them; the state differs)."""
        req = self.req
        out: list[dict[str, Any]] = []
        if tool == "cancel_pending_order":
            other = "ordered by mistake" if args["reason"] == "no longer needed" else "no longer needed"
            return [{**args, "reason": other}]
        if "address1" in args:
            slipped = _swap_digits(args["address1"])
            return [{**args, "address1": slipped}] if slipped else []
        order = self.orders.get(str(args.get("order_id")), {})
        methods = self.user["payment_methods"] if self.user else {}
        pid = args.get("payment_method_id")
        if tool == "modify_pending_order_payment":
            paid = net_payment(order)
            total = order_total(order)
            return [{**args, "payment_method_id": m} for m, method in methods.items()
                    if m != pid and (paid is None or m != paid[0])
                    and (method.get("source") != "gift_card" or method.get("balance", 0) + 1e-9 >= total)]
        item_ids = list(args["item_ids"])
        if len(item_ids) > 1:  # an item left out
            out.append({k: (v[:-1] if k in ("item_ids", "new_item_ids") else v) for k, v in args.items()})
        if tool == "return_delivered_order_items":
            others = [i["item_id"] for i in order.get("items", []) if i["item_id"] not in item_ids]
            if others:  # another item of the order in place of the last one
                out.append({**args, "item_ids": item_ids[:-1] + [others[-1]]})
            original = order["payment_history"][0]["payment_method_id"] if order.get("payment_history") else None
            out += [{**args, "payment_method_id": m} for m, method in methods.items()
                    if m != pid and (m == original or method.get("source") == "gift_card")]
            return out
        # modify_pending_order_items / exchange_delivered_order_items: another option, another payer
        new_ids = list(args["new_item_ids"])
        old, new = (req.items or [])[-1:], (req.new_items or [])[-1:]
        if old and new:
            variants = self.products.get(old[0]["product_id"], {}).get("variants", {})
            choices = [v for v, variant in variants.items() if variant["available"]
                       and v not in (old[0]["item_id"], new[0]["item_id"])]
            if choices:
                out.append({**args, "new_item_ids": new_ids[:-1] + [choices[0]]})
        diff = float(req.amount or 0)
        if abs(diff) >= 0.005 or tool == "exchange_delivered_order_items":  # else no payment is recorded
            out += [{**args, "payment_method_id": m} for m, method in methods.items()
                    if m != pid and (method.get("source") != "gift_card" or diff <= 0
                                     or method.get("balance", 0) + 1e-9 >= diff)]
        return out

    def propose(self, intent: str, args: dict[str, Any]) -> Message:
        slip = self.planned_slip()
        req = self.req
        if slip == "unconfirmed_write":
            self.commit_slip(slip)
            req.confirmed = True
            return self.call(req.proposal.name, dict(req.proposal.arguments))  # type: ignore[union-attr]
        if slip == "needless_transfer":
            self.commit_slip(slip)
            return self.transfer(intent)
        if slip == "wrong_output":
            return self.text(self.say("confirm", {"action": self.describe_without_money(intent, args)}), {"confirm"})
        if slip == "collateral_change" and self.extra is not None:
            also = self.describe_change_of(self.extra)
            return self.text(self.say("confirm", {"action": f"{self.describe_change(intent, args)}, and also {also}"}),
                             {"confirm"})
        return super().propose(intent, args)

    def transfer(self, intent: str) -> Message:
        what = "update their default address" if intent == "modify_user_address" else \
            f"{VERB.get(intent, intent)} order {self.req.order_id}"
        return self.call("transfer_to_human_agents", {"summary": f"The customer ({self.user_id}) wants to {what}. "
                                                                 "Please take over."})

    def describe_without_money(self, intent: str, args: dict[str, Any]) -> str:
        """The change without the amounts it moves (the customer checks only the money a proposal states)."""
        req = self.req
        oid = args.get("order_id")
        methods = self.user["payment_methods"] if self.user else {}
        method = describe_method(methods.get(args.get("payment_method_id", ""), {"id": args.get("payment_method_id")}))
        if intent == "cancel":
            return f"cancel order {oid} (reason: {args['reason']}); the amount paid will be refunded to the original " \
                   "payment method"
        if intent == "modify_payment":
            return f"change the payment method of order {oid} to {method}"
        items = req.items or []
        if intent == "return":
            listing = join_list([describe_item(i) for i in items])
            return f"return {listing} from order {oid}, with the refund going to {method}"
        pairs = join_list([f"{describe_item(o)} to {describe_item(n, o['name'])}"
                           for o, n in zip(items, req.new_items or [])])
        verb = "exchange" if intent == "exchange" else "modify"
        return f"{verb}, in order {oid}, {pairs}, with {method} for any price difference"

    # collateral changes: one more address than the customer asked to change
    def plan_collateral(self, intent: str, args: dict[str, Any]) -> Message | None:
        """Find what the collateral change writes (reading the account's orders for a pending one);
        a Message while a lookup is needed. Without a target, another kind is drawn."""
        address = {k: args[k] for k in ("address1", "address2", "city", "state", "country", "zip")}
        if intent == "modify_address":
            self.extra = ToolCall(id="collateral", name="modify_user_address",
                                  arguments={"user_id": self.user_id, **address})
            return None
        if self.user is None:
            return self.call("get_user_details", {"user_id": self.user_id})
        for oid in self.user_orders():
            order = self.orders.get(oid)
            if order is None:
                return self.call("get_order_details", {"order_id": oid})
            if order["status"] == "pending":
                self.extra = ToolCall(id="collateral", name="modify_pending_order_address",
                                      arguments={"order_id": oid, **address})
                return None
        self.plan_slip(intent, args, exclude=("collateral_change",))
        return None

    def describe_change_of(self, call: ToolCall) -> str:
        address = nlu.format_address({k: v for k, v in call.arguments.items() if k not in ("order_id", "user_id")})
        if call.name == "modify_user_address":
            return f"make {address} the default address on your account"
        return f"change the shipping address of your pending order {call.arguments['order_id']} to {address}"

    def absorb_collateral(self, name: str, content: str, error: bool) -> Message | None:
        """After the request's own write, make the collateral one; after that, report both."""
        if self.main_result is not None and self.extra is not None and name == self.extra.name:
            self.pending, (main_name, main_content) = None, self.main_result
            self.main_result = None
            if not error:
                changed = orjson.loads(content)
                if name == "modify_user_address":
                    self.user = changed
                else:
                    self.orders[changed["order_id"]] = changed
                self.extra_done = f"I've also {self.describe_done_of(self.extra)}."
            return self.report(main_name, orjson.loads(main_content))
        proposal = self.req.proposal
        if self.planned_slip() == "collateral_change" and self.extra is not None and not error \
                and proposal is not None and self.req.confirmed and name == proposal.name:
            self.commit_slip("collateral_change")
            self.main_result = (name, content)
            return self.call(self.extra.name, dict(self.extra.arguments))
        return None

    def describe_done_of(self, call: ToolCall) -> str:
        if call.name == "modify_user_address":
            return "made it the default address on your account"
        return f"updated the shipping address of your pending order {call.arguments['order_id']}"

    def done(self, key: str, values: dict[str, str]) -> str:
        text = super().done(key, values)
        if self.extra_done:
            text, self.extra_done = f"{text} {self.extra_done}", ""
        return text

    # wrong outputs
    def reported_amount(self, intent: str, amount: float, order: dict[str, Any]) -> float:
        if self.planned_slip() != "wrong_output":
            return amount
        req = self.req
        options = [_slipped_amount(amount)]
        prices = [i["price"] for i in (req.items if intent == "return" else order["items"])]
        if intent in ("cancel", "modify_payment", "return") and len(prices) > 1:
            options.append(round(amount - prices[-1], 2))  # an item left out of the sum
        if intent == "return" and len(order["items"]) > len(prices):
            options.append(order_total(order))  # the whole order refunded
        if intent in ("modify_items", "exchange"):
            options.append(-amount)  # charged and refunded swapped
            options.append(round(sum(n["price"] for n in req.new_items or []), 2))  # the new price as the difference
        options = [o for o in options if abs(o - amount) >= 0.005 and abs(o) >= 0.005]
        if not options:
            return amount
        self.commit_slip("wrong_output")
        return options[self.dice.below(len(options))]

    def misread_order(self) -> dict[str, Any] | None:
        """The order a status question is about as the agent misreads it, wrong in every answer it
        gives (the status, always given, and each topic asked: a confused status, items of one product
        left out, a total without an item, a slipped tracking number); None when some answer asked
        for cannot be got wrong (the items of an order of one product)."""
        req = self.req
        order = self.orders.get(req.order_id or "")
        if order is None:
            return None
        topics = set(nlu.status_topics(req.text)) | {"status"}
        tracking = [t for f in order.get("fulfillments", []) for t in f.get("tracking_id", [])]
        names = list(dict.fromkeys(i["name"] for i in order["items"]))
        confused = _CONFUSED_STATUS.get(order["status"], ())
        if not confused or ("items" in topics and len(names) < 2) \
                or ("tracking" in topics and tracking and not all(_swap_digits(t) for t in tracking)):
            return None
        wrong = {**order, "status": confused[self.dice.below(len(confused))]}
        if "items" in topics:
            wrong["items"] = [i for i in order["items"] if i["name"] != names[-1]]
        if "total" in topics:
            total = order_total(order)
            if abs(order_total(wrong) - total) < 0.005:
                items = [dict(i) for i in wrong["items"]]
                items[-1]["price"] = round(items[-1]["price"] - total + _slipped_amount(total), 2) \
                    if len(items) == 1 else 0.0  # an item left out of the sum
                wrong["items"] = items
        if "tracking" in topics and tracking:
            wrong["fulfillments"] = [{**f, "tracking_id": [_swap_digits(t) for t in f.get("tracking_id", [])]}
                                     for f in order["fulfillments"]]
        return wrong

    def report_status(self) -> Message:
        self.plan_slip("order_status", {})
        slip = self.planned_slip()
        if slip == "needless_transfer":
            self.commit_slip(slip)
            return self.transfer("order_status")
        wrong = self.misread_order() if slip == "wrong_output" else None
        if wrong is not None:
            oid = self.req.order_id or ""
            order = self.orders[oid]
            self.commit_slip("wrong_output")
            self.orders[oid] = wrong
            try:
                return super().report_status()
            finally:
                self.orders[oid] = order
        return super().report_status()
