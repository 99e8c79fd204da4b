"""Deterministic, vectorized generation of the retail world's columnar data.

Everything is drawn from one seeded ``np.random.Generator`` with whole-array NumPy operations
(Python loops only over the small product catalog), so a world of 1,000,000 orders builds in
seconds. Strings are integer codes into vocabularies (``WorldData.vocab``); ids are numbers that the
tools format (``#W0001234``, ``sara_doe_496``, ``credit_card_4821379``). Money is int32 cents.

Tables (row order is part of the design: ids are the sorted keys, so a binary search on the id
column gives the row):

* ``users``: ``key`` (sorted; encodes first name, last name and a 3-digit number, i.e. the user id
  and e-mail), ``first``, ``last``, ``num``, ``address`` (row in ``addresses``; a changed address is
  an inline dict in the episode overlay).
* ``addresses``: ``house``, ``street``, ``suffix``, ``suite`` (0: none), ``city``, ``zip``.
* ``payment_methods``: grouped by user (CSR ``pm_start``): ``num`` (7-digit id), ``kind``
  (credit_card/paypal/gift_card), ``brand``, ``last_four``, ``balance`` (gift cards, cents),
  ``user``.
* ``products``: ``pid`` (10-digit), ``name``, ``option_names`` (fixed width, -1 padded).
* ``variants``: grouped by product (CSR ``var_start``): ``item_id`` (10-digit), ``product``,
  ``options`` (codes into ``option_values``), ``price`` (cents), ``available``.
* ``orders``: ``num`` (sorted 7-digit id), ``user``, ``status``, ``address``, ``items`` (variant
  rows, fixed width, -1 padded), ``item_prices``, payment history as fixed-width per-order columns
  ``pay_type`` / ``pay_amount`` / ``pay_method`` (append = fill the next free slot; kept per order
  so the state hash does not depend on the order in which an episode touched different orders),
  ``cancel_reason``, ``tracking``, and the return/exchange request: ``request_lines`` (bit mask of
  item lines), ``request_new_items`` (variant rows), ``request_method`` (payment method row),
  ``request_diff`` (cents).
"""

from __future__ import annotations

import itertools

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from simworld.world import Table, WorldData

from . import vocab

MAX_OPTIONS = 3
MAX_PAYMENTS = 4  # initial payment + modify payment (2) + an item-price difference, or a cancel refund
USER_NUM_RANGE = 900  # user numbers 100..999


class RetailParams(BaseModel):
    """Size and mix of a generated retail world. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    # 100,000 by default (0.06 s to build): a run of a few thousand episodes of one task type then
    # rarely draws a task twice; at 2,000 orders a quarter of 1,000 modify-payment tasks repeated.
    n_orders: int = Field(default=100_000, ge=1, le=9_000_000, description="Number of orders.")
    n_users: int | None = Field(default=None, ge=1, description="Number of users (default n_orders // 4 + 1).")
    n_product_types: int = Field(default=50, ge=1, le=5000, description="Number of product types.")
    variants_per_product: int = Field(default=20, ge=2, le=500, description="Variants (items) per product.")
    max_items_per_order: int = Field(default=5, ge=1, le=10, description="Most item lines in one order.")
    status_mix: tuple[float, float, float, float] = Field(
        default=(0.3, 0.15, 0.4, 0.15), description="Shares of pending, processed, delivered, cancelled orders.")
    unavailable_share: float = Field(default=0.2, ge=0.0, lt=1.0, description="Share of variants out of stock.")
    gift_card_share: float = Field(default=0.4, ge=0.0, le=1.0, description="Share of users with a gift card.")
    paypal_share: float = Field(default=0.4, ge=0.0, le=1.0, description="Share of users with PayPal.")

    @model_validator(mode="after")
    def _check(self) -> RetailParams:
        capacity = len(vocab.FIRST_NAMES) * len(vocab.LAST_NAMES) * USER_NUM_RANGE // 2
        if self.users > capacity:
            raise ValueError(f"n_users {self.users} exceeds the {capacity} distinct user ids the name vocabulary "
                             "allows")
        if self.n_product_types * self.variants_per_product < 2 * self.max_items_per_order:
            raise ValueError("the catalog (n_product_types x variants_per_product) must hold at least twice "
                             "max_items_per_order items")
        if min(self.status_mix) < 0 or sum(self.status_mix) <= 0:
            raise ValueError("status_mix must be four non-negative shares with a positive sum")
        return self

    @property
    def users(self) -> int:
        return self.n_users if self.n_users is not None else self.n_orders // 4 + 1


def _readonly(**arrays: np.ndarray) -> dict[str, np.ndarray]:
    for a in arrays.values():
        a.setflags(write=False)
    return arrays


def _unique_ids(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    """n distinct integers in [low, high), in random order."""
    return rng.choice(high - low, size=n, replace=False).astype(np.int64) + low


def _csr(groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by `groups` (stable) and the start offset of each group."""
    order = np.argsort(groups, kind="stable").astype(np.int32)
    start = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(np.bincount(groups, minlength=n_groups), out=start[1:])
    return order, start


def _vocab() -> dict[str, list[str]]:
    option_names = list(vocab.OPTIONS)
    option_values = [f"{name}={value}" for name in option_names for value in vocab.OPTIONS[name]]
    return {
        "first_name": vocab.FIRST_NAMES,
        "last_name": vocab.LAST_NAMES,
        "city": [c for c, _, _ in vocab.CITIES],
        "city_state": [s for _, s, _ in vocab.CITIES],
        "street": vocab.STREETS,
        "street_suffix": vocab.STREET_SUFFIXES,
        "card_brand": vocab.CARD_BRANDS,
        "payment_kind": vocab.PAYMENT_KINDS,
        "status": vocab.STATUSES,
        "cancel_reason": vocab.CANCEL_REASONS,
        "transaction_type": vocab.TRANSACTION_TYPES,
        "option_name": option_names,
        "option_value": option_values,
        "product_name": [],  # filled by _products
    }


def _users(params: RetailParams, rng: np.random.Generator) -> tuple[Table, Table, dict[str, np.ndarray]]:
    n = params.users
    n_first, n_last = len(vocab.FIRST_NAMES), len(vocab.LAST_NAMES)
    keys = np.sort(_unique_ids(rng, n, 0, n_first * n_last * USER_NUM_RANGE))
    first = (keys // (n_last * USER_NUM_RANGE)).astype(np.int16)
    last = ((keys // USER_NUM_RANGE) % n_last).astype(np.int16)
    num = (keys % USER_NUM_RANGE + 100).astype(np.int16)
    city = rng.integers(0, len(vocab.CITIES), n).astype(np.int16)
    zip_prefix = np.array([z for _, _, z in vocab.CITIES], dtype=np.int32)
    addresses = Table("addresses", {
        "house": rng.integers(1, 10000, n).astype(np.int32),
        "street": rng.integers(0, len(vocab.STREETS), n).astype(np.int16),
        "suffix": rng.integers(0, len(vocab.STREET_SUFFIXES), n).astype(np.int8),
        "suite": np.where(rng.random(n) < 0.3, rng.integers(100, 1000, n), 0).astype(np.int16),
        "city": city,
        "zip": (zip_prefix[city] * 100 + rng.integers(0, 100, n)).astype(np.int32),
    })
    users = Table("users", {
        "key": keys, "first": first, "last": last, "num": num,
        "address": np.arange(n, dtype=np.int32),
    })
    # name + zip -> users (not unique in general: the tool returns the first match, like a real lookup)
    name_zip = ((first.astype(np.int64) * n_last + last) * 100000 + addresses["zip"]).astype(np.int64)
    nz_rows = np.argsort(name_zip, kind="stable").astype(np.int32)
    return users, addresses, {"name_zip_keys": name_zip[nz_rows], "name_zip_rows": nz_rows}


def _payment_methods(params: RetailParams, rng: np.random.Generator, n_users: int) -> tuple[Table, dict[str, np.ndarray]]:
    has_card = rng.random(n_users) < 0.75
    has_card2 = has_card & (rng.random(n_users) < 0.2)
    has_paypal = rng.random(n_users) < params.paypal_share
    has_gift = rng.random(n_users) < params.gift_card_share
    has_card |= ~(has_paypal | has_gift)  # everyone can pay somehow
    user_ids = np.arange(n_users, dtype=np.int32)
    kinds = [(has_card, 0), (has_card2, 0), (has_paypal, 1), (has_gift, 2)]
    user = np.concatenate([user_ids[m] for m, _ in kinds])
    kind = np.concatenate([np.full(int(m.sum()), k, dtype=np.int8) for m, k in kinds])
    slot = np.concatenate([np.full(int(m.sum()), i, dtype=np.int8) for i, (m, _) in enumerate(kinds)])
    order = np.lexsort((slot, user))  # grouped by user; within a user: card, card, paypal, gift card
    user, kind, slot = user[order], kind[order], slot[order]
    n = len(user)
    last_four = rng.integers(0, 10000, n).astype(np.int16)
    # a user's second card gets other last four digits than the first (customers name cards by them)
    second = np.flatnonzero(slot == 1)
    last_four[second] = np.where(last_four[second] == last_four[second - 1], (last_four[second] + 1) % 10000,
                                 last_four[second])
    table = Table("payment_methods", {
        "num": _unique_ids(rng, n, 1_000_000, 10_000_000).astype(np.int32),
        "kind": kind,
        "brand": np.where(kind == 0, rng.integers(0, len(vocab.CARD_BRANDS), n), -1).astype(np.int8),
        "last_four": np.where(kind == 0, last_four, -1).astype(np.int16),
        "balance": np.where(kind == 2, rng.integers(0, 300, n) * 100 + rng.integers(0, 100, n), 0).astype(np.int32),
        "user": user,
    })
    start = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(user, minlength=n_users), out=start[1:])
    sorted_rows = np.argsort(table["num"]).astype(np.int32)
    return table, {"pm_start": start, "pm_sorted_nums": table["num"][sorted_rows].astype(np.int64),
                   "pm_sorted_rows": sorted_rows}


def _products(params: RetailParams, rng: np.random.Generator, voc: dict[str, list[str]]
              ) -> tuple[Table, Table, dict[str, np.ndarray]]:
    option_names = voc["option_name"]
    value_code = {v: i for i, v in enumerate(voc["option_value"])}
    names, option_cols, var_product, var_options, var_price = [], [], [], [], []
    # each product's base price is log-uniform in its own band (more cheap models than dear ones)
    where_in_band = rng.random(params.n_product_types)
    for p in range(params.n_product_types):
        base_name, opts, (low, high), values = vocab.PRODUCTS[p % len(vocab.PRODUCTS)]
        series = p // len(vocab.PRODUCTS)
        names.append(base_name if series == 0 else f"{base_name} Series {series + 1}")
        option_cols.append([option_names.index(o) for o in opts] + [-1] * (MAX_OPTIONS - len(opts)))
        base_price = 100 * low * (high / low) ** where_in_band[p]
        combos = list(itertools.product(*[values.get(o, vocab.OPTIONS[o]) for o in opts]))
        pick = rng.choice(len(combos), size=min(params.variants_per_product, len(combos)), replace=False)
        for c in np.sort(pick):
            var_product.append(p)
            var_options.append([value_code[f"{o}={v}"] for o, v in zip(opts, combos[c])]
                               + [-1] * (MAX_OPTIONS - len(opts)))
        k = len(pick)
        # variants cost within +-25% of the product's base price, rounded to .99 or .49 like shop prices
        dollars = np.maximum(1, np.round(base_price / 100 * rng.uniform(0.75, 1.25, k))).astype(np.int64)
        var_price.append(dollars * 100 - np.where(rng.random(k) < 0.5, 1, 51))
    voc["product_name"] = names
    n_var = len(var_product)
    var_product_arr = np.array(var_product, dtype=np.int32)
    ids = _unique_ids(rng, params.n_product_types + n_var, 1_000_000_000, 10_000_000_000)
    products = Table("products", {
        "pid": ids[:params.n_product_types],
        "name": np.arange(params.n_product_types, dtype=np.int16),
        "option_names": np.array(option_cols, dtype=np.int16).reshape(-1, MAX_OPTIONS),
    })
    variants = Table("variants", {
        "item_id": ids[params.n_product_types:],
        "product": var_product_arr,
        "options": np.array(var_options, dtype=np.int16).reshape(-1, MAX_OPTIONS),
        "price": np.concatenate(var_price).astype(np.int32),
        "available": (rng.random(n_var) >= params.unavailable_share).astype(np.int8),
    })
    var_start = np.zeros(params.n_product_types + 1, dtype=np.int64)
    np.cumsum(np.bincount(var_product_arr, minlength=params.n_product_types), out=var_start[1:])
    p_sorted = np.argsort(products["pid"]).astype(np.int32)
    v_sorted = np.argsort(variants["item_id"]).astype(np.int32)
    by_name = sorted(range(params.n_product_types), key=lambda i: names[i])
    return products, variants, {
        "var_start": var_start,
        "product_sorted_ids": products["pid"][p_sorted], "product_sorted_rows": p_sorted,
        "variant_sorted_ids": variants["item_id"][v_sorted], "variant_sorted_rows": v_sorted,
        "products_by_name": np.array(by_name, dtype=np.int32),
    }


def _distinct_lines(rng: np.random.Generator, items: np.ndarray, n_items: np.ndarray, n_var: int) -> None:
    """Redraw duplicate variants within an order (in place) so name + options identify a line."""
    width = items.shape[1]
    for _ in range(100):
        dup = np.zeros(items.shape, dtype=bool)
        for j in range(1, width):
            dup[:, j] = (items[:, j:j + 1] == items[:, :j]).any(axis=1) & (j < n_items)
        if not dup.any():
            return
        items[dup] = rng.integers(0, n_var, int(dup.sum()))
    raise RuntimeError("could not draw distinct order lines; raise variants_per_product or n_product_types")


def _orders(params: RetailParams, rng: np.random.Generator, n_users: int, variants: Table,
            pm: Table, pm_start: np.ndarray) -> tuple[Table, dict[str, np.ndarray]]:
    n = params.n_orders
    width = params.max_items_per_order
    n_var = variants.n
    if n_var < width:
        raise ValueError(f"only {n_var} variants in the catalog; max_items_per_order is {width}")
    nums = np.sort(_unique_ids(rng, n, 0, 10_000_000)).astype(np.int32)
    # every user gets at least one order when there are enough orders; the rest are spread at random
    user = np.concatenate([rng.permutation(n_users)[:n], rng.integers(0, n_users, max(0, n - n_users))])
    user = rng.permutation(user).astype(np.int32)
    shares = np.array(params.status_mix, dtype=np.float64)
    status = rng.choice(4, size=n, p=shares / shares.sum()).astype(np.int8)
    line_weights = np.array([0.35, 0.3, 0.2, 0.1, 0.05] + [0.02] * max(0, width - 5))[:width]
    n_items = rng.choice(width, size=n, p=line_weights / line_weights.sum()).astype(np.int8) + 1
    items = rng.integers(0, n_var, (n, width)).astype(np.int32)
    _distinct_lines(rng, items, n_items, n_var)
    valid = np.arange(width)[None, :] < n_items[:, None]
    items[~valid] = -1
    item_prices = np.where(valid, variants["price"][np.maximum(items, 0)], 0).astype(np.int32)
    total = item_prices.sum(axis=1, dtype=np.int64)

    count = pm_start[user + 1] - pm_start[user]
    method = (pm_start[user] + (rng.random(n) * count).astype(np.int64)).astype(np.int32)
    pay_type = np.full((n, MAX_PAYMENTS), -1, dtype=np.int8)
    pay_amount = np.zeros((n, MAX_PAYMENTS), dtype=np.int32)
    pay_method = np.full((n, MAX_PAYMENTS), -1, dtype=np.int32)
    pay_type[:, 0], pay_amount[:, 0], pay_method[:, 0] = 0, total, method
    cancelled = status == 3
    pay_type[cancelled, 1], pay_amount[cancelled, 1], pay_method[cancelled, 1] = 1, total[cancelled], method[cancelled]
    shipped = (status == 1) | (status == 2)
    orders = Table("orders", {
        "num": nums,
        "user": user,
        "status": status,
        "address": user.copy(),  # shipped to the user's address (addresses row == user row)
        "items": items,
        "item_prices": item_prices,
        "pay_type": pay_type,
        "pay_amount": pay_amount,
        "pay_method": pay_method,
        "cancel_reason": np.where(cancelled, rng.integers(1, 3, n), 0).astype(np.int8),
        "tracking": np.where(shipped, rng.integers(100_000_000_000, 1_000_000_000_000, n), 0).astype(np.int64),
        "request_lines": np.zeros(n, dtype=np.int16),
        "request_new_items": np.full((n, width), -1, dtype=np.int32),
        "request_method": np.full(n, -1, dtype=np.int32),
        "request_diff": np.zeros(n, dtype=np.int32),
    })
    rows, start = _csr(user, n_users)
    return orders, {"user_orders_rows": rows, "user_orders_start": start}


def generate(params: RetailParams, rng: np.random.Generator) -> WorldData:
    """Build the whole retail world for `params` from `rng` (deterministic)."""
    voc = _vocab()
    users, addresses, user_idx = _users(params, rng)
    pm, pm_idx = _payment_methods(params, rng, users.n)
    products, variants, product_idx = _products(params, rng, voc)
    orders, order_idx = _orders(params, rng, users.n, variants, pm, pm_idx["pm_start"])
    indexes = _readonly(**user_idx, **pm_idx, **product_idx, **order_idx)
    tables = {t.name: t for t in (users, addresses, pm, products, variants, orders)}
    return WorldData(tables, vocab=voc, indexes=indexes, meta={"params": params.model_dump(mode="json")})
