"""The retail world: generation, every tool's semantics and policy, state hashing, tool graph, 1M orders."""

from __future__ import annotations

import time

import networkx as nx
import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from simworld.registry import TASKS, get_task, get_world
from simworld.types import Outcome, ToolCall

RetailWorld = get_world("retail")
from simworld.environments.retail import kernels  # noqa: E402
from simworld.environments.retail.data import RetailParams  # noqa: E402
from simworld.environments.retail.world import (  # noqa: E402
    CANCELLED, DELIVERED, GIFT_CARD, PENDING, PROCESSED,
)


@pytest.fixture(scope="module")
def world():
    return RetailWorld.load({"n_orders": 3000}, 7)


@pytest.fixture
def state(world):
    return world.new_state()


def call(world, state, name, /, **arguments):
    result = world.call(state, ToolCall(id="t", name=name, arguments=arguments), np.random.default_rng(0))
    return result


def ok(world, state, name, /, **arguments):
    result = call(world, state, name, **arguments)
    assert not result.error, result.content
    try:
        return orjson.loads(result.content)
    except orjson.JSONDecodeError:
        return result.content


def refused(world, state, name, fragment, /, **arguments):
    """The call fails with `fragment` in its message and leaves the state exactly as it was."""
    before_hash, before = state.state_hash(), state.changes()
    result = call(world, state, name, **arguments)
    assert result.error, f"{name} should have failed: {result.content[:200]}"
    assert fragment.lower() in result.content.lower(), result.content
    assert state.state_hash() == before_hash and state.changes() == before
    return result.content


def orders_with(world, status, where=lambda r: True):
    rows = [int(r) for r in np.flatnonzero(world.orders["status"] == status) if where(int(r))]
    assert rows, f"no order with status {status}"
    return rows


def pm_kind(world, row):
    return int(world.pm["kind"][row])


def user_of(world, order):
    return int(world.orders["user"][order])


def alternative(world, variant, available=True):
    product = world.variants["product"][variant]
    for v in world.product_variants(int(product)):
        if v != variant and bool(world.variants["available"][v]) == available:
            return v
    return None


# -- generation ---------------------------------------------------------------------------------


def test_generation_is_deterministic_per_params_and_seed():
    p = RetailParams(n_orders=500)
    a = RetailWorld.build(p, np.random.default_rng(np.random.SeedSequence([3, 0x5EED])))
    b = RetailWorld.build(p, np.random.default_rng(np.random.SeedSequence([3, 0x5EED])))
    c = RetailWorld.build(p, np.random.default_rng(np.random.SeedSequence([4, 0x5EED])))
    assert a.fingerprint == b.fingerprint != c.fingerprint
    for t in a.tables:
        for col in a.tables[t].columns:
            assert np.array_equal(a.tables[t][col], b.tables[t][col])
    assert RetailWorld.load({"n_orders": 500}, 3).data.fingerprint == a.fingerprint


def test_params_reject_unknown_keys_and_impossible_sizes():
    with pytest.raises(ValidationError, match="extra"):
        RetailParams.model_validate({"n_orders": 10, "n_oders": 3})
    with pytest.raises(ValidationError, match="n_users"):
        RetailParams(n_orders=10, n_users=10**8)
    with pytest.raises(ValidationError):
        RetailParams(n_orders=0)
    with pytest.raises(ValidationError, match="catalog"):
        RetailParams(n_product_types=1, variants_per_product=3, max_items_per_order=5)
    assert RetailParams(n_orders=2000).users == 501


def test_tiny_worlds_build_and_impossible_tasks_fail_with_one_clear_error():
    from simworld.errors import SimworldError

    tiny = RetailWorld.load({"n_orders": 3, "n_product_types": 1, "variants_per_product": 10,
                             "status_mix": [0, 0, 1, 0]}, 0)
    assert tiny.orders.n == 3 and set(tiny.orders["status"].tolist()) == {DELIVERED}
    gen = get_task("retail", "cancel_pending_order")
    with pytest.raises(SimworldError, match="no eligible order with status"):
        gen(gen.Params()).sample(tiny, tiny.new_state(), np.random.default_rng(0))


def test_generated_data_is_consistent(world):
    o, v = world.orders, world.variants
    assert np.all(np.diff(o["num"]) > 0) and np.all(np.diff(world.users["key"]) > 0)
    filled = o["items"] >= 0
    # lines are left-aligned, priced, and distinct within an order
    assert np.all(filled[:, 0]) and np.all(filled[:, 1:] <= filled[:, :-1])
    assert np.array_equal(o["item_prices"][filled], v["price"][o["items"][filled]])
    for row in range(0, o.n, 97):
        items = o["items"][row][o["items"][row] >= 0]
        assert len(set(items.tolist())) == len(items)
        # the first payment pays the total with a method of the order's user
        assert o["pay_amount"][row, 0] == o["item_prices"][row].sum()
        assert world.pm["user"][o["pay_method"][row, 0]] == o["user"][row]
    assert set(np.unique(o["status"]).tolist()) == {PENDING, PROCESSED, DELIVERED, CANCELLED}
    # every user can be named unambiguously by payment method description
    for user in range(0, world.users.n, 13):
        descriptions = [world.payment_description(p) for p in world.user_payment_rows(user)]
        assert descriptions and len(set(descriptions)) == len(descriptions)


def test_ids_round_trip(world):
    for row in (0, 17, world.users.n - 1):
        assert world.user_row(world.user_id(row)) == row
        assert world.user_row_by_email(world.email(row)) == row
    for row in (0, 5, world.orders.n - 1):
        oid = world.order_id(row)
        assert oid.startswith("#W") and len(oid) == 9 and world.order_row(oid) == row
    for row in (0, world.pm.n - 1):
        assert world.payment_row(world.payment_method_id(row)) == row
    assert world.order_row("#W12") == -1 and world.user_row("nobody") == -1
    wrong_kind = world.payment_method_id(0).replace("credit_card", "gift_card").replace("paypal", "gift_card")
    if pm_kind(world, 0) != GIFT_CARD:
        assert world.payment_row(wrong_kind) == -1


# -- read tools ---------------------------------------------------------------------------------


def test_find_user(world, state):
    u = 42
    assert ok(world, state, "find_user_id_by_email", email=world.email(u).upper()) == world.user_id(u)
    refused(world, state, "find_user_id_by_email", "user not found", email="nobody@example.com")
    refused(world, state, "find_user_id_by_email", "user not found", email="not an email")
    unique = next(u for u in range(world.users.n) if world.users_with_name_zip(u) == 1)
    d = ok(world, state, "get_user_details", user_id=world.user_id(unique))
    got = ok(world, state, "find_user_id_by_name_zip", first_name=d["name"]["first_name"],
             last_name=d["name"]["last_name"], zip=d["address"]["zip"])
    assert got == world.user_id(unique)
    refused(world, state, "find_user_id_by_name_zip", "user not found", first_name=d["name"]["first_name"],
            last_name=d["name"]["last_name"], zip="00000")
    refused(world, state, "find_user_id_by_name_zip", "zip", first_name="a", last_name="b")  # missing argument


def test_get_user_details_shape(world, state):
    d = ok(world, state, "get_user_details", user_id=world.user_id(3))
    assert set(d) == {"user_id", "name", "address", "email", "payment_methods", "orders"}
    assert set(d["address"]) == {"address1", "address2", "city", "state", "country", "zip"}
    assert d["orders"] == [world.order_id(int(o)) for o in world.user_orders(3)]
    for pid, pm in d["payment_methods"].items():
        assert pm["id"] == pid and pm["source"] in ("credit_card", "paypal", "gift_card")
        if pm["source"] == "credit_card":
            assert len(pm["last_four"]) == 4 and pm["brand"]
        if pm["source"] == "gift_card":
            assert isinstance(pm["balance"], float)
    refused(world, state, "get_user_details", "user not found", user_id="zed_nobody_123")
    refused(world, state, "get_user_details", "valid string", user_id=12345)


def test_get_order_and_product_details(world, state):
    row = orders_with(world, DELIVERED)[0]
    d = ok(world, state, "get_order_details", order_id=world.order_id(row))
    assert d["status"] == "delivered" and d["user_id"] == world.user_id(user_of(world, row))
    assert d["fulfillments"][0]["tracking_id"][0].isdigit()
    total = sum(i["price"] for i in d["items"])
    assert d["payment_history"] == [{"transaction_type": "payment", "amount": round(total, 2),
                                     "payment_method_id": world.payment_method_id(int(world.orders["pay_method"][row, 0]))}]
    cancelled = ok(world, state, "get_order_details", order_id=world.order_id(orders_with(world, CANCELLED)[0]))
    assert cancelled["cancel_reason"] in ("no longer needed", "ordered by mistake")
    assert [t["transaction_type"] for t in cancelled["payment_history"]] == ["payment", "refund"]
    item = d["items"][0]
    p = ok(world, state, "get_product_details", product_id=item["product_id"])
    assert p["name"] == item["name"] and item["item_id"] in p["variants"]
    assert p["variants"][item["item_id"]]["options"] == item["options"]
    refused(world, state, "get_order_details", "order not found", order_id="#W99999999")
    refused(world, state, "get_order_details", "valid string", order_id=["#W0000001"])
    refused(world, state, "get_product_details", "product not found", product_id=item["item_id"])
    refused(world, state, "get_product_details", "unexpected argument", product_id=item["product_id"], x=1)
    types = ok(world, state, "list_all_product_types")
    assert len(types) == 50 and list(types) == sorted(types)


def test_calculate_is_safe_arithmetic(world, state):
    cases = {"2 + 2": "4.00", "(2+3)*4.5 - -1/4": "22.75", "10 / 4 * 2": "5.00", "2 - 3 - 4": "-5.00",
             "-(1.5 + .5) * 3": "-6.00", "1249.99 + 35.5": "1285.49", "8/3": "2.67", "+7": "7.00"}
    for expr, want in cases.items():
        result = call(world, state, "calculate", expression=expr)
        assert not result.error and result.content == want, expr
    refused(world, state, "calculate", "division by zero", expression="1/(2-2)")
    for bad in ("__import__('os').system('true')", "abs(-1)", "1e3", "x + 1"):
        refused(world, state, "calculate", "invalid characters", expression=bad)
    for bad in ("", "2**8", "1 +", "(1", "1)", "2 3", "1..2", "*3", "()"):
        refused(world, state, "calculate", "invalid expression", expression=bad)
    refused(world, state, "calculate", "too long", expression="1+" * 600 + "1")


def test_search_orders_matches_numpy_reference(world, state):
    o, v = world.orders, world.variants
    totals = o["item_prices"].sum(axis=1)
    product = int(v["product"][o["items"][0, 0]])
    has_product = ((o["items"] >= 0) & (v["product"][np.maximum(o["items"], 0)] == product)).any(axis=1)
    mask = (o["status"] == DELIVERED) & has_product & (totals >= 10000)
    got = ok(world, state, "search_orders", status="delivered", product_id=world.product_id(product),
             min_total=100, limit=100)
    assert got["count"] == int(mask.sum()) > 0
    assert got["order_ids"] == [world.order_id(int(r)) for r in np.flatnonzero(mask)[:100]]
    user = user_of(world, 0)
    got = ok(world, state, "search_orders", user_id=world.user_id(user), max_total=1e9)
    assert got["count"] == len(world.user_orders(user))
    assert len(ok(world, state, "search_orders", limit=3)["order_ids"]) == 3
    refused(world, state, "search_orders", "product not found", product_id="0000000000")
    refused(world, state, "search_orders", "status", status="lost")
    refused(world, state, "search_orders", "limit", limit=0)
    # the scan sees the episode's overlay
    pending = orders_with(world, PENDING)[0]
    before = ok(world, state, "search_orders", status="cancelled")["count"]
    ok(world, state, "cancel_pending_order", order_id=world.order_id(pending), reason="ordered by mistake")
    assert ok(world, state, "search_orders", status="cancelled")["count"] == before + 1


def test_transfer_to_human_ends_the_episode(world, state):
    result = call(world, state, "transfer_to_human_agents", summary="wants a refund in cash")
    assert not result.error and result.end_episode == "transfer" and result.content == "Transfer successful"


# -- write tools --------------------------------------------------------------------------------


def test_cancel_pending_order_refunds_and_restores_gift_card(world, state):
    row = orders_with(world, PENDING, lambda r: pm_kind(world, int(world.orders["pay_method"][r, 0])) == GIFT_CARD)[0]
    gift = int(world.orders["pay_method"][row, 0])
    total = int(world.orders["item_prices"][row].sum())
    balance = int(world.pm["balance"][gift])
    d = ok(world, state, "cancel_pending_order", order_id=world.order_id(row), reason="no longer needed")
    assert d["status"] == "cancelled" and d["cancel_reason"] == "no longer needed"
    assert d["payment_history"][-1] == {"transaction_type": "refund", "amount": round(total / 100, 2),
                                        "payment_method_id": world.payment_method_id(gift)}
    assert int(state.get("payment_methods", "balance", gift)) == balance + total
    refused(world, state, "cancel_pending_order", "non-pending", order_id=world.order_id(row), reason="no longer needed")
    for status in (PROCESSED, DELIVERED, CANCELLED):
        refused(world, state, "cancel_pending_order", "non-pending",
                order_id=world.order_id(orders_with(world, status)[0]), reason="ordered by mistake")
    other = world.order_id(orders_with(world, PENDING)[1])
    refused(world, state, "cancel_pending_order", "reason", order_id=other, reason="changed my mind")
    refused(world, state, "cancel_pending_order", "order not found", order_id="#W0000000x", reason="no longer needed")
    refused(world, state, "cancel_pending_order", "missing", order_id=other)


def test_modify_pending_order_address(world, state):
    row, other = orders_with(world, PENDING)[:2]
    original = world.address_row(int(world.orders["address"][row]))
    new = {"address1": "12 Elm Street", "address2": "", "city": "Austin", "state": "TX", "country": "USA",
           "zip": "78701"}
    h0 = state.state_hash()
    d = ok(world, state, "modify_pending_order_address", order_id=world.order_id(row), **new)
    assert d["address"] == new
    user = ok(world, state, "get_user_details", user_id=world.user_id(user_of(world, row)))
    assert user["address"] == original  # the user's default address is another thing
    assert ok(world, state, "get_order_details", order_id=world.order_id(other))["address"] != new
    # changing it back leaves no trace: equal content, equal hash
    ok(world, state, "modify_pending_order_address", order_id=world.order_id(row), **original)
    assert state.state_hash() == h0 and state.changes()["patches"] == {}
    refused(world, state, "modify_pending_order_address", "must not be empty", order_id=world.order_id(row),
            **{**new, "city": " "})
    refused(world, state, "modify_pending_order_address", "non-pending",
            order_id=world.order_id(orders_with(world, DELIVERED)[0]), **new)


def test_modify_user_address(world, state):
    new = {"address1": "1 Main Street", "address2": "Suite 100", "city": "Boston", "state": "MA", "country": "USA",
           "zip": "02108"}
    d = ok(world, state, "modify_user_address", user_id=world.user_id(5), **new)
    assert d["address"] == new
    for o in world.user_orders(5):
        assert ok(world, state, "get_order_details", order_id=world.order_id(int(o)))["address"] != new
    refused(world, state, "modify_user_address", "user not found", user_id="a_b_100", **new)


def _pending_with_methods(world, want):
    """A pending order whose user holds a payment method satisfying want(order, pm_row)."""
    for r in orders_with(world, PENDING):
        for p in world.user_payment_rows(user_of(world, r)):
            if want(r, p):
                return r, p
    raise AssertionError("no such order")


def test_modify_pending_order_payment(world, state):
    total = lambda r: int(world.orders["item_prices"][r].sum())  # noqa: E731
    row, gift = _pending_with_methods(world, lambda r, p: pm_kind(world, p) == GIFT_CARD
                                      and p != world.orders["pay_method"][r, 0] and world.pm["balance"][p] >= total(r))
    old = int(world.orders["pay_method"][row, 0])
    oid = world.order_id(row)
    refused(world, state, "modify_pending_order_payment", "different", order_id=oid,
            payment_method_id=world.payment_method_id(old))
    stranger = next(p for p in range(world.pm.n) if world.pm["user"][p] != world.orders["user"][row])
    refused(world, state, "modify_pending_order_payment", "payment method not found", order_id=oid,
            payment_method_id=world.payment_method_id(stranger))
    refused(world, state, "modify_pending_order_payment", "payment method not found", order_id=oid,
            payment_method_id="bitcoin_1234567")
    d = ok(world, state, "modify_pending_order_payment", order_id=oid, payment_method_id=world.payment_method_id(gift))
    amount = round(total(row) / 100, 2)
    assert d["payment_history"][1:] == [
        {"transaction_type": "payment", "amount": amount, "payment_method_id": world.payment_method_id(gift)},
        {"transaction_type": "refund", "amount": amount, "payment_method_id": world.payment_method_id(old)}]
    assert int(state.get("payment_methods", "balance", gift)) == int(world.pm["balance"][gift]) - total(row)
    refused(world, state, "modify_pending_order_payment", "exactly one payment", order_id=oid,
            payment_method_id=world.payment_method_id(old))
    # cancelling afterwards refunds what each method still holds: only the gift card
    d = ok(world, state, "cancel_pending_order", order_id=oid, reason="no longer needed")
    assert d["payment_history"][-1]["payment_method_id"] == world.payment_method_id(gift)
    assert int(state.get("payment_methods", "balance", gift)) == int(world.pm["balance"][gift])
    poor, small = _pending_with_methods(world, lambda r, p: pm_kind(world, p) == GIFT_CARD
                                        and p != world.orders["pay_method"][r, 0] and world.pm["balance"][p] < total(r))
    refused(world, state, "modify_pending_order_payment", "insufficient gift card balance", order_id=world.order_id(poor),
            payment_method_id=world.payment_method_id(small))


def _swappable(world, status):
    for r in orders_with(world, status):
        v = int(world.orders["items"][r, 0])
        alt = alternative(world, v)
        unavailable = alternative(world, v, available=False)
        cards = [p for p in world.user_payment_rows(user_of(world, r)) if pm_kind(world, p) != GIFT_CARD]
        if alt is not None and unavailable is not None and cards:
            return r, v, alt, unavailable, cards[0]
    raise AssertionError("no swappable order")


def _other_product_variant(world, variant):
    return int(np.flatnonzero(world.variants["product"] != world.variants["product"][variant])[0])


def test_modify_pending_order_items(world, state):
    row, old, new, unavailable, card = _swappable(world, PENDING)
    oid, iid, pid = world.order_id(row), world.item_id, world.payment_method_id(card)
    args = {"order_id": oid, "payment_method_id": pid}
    refused(world, state, "modify_pending_order_items", "same product", item_ids=[iid(old)],
            new_item_ids=[iid(_other_product_variant(world, old))], **args)
    refused(world, state, "modify_pending_order_items", "not available", item_ids=[iid(old)],
            new_item_ids=[iid(unavailable)], **args)
    refused(world, state, "modify_pending_order_items", "same as item", item_ids=[iid(old)], new_item_ids=[iid(old)],
            **args)
    refused(world, state, "modify_pending_order_items", "same length", item_ids=[iid(old)], new_item_ids=[], **args)
    refused(world, state, "modify_pending_order_items", "no item ids", item_ids=[], new_item_ids=[], **args)
    refused(world, state, "modify_pending_order_items", "not found in the order", item_ids=[iid(new)],
            new_item_ids=[iid(old)], **args)
    refused(world, state, "modify_pending_order_items", "not found in the order", item_ids=[iid(old), iid(old)],
            new_item_ids=[iid(new), iid(new)], **args)
    refused(world, state, "modify_pending_order_items", "new item '0000000000' not found", item_ids=[iid(old)],
            new_item_ids=["0000000000"], **args)
    refused(world, state, "modify_pending_order_items", "non-pending", item_ids=[iid(old)], new_item_ids=[iid(new)],
            order_id=world.order_id(orders_with(world, DELIVERED)[0]), payment_method_id=pid)
    d = ok(world, state, "modify_pending_order_items", item_ids=[iid(old)], new_item_ids=[iid(new)], **args)
    diff = int(world.variants["price"][new]) - int(world.orders["item_prices"][row, 0])
    assert d["status"] == "pending (item modified)"
    assert d["items"][0]["item_id"] == iid(new) and d["items"][0]["price"] == round(world.variants["price"][new] / 100, 2)
    if diff:
        assert d["payment_history"][-1] == {"transaction_type": "payment" if diff > 0 else "refund",
                                            "amount": round(abs(diff) / 100, 2), "payment_method_id": pid}
    # only once per order, and the order can no longer be cancelled or changed
    refused(world, state, "modify_pending_order_items", "non-pending", item_ids=[iid(new)], new_item_ids=[iid(old)],
            **args)
    refused(world, state, "cancel_pending_order", "non-pending", order_id=oid, reason="no longer needed")


def test_modify_items_with_gift_card_moves_balance(world, state):
    for r in orders_with(world, PENDING):
        v = int(world.orders["items"][r, 0])
        gifts = [p for p in world.user_payment_rows(user_of(world, r)) if pm_kind(world, p) == GIFT_CARD]
        cheaper = [a for a in world.product_variants(int(world.variants["product"][v]))
                   if a != v and world.variants["available"][a] and world.variants["price"][a] < world.orders["item_prices"][r, 0]]
        if gifts and cheaper:
            break
    else:
        raise AssertionError("no pending order with a gift card and a cheaper option in this world")
    gift, new = gifts[0], cheaper[0]
    refund = int(world.orders["item_prices"][r, 0]) - int(world.variants["price"][new])
    ok(world, state, "modify_pending_order_items", order_id=world.order_id(r), item_ids=[world.item_id(v)],
       new_item_ids=[world.item_id(new)], payment_method_id=world.payment_method_id(gift))
    assert int(state.get("payment_methods", "balance", gift)) == int(world.pm["balance"][gift]) + refund


def test_return_delivered_order_items(world, state):
    def other_card(r):
        original = int(world.orders["pay_method"][r, 0])
        return [p for p in world.user_payment_rows(user_of(world, r)) if p != original and pm_kind(world, p) != GIFT_CARD]

    row = orders_with(world, DELIVERED, lambda r: bool(other_card(r)))[0]
    oid = world.order_id(row)
    items = [world.item_id(int(v)) for v in world.orders["items"][row] if v >= 0]
    original = world.payment_method_id(int(world.orders["pay_method"][row, 0]))
    refused(world, state, "return_delivered_order_items", "original payment method or a gift card", order_id=oid,
            item_ids=items[:1], payment_method_id=world.payment_method_id(other_card(row)[0]))
    refused(world, state, "return_delivered_order_items", "not found in the order", order_id=oid,
            item_ids=[items[0], items[0]], payment_method_id=original)
    refused(world, state, "return_delivered_order_items", "no item ids", order_id=oid, item_ids=[],
            payment_method_id=original)
    refused(world, state, "return_delivered_order_items", "non-delivered",
            order_id=world.order_id(orders_with(world, PENDING)[0]), item_ids=items[:1], payment_method_id=original)
    d = ok(world, state, "return_delivered_order_items", order_id=oid, item_ids=items[::-1], payment_method_id=original)
    assert d["status"] == "return requested" and d["return_items"] == sorted(items)
    assert d["return_payment_method_id"] == original
    refused(world, state, "return_delivered_order_items", "non-delivered", order_id=oid, item_ids=items[:1],
            payment_method_id=original)
    # a gift card of the user is always an allowed refund target
    gift_row = orders_with(world, DELIVERED, lambda r: r != row and any(  # (not the order returned above)
        pm_kind(world, p) == GIFT_CARD for p in world.user_payment_rows(user_of(world, r))))[0]
    gift = next(p for p in world.user_payment_rows(user_of(world, gift_row)) if pm_kind(world, p) == GIFT_CARD)
    d = ok(world, state, "return_delivered_order_items", order_id=world.order_id(gift_row),
           item_ids=[world.item_id(int(world.orders["items"][gift_row, 0]))], payment_method_id=world.payment_method_id(gift))
    assert d["return_payment_method_id"] == world.payment_method_id(gift)


def test_exchange_delivered_order_items(world, state):
    row, old, new, unavailable, card = _swappable(world, DELIVERED)
    oid, iid, pid = world.order_id(row), world.item_id, world.payment_method_id(card)
    refused(world, state, "exchange_delivered_order_items", "same product", order_id=oid, item_ids=[iid(old)],
            new_item_ids=[iid(_other_product_variant(world, old))], payment_method_id=pid)
    refused(world, state, "exchange_delivered_order_items", "not available", order_id=oid, item_ids=[iid(old)],
            new_item_ids=[iid(unavailable)], payment_method_id=pid)
    refused(world, state, "exchange_delivered_order_items", "non-delivered", item_ids=[iid(old)],
            new_item_ids=[iid(new)], order_id=world.order_id(orders_with(world, PROCESSED)[0]), payment_method_id=pid)
    d = ok(world, state, "exchange_delivered_order_items", order_id=oid, item_ids=[iid(old)], new_item_ids=[iid(new)],
           payment_method_id=pid)
    diff = int(world.variants["price"][new]) - int(world.orders["item_prices"][row, 0])
    assert d["status"] == "exchange requested" and d["exchange_items"] == [iid(old)]
    assert d["exchange_new_items"] == [iid(new)] and d["exchange_payment_method_id"] == pid
    assert d["exchange_price_difference"] == round(diff / 100, 2)
    assert d["items"][0]["item_id"] == iid(old)  # the order keeps its items until the exchange is processed
    refused(world, state, "exchange_delivered_order_items", "non-delivered", order_id=oid, item_ids=[iid(old)],
            new_item_ids=[iid(new)], payment_method_id=pid)


def test_every_tool_rejects_bad_arguments_without_touching_state(world, state):
    pending = world.order_id(orders_with(world, PENDING)[0])
    ok(world, state, "cancel_pending_order", order_id=pending, reason="no longer needed")
    for name, tool in RetailWorld.tools.items():
        required = tool.spec.parameters["required"]
        refused(world, state, name, "unexpected argument", bogus=1)
        if required:
            refused(world, state, name, "missing required argument")
            refused(world, state, name, "valid", **{k: {"nested": True} for k in required})
    res = world.call(state, ToolCall(id="t", name="cancel_pending_ordr", arguments={}), np.random.default_rng(0))
    assert res.error and "did you mean 'cancel_pending_order'" in res.content


# -- state semantics ----------------------------------------------------------------------------


def test_snapshot_restore_hash_and_readable_diff(world, state):
    row = orders_with(world, PENDING, lambda r: pm_kind(world, int(world.orders["pay_method"][r, 0])) != GIFT_CARD)[0]
    base_hash = state.state_hash()
    snap = state.snapshot()
    ok(world, state, "cancel_pending_order", order_id=world.order_id(row), reason="ordered by mistake")
    assert state.state_hash() != base_hash and snap.state_hash() == base_hash
    diff = state.diff(snap, world.row_label)
    assert {d.field for d in diff} == {"status", "cancel_reason", "pay_type", "pay_amount", "pay_method"}
    assert {d.row for d in diff} == {world.order_id(row)}
    readable = world.finalize_outcome(None, Outcome(diff=diff)).diff
    status = next(d for d in readable if d.field == "status")
    assert (status.expected, status.actual) == ("pending", "cancelled")
    methods = next(d for d in readable if d.field == "pay_method")
    assert methods.actual[1] == world.payment_method_id(int(world.orders["pay_method"][row, 0]))
    state.restore(snap)
    assert state.state_hash() == base_hash and state.diff(snap) == []
    # two different paths to the same content hash equally
    a, b = world.new_state(), world.new_state()
    o1, o2 = orders_with(world, PENDING)[1:3]
    for s, order in ((a, (o1, o2)), (b, (o2, o1))):
        for r in order:
            ok(world, s, "cancel_pending_order", order_id=world.order_id(r), reason="no longer needed")
    assert a.state_hash() == b.state_hash()


def test_hash_covers_the_world_fingerprint():
    a = RetailWorld.load({"n_orders": 200}, 1).new_state()
    b = RetailWorld.load({"n_orders": 200}, 2).new_state()
    assert a.state_hash() != b.state_hash()


# -- tool graph ---------------------------------------------------------------------------------


def test_tool_graph_connects_authentication_to_every_write():
    g = RetailWorld.tool_graph()
    writes = {n for n, d in g.nodes(data=True) if d.get("kind") == "tool" and d["writes"]}
    assert writes == {"cancel_pending_order", "modify_pending_order_address", "modify_pending_order_items",
                      "modify_pending_order_payment", "return_delivered_order_items",
                      "exchange_delivered_order_items", "modify_user_address"}
    t = RetailWorld.tool_transitions()
    for a, b in [("find_user_id_by_email", "get_user_details"), ("get_user_details", "get_order_details"),
                 ("get_order_details", "get_product_details"), ("get_product_details", "exchange_delivered_order_items"),
                 ("get_user_details", "modify_pending_order_payment"), ("list_all_product_types", "get_product_details")]:
        assert t.has_edge(a, b), (a, b)
    reachable = nx.descendants(t, "find_user_id_by_email") | nx.descendants(t, "find_user_id_by_name_zip")
    assert writes <= reachable


# -- a world of a million orders ----------------------------------------------------------------


@pytest.fixture(scope="module")
def big():
    t0 = time.perf_counter()
    w = RetailWorld.load({"n_orders": 1_000_000}, 11)
    return w, time.perf_counter() - t0


def test_million_order_world(big):
    world, seconds = big
    assert world.orders.n == 1_000_000 and seconds < 30
    assert world.data.nbytes < 400e6
    state = world.new_state()
    row = 987_654
    d = ok(world, state, "get_order_details", order_id=world.order_id(row))
    assert world.order_row(d["order_id"]) == row
    user = ok(world, state, "find_user_id_by_email", email=world.email(user_of(world, row)))
    assert d["order_id"] in ok(world, state, "get_user_details", user_id=user)["orders"]
    found = ok(world, state, "search_orders", status="pending", min_total=500, limit=5)
    ref = int(((world.orders["status"] == PENDING) & (world.orders["item_prices"].sum(axis=1) >= 50000)).sum())
    assert found["count"] == ref
    pending = world.order_id(orders_with(world, PENDING)[-1])
    ok(world, state, "cancel_pending_order", order_id=pending, reason="no longer needed")
    # an episode's hash costs what it touched, not what the world holds
    t0 = time.perf_counter()
    for _ in range(100):
        state.state_hash()
    assert (time.perf_counter() - t0) / 100 < 0.005
    for name, cls in sorted(TASKS["retail"].items()):
        gen = cls(cls.Params())
        for seed in range(3):
            task = gen.sample(world, world.new_state(), np.random.default_rng(seed))
            replay = world.new_state()
            for step in task.gold_plan:
                assert not world.call(replay, step, np.random.default_rng(0)).error
            assert replay.state_hash() == task.expected_state.state_hash()


def test_lookup_kernels():
    keys = np.arange(0, 2_000_000, 2, dtype=np.int64)
    assert kernels.find_sorted(keys, 1_000_000) == 500_000 and kernels.find_sorted(keys, 3) == -1
    assert kernels.find_sorted(keys, -5) == -1 and kernels.find_sorted(keys, 2_000_000) == -1
    assert kernels.equal_range(np.array([1, 2, 2, 2, 5]), 2) == (1, 4)
    assert kernels.equal_range(np.array([1, 2, 2, 2, 5]), 3) == (4, 4)
    rows = kernels.find_many(keys, np.arange(len(keys)), np.array([4, 5, 0]))
    assert rows.tolist() == [2, -1, 0]
