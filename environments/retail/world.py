"""The retail world: `RetailWorld`, id parsing/formatting and the JSON views tools return.

Ids are numbers in the columns and strings at the tool boundary:

* user ``sara_doe_496`` <-> ``users.key`` (first name, last name, number); e-mail
  ``sara.doe496@example.com`` encodes the same key;
* order ``#W0001234`` <-> ``orders.num``; product / item: 10 digits <-> ``products.pid`` /
  ``variants.item_id``; payment method ``credit_card_4821379`` <-> ``payment_methods.num``.

Every lookup is a binary search (Numba kernel) on a sorted key column built once in ``build``.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simworld.registry import register_world
from simworld.types import FieldDiff, Message, Outcome
from simworld.world import State, World, WorldData

from . import kernels, vocab
from .data import USER_NUM_RANGE, RetailParams, generate
from .policy import ASSISTANT_POLICY, CUSTOMER_PROMPT, policy_breaches

STATUS = {name: i for i, name in enumerate(["pending", "processed", "delivered", "cancelled",
                                             "pending (item modified)", "return requested",
                                             "exchange requested"])}
PENDING, PROCESSED, DELIVERED, CANCELLED, ITEMS_MODIFIED, RETURN_REQUESTED, EXCHANGE_REQUESTED = range(7)
CREDIT_CARD, PAYPAL, GIFT_CARD = 0, 1, 2
PAYMENT, REFUND = 0, 1

_USER_ID = re.compile(r"^([a-z]+)_([a-z]+)_(\d{3})$")
_EMAIL = re.compile(r"^([a-z]+)\.([a-z]+)(\d{3})@example\.com$")
_ORDER_ID = re.compile(r"^#?W(\d{7})$")
_PM_ID = re.compile(r"^(credit_card|paypal|gift_card)_(\d{7})$")
_TEN_DIGITS = re.compile(r"^\d{10}$")


def dollars(cents: int) -> float:
    """Cents as a dollar amount with two decimals (JSON number)."""
    return round(int(cents) / 100, 2)


def money(cents: int) -> str:
    """Cents as the string an agent must state, e.g. '123.45'."""
    return f"{int(cents) / 100:.2f}"


def owed(cents: int) -> str:
    """Money the customer is charged (`cents` > 0) or refunded (< 0), as a required output that
    must be stated with its direction: 'charge 12.50', 'refund 12.50'."""
    return f"{'charge' if cents > 0 else 'refund'} {money(abs(int(cents)))}"


_DERIVED: weakref.WeakKeyDictionary[WorldData, dict[str, Any]] = weakref.WeakKeyDictionary()


# -- how required outputs are checked (RetailWorld.output_stated)

_STATUS_WORDS = {s: s for s in vocab.STATUSES} | {"canceled": "cancelled"}
_STATUS = re.compile(r"(?<!\w)(" + "|".join(re.escape(s) for s in sorted(_STATUS_WORDS, key=len, reverse=True))
                     + r")(?!\w)", re.IGNORECASE)
_MONEY_OWED = re.compile(r"(?P<way>refund|charge) (?P<amount>\d+\.\d\d)")


def _statuses_said(sentence: str) -> set[str]:
    """The statuses a sentence gives, leaving out those a 'not', 'no' or 'never' just before negates."""
    return {_STATUS_WORDS[m.group(1).lower()] for m in _STATUS.finditer(sentence)
            if not vocab.negated(sentence, m.start())}


@register_world("retail")
class RetailWorld(World):
    """An online store with users, payment methods, products with variants, and orders.

    Semantics follow the tau-bench retail domain; the store policy is enforced by the tools and is
    the assistant's default system prompt.
    """

    Params = RetailParams
    version = 2  # 2: cancellation and payment-change briefs state the money

    @classmethod
    def build(cls, params: RetailParams, rng: np.random.Generator) -> WorldData:
        return generate(params, rng)

    def __init__(self, data: WorldData, params: RetailParams, seed: int) -> None:
        super().__init__(data, params, seed)
        derived = _DERIVED.get(data)
        if derived is None:  # built once per WorldData, not once per episode
            v = data.vocab
            derived = _DERIVED[data] = {
                "first_code": {name: i for i, name in enumerate(v["first_name"])},
                "last_code": {name: i for i, name in enumerate(v["last_name"])},
                "option_name_of_value": [s.split("=", 1)[0] for s in v["option_value"]],
                "option_text_of_value": [s.split("=", 1)[1] for s in v["option_value"]],
                "options": {},  # variant -> options dict, filled lazily (the catalog never changes)
                "product_json": {},  # product -> get_product_details result, filled lazily
                "items": {},  # variant -> (name, product id, item id, options), filled lazily
            }
        self.first_code = derived["first_code"]
        self.last_code = derived["last_code"]
        self.n_last = len(self.last_code)
        self.option_name_of_value = derived["option_name_of_value"]
        self.option_text_of_value = derived["option_text_of_value"]
        self._options_cache: dict[int, dict[str, str]] = derived["options"]
        self._product_cache: dict[int, dict[str, Any]] = derived["product_json"]
        self._item_cache: dict[int, tuple[str, str, str, dict[str, str]]] = derived["items"]
        self.users = data.tables["users"]
        self.addresses = data.tables["addresses"]
        self.pm = data.tables["payment_methods"]
        self.products = data.tables["products"]
        self.variants = data.tables["variants"]
        self.orders = data.tables["orders"]
        self.ix = data.indexes

    # -- prompts and labels
    def default_system_prompt(self, kind: str, tools: tuple[str, ...] = ()) -> str:
        return ASSISTANT_POLICY if kind == "assistant" else CUSTOMER_PROMPT

    def policy_checks(self, events: Sequence[Message], kinds: Mapping[str, str]) -> list[dict[str, Any]]:
        """Calls of the support side that the store policy forbids although a tool may carry them out
        (the ``policy_violations`` scorer calls this hook), one ``{"event", "tool", "rule", "why"}`` per
        rule a call breaks:

        * ``authentication`` (writes, and reads of an account or an order: "only then look at or
          change their account or orders"): the call came before a ``find_user_id_by_email`` /
          ``find_user_id_by_name_zip`` result identified the customer from details the customer gave,
          or it names an order, account or payment method of another user;
        * ``confirmation`` (writes): the customer's last words before the write are not an explicit yes
          (:func:`~.policy.is_explicit_yes`) to the support side's last description, or that
          description does not state the change made (action, order, items, payment method, new
          address), or the same change already used that yes.

        `events` is the episode's log; `kinds` maps each role to ``user`` or ``assistant``.
        """
        return policy_breaches(self, events, kinds)

    @classmethod
    def output_stated(cls, required: str, said: str) -> bool:
        """A status must be the one status a sentence gives (not 'processed and will be delivered'),
        and money owed one way (``refund 12.50`` / ``charge 12.50``) stated with its direction."""
        if required in _STATUS_WORDS:
            return any(_statuses_said(s) == {required} for s in vocab.sentences(said))
        money_owed = _MONEY_OWED.fullmatch(required)
        if money_owed:  # read as the customer simulator reads a proposal (vocab.money_claims)
            return vocab.money_stated(money_owed["way"], float(money_owed["amount"]), said)
        return super().output_stated(required, said)

    def row_label(self, table: str, row: int) -> str:
        if table == "orders" and row < self.orders.n:
            return self.order_id(row)
        if table == "users" and row < self.users.n:
            return self.user_id(row)
        if table == "payment_methods" and row < self.pm.n:
            return self.payment_method_id(row)
        return str(row)

    def finalize_outcome(self, episode: Any, outcome: Outcome) -> Outcome:
        """Show diff values as the tools do (status names, ids, dollars) rather than codes."""
        if outcome.diff:
            outcome.diff = [self._readable(d) for d in outcome.diff]
        return outcome

    def _readable(self, d: FieldDiff) -> FieldDiff:
        decode = self._decoders().get((d.table, d.field))
        if decode is None:
            return d
        return d.model_copy(update={"expected": decode(d.expected), "actual": decode(d.actual)})

    def _decoders(self) -> dict[tuple[str, str], Any]:
        status = lambda v: _safe(lambda: self.data.vocab["status"][v], v)  # noqa: E731
        reason = lambda v: _safe(lambda: self.data.vocab["cancel_reason"][v], v)  # noqa: E731
        address = lambda v: v if isinstance(v, dict) else _safe(lambda: self.address_row(v), v)  # noqa: E731
        variants = lambda v: _safe(lambda: [self.item_id(x) if x >= 0 else None for x in v], v)  # noqa: E731
        methods = lambda v: _safe(lambda: [self.payment_method_id(x) if x >= 0 else None for x in v], v)  # noqa: E731
        method = lambda v: _safe(lambda: self.payment_method_id(v) if v >= 0 else None, v)  # noqa: E731
        cents = lambda v: _safe(lambda: [dollars(x) for x in v] if isinstance(v, list) else dollars(v), v)  # noqa: E731
        return {("orders", "status"): status, ("orders", "cancel_reason"): reason,
                ("orders", "address"): address, ("users", "address"): address,
                ("orders", "items"): variants, ("orders", "request_new_items"): variants,
                ("orders", "pay_method"): methods, ("orders", "request_method"): method,
                ("orders", "item_prices"): cents, ("orders", "pay_amount"): cents,
                ("orders", "request_diff"): cents, ("payment_methods", "balance"): cents}

    # -- ids: format
    def user_id(self, row: int) -> str:
        v = self.data.vocab
        u = self.users
        return f"{v['first_name'][u['first'][row]]}_{v['last_name'][u['last'][row]]}_{u['num'][row]}"

    def email(self, row: int) -> str:
        v = self.data.vocab
        u = self.users
        return f"{v['first_name'][u['first'][row]]}.{v['last_name'][u['last'][row]]}{u['num'][row]}@example.com"

    def order_id(self, row: int) -> str:
        return f"#W{int(self.orders['num'][row]):07d}"

    def item_id(self, variant: int) -> str:
        return str(int(self.variants["item_id"][variant]))

    def product_id(self, product: int) -> str:
        return str(int(self.products["pid"][product]))

    def payment_method_id(self, row: int) -> str:
        return f"{self.data.vocab['payment_kind'][int(self.pm['kind'][row])]}_{int(self.pm['num'][row])}"

    # -- ids: parse (each returns a row or -1)
    def _user_key(self, first: str, last: str, num: str) -> int:
        f, l = self.first_code.get(first), self.last_code.get(last)
        n = int(num) - 100
        if f is None or l is None or not 0 <= n < USER_NUM_RANGE:
            return -1
        return (f * self.n_last + l) * USER_NUM_RANGE + n

    def user_row(self, user_id: str) -> int:
        m = _USER_ID.match(user_id.strip().lower())
        key = self._user_key(*m.groups()) if m else -1
        return int(kernels.find_sorted(self.users["key"], key)) if key >= 0 else -1

    def user_row_by_email(self, email: str) -> int:
        m = _EMAIL.match(email.strip().lower())
        key = self._user_key(*m.groups()) if m else -1
        return int(kernels.find_sorted(self.users["key"], key)) if key >= 0 else -1

    def user_row_by_name_zip(self, first_name: str, last_name: str, zip_code: str) -> int:
        f = self.first_code.get(first_name.strip().lower())
        l = self.last_code.get(last_name.strip().lower())
        z = zip_code.strip()
        if f is None or l is None or not (len(z) == 5 and z.isdigit()):
            return -1
        key = (f * self.n_last + l) * 100000 + int(z)
        lo, hi = kernels.equal_range(self.ix["name_zip_keys"], key)
        return int(self.ix["name_zip_rows"][lo]) if hi > lo else -1

    def users_with_name_zip(self, row: int) -> int:
        """How many users share this user's name and zip (1 when they identify the user)."""
        key = (int(self.users["first"][row]) * self.n_last + int(self.users["last"][row])) * 100000 \
            + int(self.addresses["zip"][row])
        lo, hi = kernels.equal_range(self.ix["name_zip_keys"], key)
        return int(hi - lo)

    def order_row(self, order_id: str) -> int:
        m = _ORDER_ID.match(order_id.strip().upper())
        return int(kernels.find_sorted(self.orders["num"], int(m.group(1)))) if m else -1

    def product_row(self, product_id: str) -> int:
        s = product_id.strip()
        if not _TEN_DIGITS.match(s):
            return -1
        i = kernels.find_sorted(self.ix["product_sorted_ids"], int(s))
        return int(self.ix["product_sorted_rows"][i]) if i >= 0 else -1

    def variant_rows(self, item_ids: list[str]) -> np.ndarray:
        """Variant row per item id (-1 for unknown or malformed ids); one kernel call."""
        keys = np.array([int(s) if _TEN_DIGITS.match(s.strip()) else -1 for s in item_ids], dtype=np.int64)
        return kernels.find_many(self.ix["variant_sorted_ids"], self.ix["variant_sorted_rows"], keys)

    def payment_row(self, payment_method_id: str) -> int:
        m = _PM_ID.match(payment_method_id.strip().lower())
        if not m:
            return -1
        i = kernels.find_sorted(self.ix["pm_sorted_nums"], int(m.group(2)))
        if i < 0:
            return -1
        row = int(self.ix["pm_sorted_rows"][i])
        return row if self.data.vocab["payment_kind"][self.pm["kind"][row]] == m.group(1) else -1

    # -- rows of a user
    def user_orders(self, user: int) -> np.ndarray:
        s = self.ix["user_orders_start"]
        return self.ix["user_orders_rows"][s[user]:s[user + 1]]

    def user_payment_rows(self, user: int) -> range:
        s = self.ix["pm_start"]
        return range(int(s[user]), int(s[user + 1]))

    def product_variants(self, product: int) -> range:
        s = self.ix["var_start"]
        return range(int(s[product]), int(s[product + 1]))

    # -- JSON views
    def address_row(self, row: int) -> dict[str, str]:
        a = self.addresses
        v = self.data.vocab
        city = int(a["city"][row])
        suite = int(a["suite"][row])
        return {"address1": f"{int(a['house'][row])} {v['street'][a['street'][row]]} "
                            f"{v['street_suffix'][a['suffix'][row]]}",
                "address2": f"Suite {suite}" if suite else "",
                "city": v["city"][city], "country": "USA", "state": v["city_state"][city],
                "zip": f"{int(a['zip'][row]):05d}"}

    def address_of(self, state: State, table: str, row: int) -> dict[str, str]:
        """A user's or order's address; a changed one is an inline dict in the overlay."""
        value = state.get(table, "address", row)
        return dict(value) if isinstance(value, dict) else self.address_row(int(value))

    def payment_method_json(self, state: State, row: int) -> dict[str, Any]:
        kind = int(self.pm["kind"][row])
        out: dict[str, Any] = {"source": self.data.vocab["payment_kind"][kind]}
        if kind == CREDIT_CARD:
            out["brand"] = self.data.vocab["card_brand"][self.pm["brand"][row]]
            out["last_four"] = f"{int(self.pm['last_four'][row]):04d}"
        elif kind == GIFT_CARD:
            out["balance"] = dollars(state.get("payment_methods", "balance", row))
        out["id"] = self.payment_method_id(row)
        return out

    def payment_description(self, row: int) -> str:
        kind = int(self.pm["kind"][row])
        if kind == PAYPAL:
            return "PayPal"
        if kind == GIFT_CARD:
            return "gift card"
        brand = self.data.vocab["card_brand"][self.pm["brand"][row]]
        return f"{brand.capitalize() if brand != 'amex' else 'Amex'} credit card ending in " \
               f"{int(self.pm['last_four'][row]):04d}"

    def user_json(self, state: State, row: int) -> dict[str, Any]:
        v = self.data.vocab
        return {
            "user_id": self.user_id(row),
            "name": {"first_name": v["first_name"][self.users["first"][row]].capitalize(),
                     "last_name": v["last_name"][self.users["last"][row]].capitalize()},
            "address": self.address_of(state, "users", row),
            "email": self.email(row),
            "payment_methods": {self.payment_method_id(p): self.payment_method_json(state, p)
                                for p in self.user_payment_rows(row)},
            "orders": [self.order_id(o) for o in self.user_orders(row)],
        }

    def options_of(self, variant: int) -> dict[str, str]:
        out = self._options_cache.get(variant)
        if out is None:
            out = self._options_cache[variant] = {
                self.option_name_of_value[c]: self.option_text_of_value[c]
                for c in self.variants["options"][variant].tolist() if c >= 0}
        return dict(out)

    def product_name(self, product: int) -> str:
        return self.data.vocab["product_name"][self.products["name"][product]]

    def item_json(self, variant: int, price_cents: int) -> dict[str, Any]:
        static = self._item_cache.get(variant)
        if static is None:  # name, ids and options never change: built once per variant and world
            product = int(self.variants["product"][variant])
            static = self._item_cache[variant] = (self.product_name(product), self.product_id(product),
                                                  self.item_id(variant), self.options_of(variant))
        name, product_id, item_id, options = static
        return {"name": name, "product_id": product_id, "item_id": item_id, "price": dollars(price_cents),
                "options": dict(options)}

    def order_items(self, state: State, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(variant rows, line prices) of the order's filled lines."""
        items = state.get("orders", "items", row)
        prices = state.get("orders", "item_prices", row)
        keep = items >= 0
        return items[keep], prices[keep]

    def order_json(self, state: State, row: int) -> dict[str, Any]:
        g = state.get
        vocab = self.data.vocab
        all_items = g("orders", "items", row).tolist()
        all_prices = g("orders", "item_prices", row).tolist()
        lines = [(v, p) for v, p in zip(all_items, all_prices) if v >= 0]
        status = int(g("orders", "status", row))
        out: dict[str, Any] = {
            "order_id": self.order_id(row),
            "user_id": self.user_id(int(g("orders", "user", row))),
            "address": self.address_of(state, "orders", row),
            "items": [self.item_json(v, p) for v, p in lines],
            "fulfillments": [],
            "status": vocab["status"][status],
        }
        tracking = int(g("orders", "tracking", row))
        if tracking:
            out["fulfillments"] = [{"tracking_id": [str(tracking)], "item_ids": [i["item_id"] for i in out["items"]]}]
        types = g("orders", "pay_type", row).tolist()
        amounts = g("orders", "pay_amount", row).tolist()
        methods = g("orders", "pay_method", row).tolist()
        out["payment_history"] = [
            {"transaction_type": vocab["transaction_type"][t], "amount": dollars(a),
             "payment_method_id": self.payment_method_id(m)}
            for t, a, m in zip(types, amounts, methods) if t >= 0]
        if status == CANCELLED:
            out["cancel_reason"] = vocab["cancel_reason"][int(g("orders", "cancel_reason", row))]
        if status in (RETURN_REQUESTED, EXCHANGE_REQUESTED):
            mask = int(g("orders", "request_lines", row))
            chosen = sorted(self.item_id(v) for j, v in enumerate(all_items) if mask >> j & 1)
            method = self.payment_method_id(int(g("orders", "request_method", row)))
            if status == RETURN_REQUESTED:
                out["return_items"] = chosen
                out["return_payment_method_id"] = method
            else:
                new = g("orders", "request_new_items", row).tolist()
                out["exchange_items"] = chosen
                out["exchange_new_items"] = sorted(self.item_id(v) for j, v in enumerate(new) if mask >> j & 1)
                out["exchange_payment_method_id"] = method
                out["exchange_price_difference"] = dollars(g("orders", "request_diff", row))
        return out

    def product_json(self, product: int) -> dict[str, Any]:
        """get_product_details of a product (catalog data is read-only, so it is built once per world)."""
        cached = self._product_cache.get(product)
        if cached is not None:
            return cached
        variants = {}
        for v in self.product_variants(product):
            variants[self.item_id(v)] = {"item_id": self.item_id(v), "options": self.options_of(v),
                                         "available": bool(self.variants["available"][v]),
                                         "price": dollars(self.variants["price"][v])}
        out = {"name": self.product_name(product), "product_id": self.product_id(product), "variants": variants}
        self._product_cache[product] = out
        return out

    def order_total(self, state: State, row: int) -> int:
        return int(state.get("orders", "item_prices", row).sum())


def _safe(fn: Any, fallback: Any) -> Any:
    try:
        return fn()
    except (TypeError, IndexError, KeyError, ValueError):
        return fallback
