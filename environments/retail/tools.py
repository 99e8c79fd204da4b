"""The retail tools (tau-bench retail names, arguments and JSON shapes), with the store policy enforced.

Each tool parses its ids, calls its Numba kernels once with whole arrays or one row's values (read
through the episode overlay), and writes single cells with ``State.set``. A policy violation or an
unknown id raises ``ToolError``; the framework then restores the state to what it was before the
call. Write tools return the updated order (or user) as ``get_order_details`` shows it.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from simworld.world import ToolContext, ToolError

from . import kernels
from .world import (
    CANCELLED, DELIVERED, EXCHANGE_REQUESTED, GIFT_CARD, ITEMS_MODIFIED, PAYMENT, PENDING, REFUND,
    RETURN_REQUESTED, STATUS, RetailWorld, dollars,
)

OrderId = Annotated[str, Field(description="The order id, such as '#W0000042'. Include the '#'.")]
UserId = Annotated[str, Field(description="The user id, such as 'sara_doe_496'.")]
PaymentMethodId = Annotated[str, Field(description="A payment method id from the user's details, such as "
                                                   "'gift_card_0000000' or 'credit_card_0000000'.")]
ItemIds = Annotated[list[str], Field(description="Item ids (10 digits) of the order's items, such as "
                                                 "['1008292230'].")]
NewItemIds = Annotated[list[str], Field(description="The new item ids, each another available option of the "
                                                      "same product as the item at the same position in item_ids.")]
Address1 = Annotated[str, Field(description="The first line of the address, such as '123 Main St'.")]
Address2 = Annotated[str, Field(description="The second line of the address, such as 'Apt 1' or ''.")]
City = Annotated[str, Field(description="The city, such as 'San Francisco'.")]
StateCode = Annotated[str, Field(description="The state, such as 'CA'.")]
Country = Annotated[str, Field(description="The country, such as 'USA'.")]
Zip = Annotated[str, Field(description="The zip code, such as '12345'.")]
StatusName = Literal["pending", "processed", "delivered", "cancelled", "pending (item modified)",
                     "return requested", "exchange requested"]


def _world(ctx: ToolContext) -> RetailWorld:
    world = ctx.world
    if not isinstance(world, RetailWorld):
        raise ToolError("retail tools need the retail world")
    return world


def _order(world: RetailWorld, order_id: str) -> int:
    row = world.order_row(order_id)
    if row < 0:
        raise ToolError("order not found")
    return row


def _user(world: RetailWorld, user_id: str) -> int:
    row = world.user_row(user_id)
    if row < 0:
        raise ToolError("user not found")
    return row


def _status(ctx: ToolContext, row: int) -> int:
    return int(ctx.state.get("orders", "status", row))


def _require_status(ctx: ToolContext, row: int, wanted: int, action: str) -> None:
    status = _status(ctx, row)
    if status != wanted:
        name = ctx.state.data.vocab["status"][status]
        raise ToolError(f"{action}: the order is {name}, not {ctx.state.data.vocab['status'][wanted]}")


def _user_payment(world: RetailWorld, ctx: ToolContext, order_row: int, payment_method_id: str) -> int:
    """The payment method's row, which must belong to the order's user."""
    row = world.payment_row(payment_method_id)
    user = int(ctx.state.get("orders", "user", order_row))
    if row < 0 or int(world.pm["user"][row]) != user:
        raise ToolError("payment method not found")
    return row


def _variants(world: RetailWorld, item_ids: list[str], what: str) -> np.ndarray:
    rows = world.variant_rows(item_ids)
    unknown = np.flatnonzero(rows < 0)
    if len(unknown):
        raise ToolError(f"{what} {item_ids[int(unknown[0])]!r} not found")
    return rows


def _check_lines(code: int, bad: int, item_ids: list[str]) -> None:
    if code == kernels.LINE_EMPTY:
        raise ToolError("no item ids given")
    if code == kernels.LINE_MISSING:
        raise ToolError(f"item {item_ids[bad]} not found in the order (or listed more often than ordered)")


def _check_swap(code: int, bad: int, item_ids: list[str], new_item_ids: list[str]) -> None:
    _check_lines(code, bad, item_ids)
    messages = {
        kernels.SWAP_LENGTH: "item_ids and new_item_ids must have the same length",
        kernels.SWAP_OTHER_PRODUCT: "new item {new} is not the same product as item {old}",
        kernels.SWAP_SAME: "new item {new} is the same as item {old}; choose a different option",
        kernels.SWAP_UNAVAILABLE: "new item {new} is not available",
        kernels.SWAP_UNKNOWN_NEW: "new item {new} not found",
    }
    if code in messages:
        old = item_ids[bad] if 0 <= bad < len(item_ids) else ""
        new = new_item_ids[bad] if 0 <= bad < len(new_item_ids) else ""
        raise ToolError(messages[code].format(old=old, new=new))


def _plan_swap(ctx: ToolContext, world: RetailWorld, row: int, item_ids: list[str], new_item_ids: list[str],
               payment_method_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Policy checks of an item modification or exchange: (lines, new variants, new prices, diff, payment row)."""
    new_variants = _variants(world, new_item_ids, "new item")
    code, bad, lines, new_prices, diff = kernels.plan_item_swap(
        ctx.state.get("orders", "items", row), ctx.state.get("orders", "item_prices", row),
        _variants(world, item_ids, "item"), new_variants, world.variants["product"], world.variants["available"],
        world.variants["price"])
    _check_swap(code, bad, item_ids, new_item_ids)
    pm_row = _user_payment(world, ctx, row, payment_method_id)
    _gift_card_covers(world, ctx, pm_row, int(diff))
    return lines, new_variants, new_prices, int(diff), pm_row


def _set_history(ctx: ToolContext, row: int, types: np.ndarray, amounts: np.ndarray, methods: np.ndarray) -> None:
    ctx.state.set("orders", "pay_type", row, types.astype(np.int8))
    ctx.state.set("orders", "pay_amount", row, amounts.astype(np.int32))
    ctx.state.set("orders", "pay_method", row, methods.astype(np.int32))


def _append_history(ctx: ToolContext, row: int, types: list[int], amounts: list[int], methods: list[int]) -> None:
    g = ctx.state.get
    code, nt, na, nm = kernels.append_transactions(
        g("orders", "pay_type", row), g("orders", "pay_amount", row), g("orders", "pay_method", row),
        np.array(types, dtype=np.int64), np.array(amounts, dtype=np.int64), np.array(methods, dtype=np.int64))
    if code != kernels.OK:
        raise ToolError("the order's payment history is full")
    _set_history(ctx, row, nt, na, nm)


def _add_balance(ctx: ToolContext, pm_row: int, cents: int) -> None:
    balance = int(ctx.state.get("payment_methods", "balance", pm_row))
    ctx.state.set("payment_methods", "balance", pm_row, np.int32(balance + cents))


def _gift_card_covers(world: RetailWorld, ctx: ToolContext, pm_row: int, cents: int) -> None:
    if int(world.pm["kind"][pm_row]) == GIFT_CARD and cents > 0:
        balance = int(ctx.state.get("payment_methods", "balance", pm_row))
        if balance < cents:
            raise ToolError(f"insufficient gift card balance ({dollars(balance):.2f}) to pay {dollars(cents):.2f}")


def _address(address1: str, address2: str, city: str, state: str, country: str, zip: str) -> dict[str, str]:
    fields = {"address1": address1.strip(), "address2": address2.strip(), "city": city.strip(),
              "country": country.strip(), "state": state.strip(), "zip": zip.strip()}
    missing = [k for k, v in fields.items() if not v and k != "address2"]
    if missing:
        raise ToolError(f"address field(s) {', '.join(missing)} must not be empty")
    return fields


def _set_address(ctx: ToolContext, world: RetailWorld, table: str, row: int, fields: dict[str, str]) -> None:
    """Store a changed address inline; an address equal to the generated one stores the base reference, so a
    change that is undone leaves no trace in the state hash."""
    base = int(world.data.tables[table]["address"][row])
    ctx.state.set(table, "address", row, base if fields == world.address_row(base) else fields)


# -- lookups ------------------------------------------------------------------------------------


@RetailWorld.tool(consumes=["email"], produces=["user_id"])
def find_user_id_by_email(ctx: ToolContext, email: Annotated[str, Field(
        description="The email of the user, such as 'something@example.com'.")]) -> str:
    """Find user id by email. If the user is not found, the function will return an error message."""
    world = _world(ctx)
    row = world.user_row_by_email(email)
    if row < 0:
        raise ToolError("user not found")
    return world.user_id(row)


@RetailWorld.tool(consumes=["first_name", "last_name", "zip"], produces=["user_id"])
def find_user_id_by_name_zip(
    ctx: ToolContext,
    first_name: Annotated[str, Field(description="The first name of the customer, such as 'John'.")],
    last_name: Annotated[str, Field(description="The last name of the customer, such as 'Doe'.")],
    zip: Zip,
) -> str:
    """Find user id by first name, last name, and zip code. Prefer finding by email when the customer has one."""
    world = _world(ctx)
    row = world.user_row_by_name_zip(first_name, last_name, zip)
    if row < 0:
        raise ToolError("user not found")
    return world.user_id(row)


@RetailWorld.tool(consumes=["user_id"], produces=["order_id", "payment_method_id", "address"])
def get_user_details(ctx: ToolContext, user_id: UserId) -> dict[str, Any]:
    """Get the details of a user, including their address, payment methods and orders."""
    world = _world(ctx)
    return world.user_json(ctx.state, _user(world, user_id))


@RetailWorld.tool(consumes=["order_id"], produces=["user_id", "item_id", "product_id", "payment_method_id",
                                                   "order_status"])
def get_order_details(ctx: ToolContext, order_id: OrderId) -> dict[str, Any]:
    """Get the status and details of an order: items, address, fulfillments and payment history."""
    world = _world(ctx)
    return world.order_json(ctx.state, _order(world, order_id))


@RetailWorld.tool(consumes=["product_id"], produces=["item_id"])
def get_product_details(ctx: ToolContext, product_id: Annotated[str, Field(
        description="The product id, such as '6086499569'. Be careful the product id is different from the "
                    "item id.")]) -> dict[str, Any]:
    """Get the inventory details of a product: every item (variant) with its options, price and availability."""
    world = _world(ctx)
    row = world.product_row(product_id)
    if row < 0:
        raise ToolError("product not found")
    return world.product_json(row)


@RetailWorld.tool(produces=["product_id"])
def list_all_product_types(ctx: ToolContext) -> dict[str, str]:
    """List the name and product id of every product type in the store."""
    world = _world(ctx)
    return {world.product_name(int(p)): world.product_id(int(p)) for p in world.ix["products_by_name"]}


@RetailWorld.tool(consumes=["user_id"], produces=["order_id"])
def search_orders(
    ctx: ToolContext,
    status: Annotated[StatusName | None, Field(description="Only orders with this status.")] = None,
    product_id: Annotated[str | None, Field(description="Only orders containing an item of this product.")] = None,
    user_id: Annotated[str | None, Field(description="Only orders of this user.")] = None,
    min_total: Annotated[float | None, Field(ge=0, description="Smallest order total in dollars.")] = None,
    max_total: Annotated[float | None, Field(ge=0, description="Largest order total in dollars.")] = None,
    limit: Annotated[int, Field(ge=1, le=100, description="Most order ids to return.")] = 10,
) -> dict[str, Any]:
    """Search orders by status, product, user and total; returns matching order ids and their count."""
    world = _world(ctx)
    want_product = -1
    if product_id is not None:
        want_product = world.product_row(product_id)
        if want_product < 0:
            raise ToolError("product not found")
    want_user = _user(world, user_id) if user_id is not None else -1
    st = ctx.state
    rows, count = kernels.search_orders_scan(
        st.column("orders", "status"), world.orders["user"], st.column("orders", "items"),
        st.column("orders", "item_prices"), world.variants["product"],
        STATUS[status] if status is not None else -1, want_user, want_product,
        -1 if min_total is None else round(min_total * 100), -1 if max_total is None else round(max_total * 100),
        limit)
    return {"order_ids": [world.order_id(int(r)) for r in rows], "count": int(count)}


@RetailWorld.tool(consumes=["expression"], produces=["amount"])
def calculate(ctx: ToolContext, expression: Annotated[str, Field(
        description="The mathematical expression to calculate, such as '2 + 2'. The expression can contain "
                    "numbers, operators (+, -, *, /), parentheses, and spaces.")]) -> str:
    """Calculate the result of a mathematical expression."""
    raw = expression.encode("utf-8", "replace")
    code, value = kernels.evaluate_expression(np.frombuffer(raw, dtype=np.uint8))
    if code == kernels.CALC_BAD_CHAR:
        raise ToolError("invalid characters in expression")
    if code == kernels.CALC_DIV_ZERO:
        raise ToolError("division by zero")
    if code == kernels.CALC_TOO_LONG:
        raise ToolError("expression too long")
    if code != kernels.OK or not math.isfinite(value):
        raise ToolError("invalid expression")
    return f"{round(value, 2):.2f}"


@RetailWorld.tool(consumes=["summary"])
def transfer_to_human_agents(ctx: ToolContext, summary: Annotated[str, Field(
        description="A summary of the user's issue.")]) -> str:
    """Transfer the user to a human agent, with a summary of the issue. Only when the request is outside policy
    scope or the tools cannot handle it; this ends the conversation."""
    ctx.finish_episode("transfer")
    return "Transfer successful"


# -- writes -------------------------------------------------------------------------------------


@RetailWorld.tool(consumes=["order_id"], writes=True)
def cancel_pending_order(
    ctx: ToolContext,
    order_id: OrderId,
    reason: Annotated[Literal["no longer needed", "ordered by mistake"], Field(
        description="The reason for cancellation, either 'no longer needed' or 'ordered by mistake'.")],
) -> dict[str, Any]:
    """Cancel a pending order. The refund goes to the original payment methods: at once for gift cards, in 5 to 7
    business days otherwise. Ask for explicit confirmation (yes) before cancelling."""
    world = _world(ctx)
    row = _order(world, order_id)
    _require_status(ctx, row, PENDING, "non-pending order cannot be cancelled")
    g = ctx.state.get
    code, nt, na, nm, methods, amounts = kernels.cancel_refunds(
        g("orders", "pay_type", row), g("orders", "pay_amount", row), g("orders", "pay_method", row))
    if code != kernels.OK:
        raise ToolError("the order's payment history is full")
    _set_history(ctx, row, nt, na, nm)
    for method, amount in zip(methods, amounts):
        if int(world.pm["kind"][method]) == GIFT_CARD:
            _add_balance(ctx, int(method), int(amount))
    ctx.state.set("orders", "status", row, np.int8(CANCELLED))
    ctx.state.set("orders", "cancel_reason", row, np.int8(ctx.state.data.vocab["cancel_reason"].index(reason)))
    return world.order_json(ctx.state, row)


@RetailWorld.tool(consumes=["order_id", "address"], writes=True)
def modify_pending_order_address(ctx: ToolContext, order_id: OrderId, address1: Address1, address2: Address2,
                                 city: City, state: StateCode, country: Country, zip: Zip) -> dict[str, Any]:
    """Modify the shipping address of a pending order. Ask for explicit confirmation (yes) first."""
    world = _world(ctx)
    row = _order(world, order_id)
    _require_status(ctx, row, PENDING, "non-pending order cannot be modified")
    _set_address(ctx, world, "orders", row, _address(address1, address2, city, state, country, zip))
    return world.order_json(ctx.state, row)


@RetailWorld.tool(consumes=["user_id", "address"], writes=True)
def modify_user_address(ctx: ToolContext, user_id: UserId, address1: Address1, address2: Address2, city: City,
                        state: StateCode, country: Country, zip: Zip) -> dict[str, Any]:
    """Modify the default address of a user. Ask for explicit confirmation (yes) first."""
    world = _world(ctx)
    row = _user(world, user_id)
    _set_address(ctx, world, "users", row, _address(address1, address2, city, state, country, zip))
    return world.user_json(ctx.state, row)


@RetailWorld.tool(consumes=["order_id", "payment_method_id"], writes=True)
def modify_pending_order_payment(ctx: ToolContext, order_id: OrderId,
                                 payment_method_id: PaymentMethodId) -> dict[str, Any]:
    """Modify the payment method of a pending order. The new method is charged the order total and the original
    method refunded. Ask for explicit confirmation (yes) first."""
    world = _world(ctx)
    row = _order(world, order_id)
    _require_status(ctx, row, PENDING, "non-pending order cannot be modified")
    new = _user_payment(world, ctx, row, payment_method_id)
    g = ctx.state.get
    methods, amounts, n = kernels.net_paid(g("orders", "pay_type", row), g("orders", "pay_amount", row),
                                           g("orders", "pay_method", row))
    if int((g("orders", "pay_type", row) >= 0).sum()) != 1 or n != 1:
        raise ToolError("there should be exactly one payment for a pending order to change its payment method")
    old, amount = int(methods[0]), int(amounts[0])
    if old == new:
        raise ToolError("the new payment method should be different from the current one")
    _gift_card_covers(world, ctx, new, amount)
    _append_history(ctx, row, [PAYMENT, REFUND], [amount, amount], [new, old])
    if int(world.pm["kind"][new]) == GIFT_CARD:
        _add_balance(ctx, new, -amount)
    if int(world.pm["kind"][old]) == GIFT_CARD:
        _add_balance(ctx, old, amount)
    return world.order_json(ctx.state, row)


@RetailWorld.tool(consumes=["order_id", "item_id", "payment_method_id"], writes=True)
def modify_pending_order_items(ctx: ToolContext, order_id: OrderId, item_ids: ItemIds,
                               new_item_ids: NewItemIds,
                               payment_method_id: PaymentMethodId) -> dict[str, Any]:
    """Modify items of a pending order to other options of the same product. Possible only once per order; the
    price difference is charged or refunded to the given payment method. Ask for explicit confirmation (yes)
    first."""
    world = _world(ctx)
    row = _order(world, order_id)
    _require_status(ctx, row, PENDING, "non-pending order cannot be modified")
    items, prices = ctx.state.get("orders", "items", row), ctx.state.get("orders", "item_prices", row)
    lines, new_variants, new_prices, diff, pm_row = _plan_swap(ctx, world, row, item_ids, new_item_ids,
                                                               payment_method_id)
    new_items, new_line_prices = items.copy(), prices.copy()
    new_items[lines] = new_variants
    new_line_prices[lines] = new_prices
    ctx.state.set("orders", "items", row, new_items)
    ctx.state.set("orders", "item_prices", row, new_line_prices)
    if diff != 0:
        _append_history(ctx, row, [PAYMENT if diff > 0 else REFUND], [abs(diff)], [pm_row])
        if int(world.pm["kind"][pm_row]) == GIFT_CARD:
            _add_balance(ctx, pm_row, -diff)
    ctx.state.set("orders", "status", row, np.int8(ITEMS_MODIFIED))
    return world.order_json(ctx.state, row)


def _request_mask(lines: np.ndarray) -> int:
    return int(sum(1 << int(j) for j in lines))


@RetailWorld.tool(consumes=["order_id", "item_id", "payment_method_id"], writes=True)
def return_delivered_order_items(ctx: ToolContext, order_id: OrderId, item_ids: ItemIds,
                                 payment_method_id: PaymentMethodId) -> dict[str, Any]:
    """Return items of a delivered order. The refund goes to the original payment method or to a gift card of the
    user. The order becomes 'return requested'. Ask for explicit confirmation (yes) first."""
    world = _world(ctx)
    row = _order(world, order_id)
    _require_status(ctx, row, DELIVERED, "non-delivered order cannot be returned")
    pm_row = _user_payment(world, ctx, row, payment_method_id)
    original = int(ctx.state.get("orders", "pay_method", row)[0])
    if pm_row != original and int(world.pm["kind"][pm_row]) != GIFT_CARD:
        raise ToolError("payment method should be either the original payment method or a gift card")
    code, bad, lines = kernels.match_lines(ctx.state.get("orders", "items", row),
                                           _variants(world, item_ids, "item"))
    _check_lines(code, bad, item_ids)
    ctx.state.set("orders", "request_lines", row, np.int16(_request_mask(lines)))
    ctx.state.set("orders", "request_method", row, np.int32(pm_row))
    ctx.state.set("orders", "status", row, np.int8(RETURN_REQUESTED))
    return world.order_json(ctx.state, row)


@RetailWorld.tool(consumes=["order_id", "item_id", "payment_method_id"], writes=True)
def exchange_delivered_order_items(ctx: ToolContext, order_id: OrderId, item_ids: ItemIds,
                                   new_item_ids: NewItemIds,
                                   payment_method_id: PaymentMethodId) -> dict[str, Any]:
    """Exchange items of a delivered order for other options of the same product. Possible only once per order;
    the price difference is charged or refunded to the given payment method. Ask for explicit confirmation (yes)
    first."""
    world = _world(ctx)
    row = _order(world, order_id)
    _require_status(ctx, row, DELIVERED, "non-delivered order cannot be exchanged")
    lines, new_variants, _, diff, pm_row = _plan_swap(ctx, world, row, item_ids, new_item_ids, payment_method_id)
    new_items = np.full(world.orders["items"].shape[1], -1, dtype=np.int32)
    new_items[lines] = new_variants
    ctx.state.set("orders", "request_lines", row, np.int16(_request_mask(lines)))
    ctx.state.set("orders", "request_new_items", row, new_items)
    ctx.state.set("orders", "request_method", row, np.int32(pm_row))
    ctx.state.set("orders", "request_diff", row, np.int32(diff))
    ctx.state.set("orders", "status", row, np.int8(EXCHANGE_REQUESTED))
    return world.order_json(ctx.state, row)
