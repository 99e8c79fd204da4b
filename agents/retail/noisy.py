"""``noisy_oracle``: the support oracle with recoverable mistakes, for error-recovery training data.

At rate ``error_rate`` it makes one of the mistakes real agents make, then recovers:

* a tool call with a typo'd id (a digit dropped), a wrong argument name, an invalid argument value,
  a product id confused with an item id, a malformed calculation, or the wrong write tool for the
  order's status. Each is built so that the tool rejects it (an error result, state untouched);
  the agent then makes the intended call;
* a proposed change with a wrong detail (another payment method, an item left out). The customer
  says no and restates it; the agent re-reads the correction and proposes again.

What it did is recorded in the trajectory's provenance (``provenance.models[role]``): the mistakes
by kind and how many were recovered.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from pydantic import Field

from simworld.agent import AgentParams, View, same_move
from simworld.registry import register_agent
from simworld.types import Message, ToolCall

from .oracle import WRITE_TOOL, SupportOracle


class NoisyOracleParams(AgentParams):
    error_rate: float = Field(default=0.2, ge=0.0, le=1.0, description="Chance of a mistake per tool call and "
                                                                       "per proposed change.")


def _drop_digit(value: str) -> str:
    """'#W0420819' -> '#W042081': the id no longer has the right length, so no lookup can match it."""
    for i in range(len(value) - 1, -1, -1):
        if value[i].isdigit():
            return value[:i] + value[i + 1:]
    return value + "x"


@register_agent("noisy_oracle")
class NoisySupportOracle(SupportOracle):
    """The oracle plus recoverable mistakes at `error_rate` (see the module docstring)."""

    Params = NoisyOracleParams

    def __init__(self, params: NoisyOracleParams, role: str, rng: np.random.Generator) -> None:
        super().__init__(params, role, rng)
        self.error_rate = params.error_rate
        self.intended: ToolCall | None = None
        self.mistakes: Counter[str] = Counter()
        self.recovered = 0
        self.tampered = False

    def provenance(self) -> dict[str, Any]:
        return {"mistakes": dict(sorted(self.mistakes.items())), "recovered": self.recovered}

    async def observe(self, view: View, taken: Message) -> None:
        """A mistake it would have made at a turn it did not play was not made: forget it."""
        mistakes, tampered = Counter(self.mistakes), self.tampered
        reply = await self.act(view)
        if not (isinstance(reply, Message) and same_move(reply, taken)):
            self.mistakes, self.tampered, self.intended = mistakes, tampered, None
        self.adopt(reply, taken)

    # -- wrong tool calls
    def emit(self, call: ToolCall) -> ToolCall:
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
            return super().absorb_result(name, content, error)
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
        super().absorb_customer(text)
        if proposing and self.tampered:
            if self.req.proposal is None:
                self.recovered += 1  # the customer said no and restated it
                self.tampered = False
            elif self.req.confirmed:
                self.tampered = False  # accepted as it was: the wrong change goes through

    def collect(self, intent: str) -> dict[str, Any] | Message:
        args = super().collect(intent)
        if isinstance(args, Message) or not self.dice.chance(self.error_rate):
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
