"""Numba kernels of the bargaining world: one call per analysis or per offer, over whole arrays.

Outcomes are numbered in mixed radix over the issues, the last issue varying fastest, so outcome
``o`` has digit ``d_i`` (the index of its value on issue ``i``) with
``o = ((d_0 * n_1 + d_1) * n_2 + d_2) ...``.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def enumerate_utilities(tables: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Utilities of every outcome for every party.

    `tables[p, i, d]` is party p's weighted value of value d of issue i (weight folded in);
    returns `u[p, o]`. The sum runs over issues in order, starting from 0.0.
    """
    n_parties = tables.shape[0]
    total = 1
    for i in range(sizes.shape[0]):
        total *= sizes[i]
    out = np.empty((n_parties, total))
    for p in range(n_parties):
        _enumerate_into(tables[p], sizes, out[p])
    return out


@numba.njit(cache=True)
def _enumerate_into(tables: np.ndarray, sizes: np.ndarray, row: np.ndarray) -> None:
    # Issue by issue, in place: each prefix sum is expanded by the next issue's values (backwards,
    # so slot j is read before it is overwritten); an outcome costs one addition per level.
    row[0] = 0.0
    length = 1
    for i in range(sizes.shape[0]):
        n = sizes[i]
        for j in range(length - 1, -1, -1):
            base = row[j]
            for d in range(n - 1, -1, -1):
                row[j * n + d] = base + tables[i, d]
        length *= n


@numba.njit(cache=True)
def compile_utility(tables: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                                    np.ndarray, int]:
    """One party's utilities and their bucket index in one call: `(u, order, starts, bucket, bounds,
    best)`, i.e. `enumerate_utilities(tables[None], sizes)[0]` followed by `utility_buckets(u)`.

    `tables[i, d]` as in `enumerate_utilities`. The extremes come from the tables (the sum of each
    issue's smallest, resp. largest, value: rounding is monotone, so no computed sum lies outside),
    which saves a pass over the outcomes.
    """
    total = 1
    for i in range(sizes.shape[0]):
        total *= sizes[i]
    u = np.empty(total)
    _enumerate_into(tables, sizes, u)
    lo = 0.0
    hi = 0.0
    for i in range(sizes.shape[0]):
        row_lo = tables[i, 0]
        row_hi = tables[i, 0]
        for d in range(1, sizes[i]):
            row_lo = min(row_lo, tables[i, d])
            row_hi = max(row_hi, tables[i, d])
        lo += row_lo
        hi += row_hi
    order, starts, bucket, bounds, best = _fill_buckets(u, lo, hi)
    return u, order, starts, bucket, bounds, best


@numba.njit(cache=True)
def utility_buckets(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """A linear-time index of outcomes by utility: `(order, starts, bucket, bounds, best)`.

    Utilities are cut into `max(1, n // 8)` equal-width buckets between their min and max:
    `bucket[o]` is outcome o's bucket, `order[starts[b]:starts[b + 1]]` are bucket b's outcomes in
    ascending index, and `bounds = [lo, scale]` maps a utility x to its bucket
    `int((x - lo) * scale)` (clamped). The map is monotone, so the outcomes in a utility band are
    those of a contiguous bucket range (a counting sort: no comparison sort of the outcome space).
    `best` is the first outcome of maximal utility.
    """
    n = u.shape[0]
    lo = u[0] if n > 0 else 0.0
    hi = lo
    for o in range(n):
        lo = min(lo, u[o])
        hi = max(hi, u[o])
    return _fill_buckets(u, lo, hi)


@numba.njit(cache=True)
def _fill_buckets(u: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    # `lo`, `hi`: the smallest and largest of `u` (exactly: `best` is the first outcome equal to hi).
    n = u.shape[0]
    n_buckets = max(1, n // 8)
    scale = n_buckets / (hi - lo) if hi > lo else 0.0
    bounds = np.empty(2)
    bounds[0] = lo
    bounds[1] = scale
    starts = np.zeros(n_buckets + 1, np.int64)
    bucket = np.empty(n, np.int32)
    best = -1
    for o in range(n):
        b = _bucket(u[o], lo, scale, n_buckets)
        bucket[o] = b
        starts[b + 1] += 1
        if best < 0 and u[o] == hi:
            best = o
    for b in range(n_buckets):
        starts[b + 1] += starts[b]
    fill = starts[:n_buckets].copy()
    order = np.empty(n, np.int32)
    for o in range(n):
        b = bucket[o]
        order[fill[b]] = o
        fill[b] += 1
    return order, starts, bucket, bounds, max(best, 0)


@numba.njit(cache=True)
def _bucket(x: float, lo: float, scale: float, n_buckets: int) -> int:
    v = (x - lo) * scale
    if not v > 0.0:
        return 0
    if v >= n_buckets - 1:
        return n_buckets - 1
    return int(v)


@numba.njit(cache=True)
def pareto_frontier(ua: np.ndarray, ub: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the outcomes no other outcome weakly dominates with one strict gain.

    `pareto_frontier_indexed` over `utility_buckets(ua)`.
    """
    _, starts, bucket, _, _ = utility_buckets(ua)
    return pareto_frontier_indexed(ua, ub, bucket, starts.shape[0] - 1)


@numba.njit(cache=True)
def pareto_frontier_indexed(ua: np.ndarray, ub: np.ndarray, bucket: np.ndarray, n_buckets: int) -> np.ndarray:
    """`pareto_frontier` given party a's utility buckets (`bucket` and the bucket count of
    `utility_buckets(ua)`).

    Exact sweep: sorted by `ua` descending, a group of equal `ua` has its best-`ub` points on the
    frontier iff that `ub` beats every `ub` at a strictly larger `ua`. To avoid sorting every
    outcome, a linear pre-pass drops the outcomes whose `ub` does not beat the best `ub` of the
    strictly higher buckets (each dropped outcome is dominated by a kept one with larger `ua` and
    at least its `ub`, so the sweep over the kept ones is still exact).
    """
    n = ua.shape[0]
    if n == 0:
        return np.empty(0, np.int64)
    best_in = np.full(n_buckets, -np.inf)
    for o in range(n):
        b = bucket[o]
        best_in[b] = max(best_in[b], ub[o])  # branch-free: whether ub beats the bucket's best is a coin toss
    above = np.full(n_buckets, -np.inf)  # best ub in the buckets strictly above b
    for b in range(n_buckets - 2, -1, -1):
        above[b] = max(above[b + 1], best_in[b + 1])
    kept = np.empty(n, np.int64)
    m = 0
    for o in range(n):
        if ub[o] > above[bucket[o]]:
            kept[m] = o
            m += 1
    kept = kept[:m]
    keys = np.empty(m)
    for k in range(m):
        keys[k] = -ua[kept[k]]
    sweep = kept[np.argsort(keys)]
    on_front = np.zeros(m, np.bool_)
    best = -np.inf
    count = 0
    i = 0
    while i < m:
        value = ua[sweep[i]]
        j = i
        group_best = -np.inf
        while j < m and ua[sweep[j]] == value:
            if ub[sweep[j]] > group_best:
                group_best = ub[sweep[j]]
            j += 1
        if group_best > best:
            for k in range(i, j):
                if ub[sweep[k]] == group_best:
                    on_front[k] = True
                    count += 1
            best = group_best
        i = j
    out = np.empty(count, np.int64)
    c = 0
    for k in range(m):
        if on_front[k]:
            out[c] = sweep[k]
            c += 1
    return np.sort(out)


@numba.njit(cache=True)
def frontier_distance(ua: np.ndarray, ub: np.ndarray, front: np.ndarray, pa: float, pb: float) -> float:
    """Euclidean distance from the utility pair `(pa, pb)` to the nearest frontier point."""
    best = np.inf
    for k in range(front.shape[0]):
        da = ua[front[k]] - pa
        db = ub[front[k]] - pb
        d = da * da + db * db
        if d < best:
            best = d
    return np.sqrt(best)


@numba.njit(cache=True)
def bargaining_points(ua: np.ndarray, ub: np.ndarray, front: np.ndarray, ra: float, rb: float) -> np.ndarray:
    """`[nash, kalai_smorodinsky, max_welfare]` outcome indices (-1 where undefined).

    All three lie on the Pareto frontier, so only `front` is searched. Nash maximises the product
    of gains over the reservation point among individually rational outcomes (ties: more welfare);
    Kalai-Smorodinsky maximises the smaller gain relative to the ideal gain (ties: larger sum of
    relative gains); max welfare maximises `ua + ub`. Remaining ties: lowest index.
    """
    ideal_a = -np.inf
    ideal_b = -np.inf
    for k in range(front.shape[0]):
        o = front[k]
        if ua[o] >= ra and ub[o] >= rb:
            if ua[o] > ideal_a:
                ideal_a = ua[o]
            if ub[o] > ideal_b:
                ideal_b = ub[o]
    span_a = ideal_a - ra
    span_b = ideal_b - rb
    nash = -1
    ks = -1
    best_welfare = -1
    best_product = -np.inf
    nash_welfare = -np.inf
    best_min = -np.inf
    best_sum = -np.inf
    welfare_max = -np.inf
    for k in range(front.shape[0]):
        o = front[k]
        welfare = ua[o] + ub[o]
        if welfare > welfare_max:
            welfare_max = welfare
            best_welfare = o
        if ua[o] < ra or ub[o] < rb:
            continue
        ga = ua[o] - ra
        gb = ub[o] - rb
        product = ga * gb
        if product > best_product or (product == best_product and welfare > nash_welfare):
            best_product = product
            nash_welfare = welfare
            nash = o
        rel_a = ga / span_a if span_a > 0 else 1.0
        rel_b = gb / span_b if span_b > 0 else 1.0
        low = rel_a if rel_a < rel_b else rel_b
        both = rel_a + rel_b
        if low > best_min or (low == best_min and both > best_sum):
            best_min = low
            best_sum = both
            ks = o
    out = np.empty(3, np.int64)
    out[0] = nash
    out[1] = ks
    out[2] = best_welfare
    return out


@numba.njit(cache=True)
def select_offer(u: np.ndarray, order: np.ndarray, starts: np.ndarray, bounds: np.ndarray, top: int,
                 digits: np.ndarray, sizes: np.ndarray, ordered: np.ndarray, low: float, high: float,
                 ref: np.ndarray) -> int:
    """The outcome to offer for a target utility band `[low, high]` of the offering party.

    Among outcomes whose utility `u` lies in the band, the one closest to the reference outcome
    `ref` (digits; the opponent's last offer, or all -1 for none) in normalised issue distance
    (ordered issues: |d - r| / (n - 1); unordered: 0 or 1); ties: higher `u`, then lower index.
    An empty band: the lowest `u` at or above `low` (ties: lower index); nothing at or above
    `low`: `top`, the best outcome (lowest index among equals).

    `order`, `starts`, `bounds` come from `utility_buckets(u)`, `digits[o, i]` outcome o's digit on issue i:
    only the buckets that overlap the band are visited (and, for an empty band, the buckets above
    it up to the first with an outcome at or above `low`), so a call costs what the band holds, not
    the size of the outcome space.
    """
    n_issues = sizes.shape[0]
    n_buckets = starts.shape[0] - 1
    has_ref = n_issues > 0 and ref[0] >= 0
    # Distance of each issue value to the reference, computed once per call.
    width = 1
    for i in range(n_issues):
        width = max(width, sizes[i])
    step = np.zeros((n_issues, width))
    if has_ref:
        for i in range(n_issues):
            for d in range(sizes[i]):
                if ordered[i]:
                    if sizes[i] > 1:
                        step[i, d] = abs(d - ref[i]) / (sizes[i] - 1)
                elif d != ref[i]:
                    step[i, d] = 1.0
    lo = bounds[0]
    scale = bounds[1]
    first = _bucket(low, lo, scale, n_buckets)
    last = _bucket(high, lo, scale, n_buckets)
    best = -1
    best_dist = np.inf
    best_u = -np.inf
    for b in range(first, last + 1):
        for k in range(starts[b], starts[b + 1]):
            o = order[k]
            uo = u[o]
            if uo < low or uo > high:
                continue
            dist = 0.0
            for i in range(n_issues):
                dist += step[i, digits[o, i]]
            if dist < best_dist or (dist == best_dist and (uo > best_u or (uo == best_u and o < best))):
                best_dist = dist
                best_u = uo
                best = o
    if best >= 0:
        return best
    # Empty band: every outcome at or above `low` lies above `high`; the lowest of them is in the
    # first bucket (from `first` on) that holds one.
    for b in range(first, n_buckets):
        above = -1
        above_u = np.inf
        for k in range(starts[b], starts[b + 1]):
            o = order[k]
            uo = u[o]
            if uo >= low and (uo < above_u or (uo == above_u and o < above)):
                above_u = uo
                above = o
        if above >= 0:
            return above
    return top


@numba.njit(cache=True)
def nearest_outcome(u: np.ndarray, order: np.ndarray, starts: np.ndarray, bounds: np.ndarray, target: float) -> int:
    """`argmin |u - target|` (ties: lowest index), visiting only the buckets near `target`.

    `order`, `starts`, `bounds` come from `utility_buckets(u)`. The smallest distance D is that of
    the largest utility at or below `target` or the smallest at or above it (found in the nearest
    non-empty buckets); every outcome at distance D then lies within 2D of `target`, so the exact
    argmin is taken over those buckets (one more on each side against rounding at bucket edges).
    """
    n_buckets = starts.shape[0] - 1
    lo = bounds[0]
    scale = bounds[1]
    home = _bucket(target, lo, scale, n_buckets)
    dist = np.inf
    for b in range(home, -1, -1):  # the largest utility <= target
        below = -np.inf
        for k in range(starts[b], starts[b + 1]):
            x = u[order[k]]
            if x <= target and x > below:
                below = x
        if below > -np.inf:
            dist = abs(below - target)
            break
    for b in range(home, n_buckets):  # the smallest utility >= target
        above = np.inf
        for k in range(starts[b], starts[b + 1]):
            x = u[order[k]]
            if x >= target and x < above:
                above = x
        if above < np.inf:
            dist = min(dist, abs(above - target))
            break
    first = max(_bucket(target - 2.0 * dist, lo, scale, n_buckets) - 1, 0)
    last = min(_bucket(target + 2.0 * dist, lo, scale, n_buckets) + 1, n_buckets - 1)
    best = -1
    best_dist = np.inf
    for b in range(first, last + 1):
        for k in range(starts[b], starts[b + 1]):
            o = order[k]
            d = abs(u[o] - target)
            if d < best_dist or (d == best_dist and o < best):
                best_dist = d
                best = o
    return best





@numba.njit(cache=True)
def opening_offer(u: np.ndarray, cost: float, order: np.ndarray, starts: np.ndarray, bounds: np.ndarray, top: int,
                  tables: np.ndarray, digits: np.ndarray, sizes: np.ndarray, ordered: np.ndarray, floor: float,
                  low: float, high: float, issue: int, position: float, ref: np.ndarray) -> tuple[np.ndarray, int]:
    """An opening offer: `(band, choice)`.

    With net utility `u - cost`, the pool is the outcomes whose net is at least `floor`; with
    `issue >= 0`, only those among them whose digit on `issue` lies nearest (within 1e-9) to the grid
    `position`. The band is the pool's outcomes with net in `[low, high]`, `floor <= low`. Callers
    fold their tolerances into `floor`, `low` and `high`.

    * Empty pool: no band, choice -2.
    * Empty band: no band, choice the pool's lowest `u` with net at or above `low`, else its highest
      `u` (ties: lowest index).
    * `ref` (the opponent's last offer, digits; all -1 for none) given: no band, choice the band's
      outcome nearest to `ref` in normalised issue distance (ordered issues: |d - r| / max(n - 1, 1),
      summed in issue order; unordered: 0 or 1), within 1e-12 of the nearest, then highest `u`,
      then lowest index.
    * Otherwise: the band (ascending) and choice -1, for the caller to draw from.

    `u`, `order`, `starts`, `bounds`, `top` (the best outcome) and `tables` are a party's compiled
    utility (`compile_utility`), `digits[o, i]` outcome o's digit on issue i. A call costs what the
    band holds, not the size of the outcome space: whether any pooled outcome has digit d on
    `issue` is read off the outcome that pairs d with every other issue's best value (rounding is
    monotone, so no outcome with digit d sums to more), and the band comes from the utility buckets
    that overlap it.
    """
    n_buckets = starts.shape[0] - 1
    n_issues = sizes.shape[0]
    none = np.empty(0, np.int64)
    nearest = np.inf
    if issue >= 0:
        rest = 0  # the outcome with every issue but `issue` at its best value and digit 0 on `issue`
        stride = 1
        for i in range(n_issues - 1, -1, -1):
            if i != issue:
                best_d = 0
                for d in range(1, sizes[i]):
                    if tables[i, d] > tables[i, best_d]:
                        best_d = d
                rest += best_d * stride
            else:
                issue_stride = stride
            stride *= sizes[i]
        for d in range(sizes[issue]):
            if u[rest + d * issue_stride] - cost >= floor:
                nearest = min(nearest, abs(np.float64(d) - position))
        if nearest == np.inf:
            return none, -2
    elif not u[top] - cost >= floor:
        return none, -2
    reach = nearest + 1e-9
    lo = bounds[0]
    scale = bounds[1]
    first = max(_bucket(low + cost, lo, scale, n_buckets) - 1, 0)
    last = min(_bucket(high + cost, lo, scale, n_buckets) + 1, n_buckets - 1)
    band = np.empty(starts[last + 1] - starts[first], np.int64)
    m = 0
    above = -1
    b = first
    while b < n_buckets and (b <= last or (m == 0 and above < 0)):
        for k in range(starts[b], starts[b + 1]):
            o = order[k]
            net = u[o] - cost
            if not net >= low or (issue >= 0 and not abs(np.float64(digits[o, issue]) - position) <= reach):
                continue  # net >= low implies net >= floor: low is at least floor
            if net <= high and b <= last:  # (beyond `last` every net exceeds `high`)
                band[m] = o
                m += 1
            elif above < 0 or u[o] < u[above] or (u[o] == u[above] and o < above):
                above = o
        b += 1
    if m == 0:
        if above >= 0:
            return none, above
        best = -1  # nothing at or above `low`: the pool's best, from the top bucket down
        b = n_buckets - 1
        while best < 0:
            for k in range(starts[b], starts[b + 1]):
                o = order[k]
                if not u[o] - cost >= floor or (
                        issue >= 0 and not abs(np.float64(digits[o, issue]) - position) <= reach):
                    continue
                if best < 0 or u[o] > u[best] or (u[o] == u[best] and o < best):
                    best = o
            b -= 1
        return none, best
    band = np.sort(band[:m])
    if ref.shape[0] == 0 or ref[0] < 0:
        return band, -1
    gaps = np.empty(m)
    closest = np.inf
    for k in range(m):
        o = band[k]
        gap = 0.0
        for i in range(n_issues):
            d = np.int64(digits[o, i])
            if ordered[i]:
                gap += abs(d - ref[i]) / max(sizes[i] - 1, 1)
            elif d != ref[i]:
                gap += 1.0
        gaps[k] = gap
        closest = min(closest, gap)
    closest += 1e-12
    choice = -1
    for k in range(m):
        if gaps[k] <= closest and (choice < 0 or u[band[k]] > u[choice]):
            choice = band[k]
    return none, choice
