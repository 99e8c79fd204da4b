"""Numba kernels: the compute core of every retail tool.

Each tool calls its kernels once per tool call with whole arrays (sorted key columns, catalog
columns, order columns) or with one row's values read through the episode overlay; no kernel is
ever called once per row. Kernels return status codes instead of raising; ``tools.py`` turns codes
into ``ToolError`` messages. No kernel draws random numbers.
"""

from __future__ import annotations

import numba
import numpy as np

OK = 0

# -- lookups ------------------------------------------------------------------------------------


@numba.njit(cache=True)
def lower_bound(keys, key):
    """First index i with keys[i] >= key (len(keys) if none)."""
    lo, hi = 0, keys.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(cache=True)
def find_sorted(keys, key):
    """Index of `key` in the sorted array `keys`, or -1."""
    i = lower_bound(keys, key)
    if i < keys.shape[0] and keys[i] == key:
        return i
    return -1


@numba.njit(cache=True)
def equal_range(keys, key):
    """(first index, end index) of the run of `key` in the sorted array `keys`."""
    lo = lower_bound(keys, key)
    hi = lo
    n = keys.shape[0]
    while hi < n and keys[hi] == key:
        hi += 1
    return lo, hi


@numba.njit(cache=True)
def find_many(sorted_keys, sorted_rows, queries):
    """Row of each query id (via the sorted index), -1 where unknown."""
    out = np.full(queries.shape[0], -1, dtype=np.int64)
    for q in range(queries.shape[0]):
        i = find_sorted(sorted_keys, queries[q])
        if i >= 0:
            out[q] = sorted_rows[i]
    return out


# -- order lines --------------------------------------------------------------------------------

LINE_MISSING = 1  # an item is not in the order (or asked for more times than it appears)
LINE_EMPTY = 2  # no items given


@numba.njit(cache=True)
def match_lines(order_items, wanted):
    """Line index in `order_items` of each wanted variant row; each line is used at most once.

    Returns (code, index of the offending wanted item or -1, lines).
    """
    k = wanted.shape[0]
    lines = np.full(k, -1, dtype=np.int64)
    if k == 0:
        return LINE_EMPTY, -1, lines
    used = np.zeros(order_items.shape[0], dtype=np.bool_)
    for q in range(k):
        for j in range(order_items.shape[0]):
            if not used[j] and order_items[j] == wanted[q] and wanted[q] >= 0:
                used[j] = True
                lines[q] = j
                break
        if lines[q] < 0:
            return LINE_MISSING, q, lines
    return OK, -1, lines


@numba.njit(cache=True)
def lines_total(item_prices, lines):
    total = 0
    for q in range(lines.shape[0]):
        total += item_prices[lines[q]]
    return total


SWAP_LENGTH = 10  # item_ids and new_item_ids differ in length
SWAP_UNKNOWN_NEW = 11  # a new item id does not exist
SWAP_OTHER_PRODUCT = 12  # a new item is a variant of another product
SWAP_UNAVAILABLE = 13  # a new item is out of stock
SWAP_SAME = 14  # a new item equals the item it replaces


@numba.njit(cache=True)
def plan_item_swap(order_items, order_prices, old_variants, new_variants, var_product, var_available, var_price):
    """Check replacing `old_variants` by `new_variants` in an order; compute the price difference.

    Returns (code, offending position or -1, lines, new line prices, difference in cents: new - old).
    """
    k = old_variants.shape[0]
    empty = np.zeros(0, dtype=np.int64)
    if k != new_variants.shape[0]:
        return SWAP_LENGTH, -1, empty, empty, 0
    code, bad, lines = match_lines(order_items, old_variants)
    if code != OK:
        return code, bad, lines, empty, 0
    new_prices = np.zeros(k, dtype=np.int64)
    diff = 0
    for q in range(k):
        new = new_variants[q]
        if new < 0:
            return SWAP_UNKNOWN_NEW, q, lines, new_prices, 0
        if var_product[new] != var_product[old_variants[q]]:
            return SWAP_OTHER_PRODUCT, q, lines, new_prices, 0
        if new == old_variants[q]:
            return SWAP_SAME, q, lines, new_prices, 0
        if var_available[new] == 0:
            return SWAP_UNAVAILABLE, q, lines, new_prices, 0
        new_prices[q] = var_price[new]
        diff += var_price[new] - order_prices[lines[q]]
    return OK, -1, lines, new_prices, diff


# -- payment history ----------------------------------------------------------------------------

PAY_FULL = 20  # no free slot in the fixed-width payment history


@numba.njit(cache=True)
def net_paid(pay_type, pay_amount, pay_method):
    """Amount still held per payment method (payments minus refunds), in order of first payment.

    Returns (methods, amounts, n) with the first n entries valid.
    """
    k = pay_type.shape[0]
    methods = np.full(k, -1, dtype=np.int64)
    amounts = np.zeros(k, dtype=np.int64)
    n = 0
    for i in range(k):
        if pay_type[i] < 0:
            continue
        slot = -1
        for s in range(n):
            if methods[s] == pay_method[i]:
                slot = s
                break
        if slot < 0:
            slot = n
            methods[slot] = pay_method[i]
            n += 1
        if pay_type[i] == 0:
            amounts[slot] += pay_amount[i]
        else:
            amounts[slot] -= pay_amount[i]
    return methods, amounts, n


@numba.njit(cache=True)
def append_transactions(pay_type, pay_amount, pay_method, types, amounts, methods):
    """The payment history with transactions appended in the next free slots.

    Returns (code, new types, new amounts, new methods)."""
    nt = pay_type.copy()
    na = pay_amount.copy()
    nm = pay_method.copy()
    free = 0
    while free < nt.shape[0] and nt[free] >= 0:
        free += 1
    if free + types.shape[0] > nt.shape[0]:
        return PAY_FULL, nt, na, nm
    for i in range(types.shape[0]):
        nt[free + i] = types[i]
        na[free + i] = amounts[i]
        nm[free + i] = methods[i]
    return OK, nt, na, nm


@numba.njit(cache=True)
def cancel_refunds(pay_type, pay_amount, pay_method):
    """Refund every payment method what it still holds for the order.

    Returns (code, new history types, amounts, methods, refunded methods, refunded amounts)."""
    methods, amounts, n = net_paid(pay_type, pay_amount, pay_method)
    m = 0
    for s in range(n):
        if amounts[s] > 0:
            m += 1
    r_types = np.ones(m, dtype=np.int64)
    r_amounts = np.zeros(m, dtype=np.int64)
    r_methods = np.zeros(m, dtype=np.int64)
    j = 0
    for s in range(n):
        if amounts[s] > 0:
            r_amounts[j] = amounts[s]
            r_methods[j] = methods[s]
            j += 1
    code, nt, na, nm = append_transactions(pay_type, pay_amount, pay_method, r_types, r_amounts, r_methods)
    return code, nt, na, nm, r_methods, r_amounts


# -- scans --------------------------------------------------------------------------------------


@numba.njit(cache=True)
def search_orders_scan(status, user, items, item_prices, var_product, want_status, want_user, want_product,
                       min_total, max_total, limit):
    """Scan every order; filters < 0 mean 'any'. Returns (first `limit` matching rows, match count).

    Empty lines hold variant -1 and price 0, so the line loop runs without data-dependent branches.
    """
    n = status.shape[0]
    width = items.shape[1]
    limit = max(limit, 0)
    out = np.empty(limit, dtype=np.int64)
    lo = min_total if min_total >= 0 else -1
    hi = max_total if max_total >= 0 else np.iinfo(np.int64).max
    count = 0
    for r in range(n):
        if want_status >= 0 and status[r] != want_status:
            continue
        total = 0
        hit = want_product < 0
        for j in range(width):
            v = items[r, j]
            total += item_prices[r, j]
            hit |= (v >= 0) & (var_product[max(v, 0)] == want_product)
        if hit & (total >= lo) & (total <= hi) & ((want_user < 0) | (user[r] == want_user)):
            if count < limit:
                out[count] = r
            count += 1
    return out[:min(count, limit)], count


@numba.njit(cache=True)
def eligible_rows(status, want_status, start, limit):
    """Up to `limit` rows with the given status, scanning circularly from `start`."""
    n = status.shape[0]
    out = np.empty(limit, dtype=np.int64)
    k = 0
    for i in range(n):
        r = (start + i) % n
        if status[r] == want_status:
            out[k] = r
            k += 1
            if k == limit:
                break
    return out[:k]


# -- arithmetic ---------------------------------------------------------------------------------

CALC_BAD_CHAR = 30
CALC_SYNTAX = 31
CALC_DIV_ZERO = 32
CALC_TOO_LONG = 33

_PLUS, _MINUS, _TIMES, _DIVIDE, _LPAREN, _NEG = 1, 2, 3, 4, 5, 6


@numba.njit(cache=True)
def _precedence(op):
    if op == _PLUS or op == _MINUS:
        return 1
    if op == _TIMES or op == _DIVIDE:
        return 2
    if op == _NEG:
        return 3
    return 0


@numba.njit(cache=True)
def _apply(op, values, nv):
    """Pop operands for `op` from the value stack, push the result. Returns (code, new nv)."""
    if op == _NEG:
        if nv < 1:
            return CALC_SYNTAX, nv
        values[nv - 1] = -values[nv - 1]
        return OK, nv
    if nv < 2:
        return CALC_SYNTAX, nv
    b = values[nv - 1]
    a = values[nv - 2]
    if op == _PLUS:
        r = a + b
    elif op == _MINUS:
        r = a - b
    elif op == _TIMES:
        r = a * b
    else:
        if b == 0.0:
            return CALC_DIV_ZERO, nv
        r = a / b
    values[nv - 2] = r
    return OK, nv - 1


@numba.njit(cache=True)
def evaluate_expression(text):
    """Evaluate + - * / with parentheses, unary minus and decimals over ASCII bytes (shunting-yard).

    Returns (code, value). Nothing but digits, '.', operators, parentheses and spaces is accepted.
    """
    n = text.shape[0]
    if n > 1000:
        return CALC_TOO_LONG, 0.0
    values = np.zeros(n + 1, dtype=np.float64)
    ops = np.zeros(n + 1, dtype=np.int64)
    nv = 0
    no = 0
    expect_operand = True
    i = 0
    while i < n:
        c = text[i]
        if c == 32 or c == 9:  # space, tab
            i += 1
            continue
        if (48 <= c <= 57) or c == 46:  # digit or '.'
            if not expect_operand:
                return CALC_SYNTAX, 0.0
            value = 0.0
            scale = 0.0
            digits = 0
            while i < n and ((48 <= text[i] <= 57) or text[i] == 46):
                if text[i] == 46:
                    if scale > 0.0:
                        return CALC_SYNTAX, 0.0
                    scale = 1.0
                else:
                    digits += 1
                    if scale > 0.0:
                        scale *= 10.0
                        value += (text[i] - 48) / scale
                    else:
                        value = value * 10.0 + (text[i] - 48)
                i += 1
            if digits == 0:
                return CALC_SYNTAX, 0.0
            values[nv] = value
            nv += 1
            expect_operand = False
            continue
        if c == 40:  # (
            if not expect_operand:
                return CALC_SYNTAX, 0.0
            ops[no] = _LPAREN
            no += 1
        elif c == 41:  # )
            if expect_operand:
                return CALC_SYNTAX, 0.0
            while no > 0 and ops[no - 1] != _LPAREN:
                code, nv = _apply(ops[no - 1], values, nv)
                if code != OK:
                    return code, 0.0
                no -= 1
            if no == 0:
                return CALC_SYNTAX, 0.0
            no -= 1  # drop '('
        elif c == 43 or c == 45 or c == 42 or c == 47:  # + - * /
            if expect_operand:
                if c == 45:
                    ops[no] = _NEG
                    no += 1
                elif c == 43:
                    pass  # unary plus
                else:
                    return CALC_SYNTAX, 0.0
                i += 1
                continue
            op = _PLUS if c == 43 else _MINUS if c == 45 else _TIMES if c == 42 else _DIVIDE
            while no > 0 and ops[no - 1] != _LPAREN and _precedence(ops[no - 1]) >= _precedence(op):
                code, nv = _apply(ops[no - 1], values, nv)
                if code != OK:
                    return code, 0.0
                no -= 1
            ops[no] = op
            no += 1
            expect_operand = True
        else:
            return CALC_BAD_CHAR, 0.0
        i += 1
    if expect_operand:
        return CALC_SYNTAX, 0.0
    while no > 0:
        if ops[no - 1] == _LPAREN:
            return CALC_SYNTAX, 0.0
        code, nv = _apply(ops[no - 1], values, nv)
        if code != OK:
            return code, 0.0
        no -= 1
    if nv != 1:
        return CALC_SYNTAX, 0.0
    return OK, values[0]
