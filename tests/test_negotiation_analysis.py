"""Outcome-space analysis of the bargaining world: utilities, Pareto frontier, bargaining points.

The kernels are checked against brute force written here (O(N^2) dominance, maxima over every
individually rational outcome), on small random spaces and at one million outcomes.
"""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simworld.environments.negotiation.analysis import analyse, analyse_arrays, analyse_python, enumerate_pair
from simworld.environments.negotiation.kernels import compile_utility, enumerate_utilities, select_offer, utility_buckets
from simworld.environments.negotiation.kernels import nearest_outcome as nearest_kernel
from simworld.environments.negotiation.space import OutcomeSpace, compile_tables, utility_model, utility_spec
from simworld.environments.negotiation.spec import BargainingParams, IssueSpec


def brute_frontier(ua, ub):
    """Outcomes no other outcome weakly dominates with a strict gain (O(N^2))."""
    out = []
    for i in range(len(ua)):
        dominated = any(ua[j] >= ua[i] and ub[j] >= ub[i] and (ua[j] > ua[i] or ub[j] > ub[i])
                        for j in range(len(ua)))
        if not dominated:
            out.append(i)
    return out


def brute_points(ua, ub, ra, rb):
    """Objective maxima of Nash, KS and welfare over all individually rational outcomes."""
    rational = [i for i in range(len(ua)) if ua[i] >= ra and ub[i] >= rb]
    welfare = max(ua[i] + ub[i] for i in range(len(ua)))
    if not rational:
        return None, None, welfare
    nash = max((ua[i] - ra) * (ub[i] - rb) for i in rational)
    span_a = max(ua[i] for i in rational) - ra
    span_b = max(ub[i] for i in rational) - rb
    ks = max(min((ua[i] - ra) / span_a if span_a > 0 else 1.0, (ub[i] - rb) / span_b if span_b > 0 else 1.0)
             for i in rational)
    return nash, ks, welfare


def random_tables(rng, sizes, quantise=None):
    """Weighted value tables of one party (each issue normalised to [0, 1], weights summing to 1)."""
    w = rng.random(len(sizes)) + 0.05
    w /= w.sum()
    tables = np.zeros((len(sizes), max(sizes)))
    for i, n in enumerate(sizes):
        v = rng.random(n)
        if quantise:
            v = np.round(v * quantise) / quantise  # many ties
        if n > 1 and v.max() > v.min():
            v = (v - v.min()) / (v.max() - v.min())
        tables[i, :n] = w[i] * v
    return tables


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.integers(0, 2**31), st.floats(0, 0.9),
       st.floats(0, 0.9), st.sampled_from([None, 2, 4]))
def test_kernels_match_brute_force_on_small_spaces(sizes, seed, ra, rb, quantise):
    rng = np.random.default_rng(seed)
    ta, tb = random_tables(rng, sizes, quantise), random_tables(rng, sizes, quantise)
    sizes_arr = np.array(sizes, dtype=np.int64)
    ua, ub = enumerate_pair(ta, tb, sizes_arr)
    # Utilities: the weighted tables summed over each outcome's digits (last issue fastest).
    for o, digits in enumerate(itertools.product(*(range(n) for n in sizes))):
        assert ua[o] == pytest.approx(sum(ta[i, d] for i, d in enumerate(digits)), abs=1e-12)
        assert ub[o] == pytest.approx(sum(tb[i, d] for i, d in enumerate(digits)), abs=1e-12)
    a = analyse_arrays(ua, ub, ra, rb)
    assert sorted(a.frontier.tolist()) == brute_frontier(ua.tolist(), ub.tolist())
    # The frontier from party a's utility buckets (what a UtilityModel carries) is the same.
    assert np.array_equal(analyse_arrays(ua, ub, ra, rb, utility_buckets(ua)).frontier, a.frontier)
    assert np.all(np.diff(ua[a.frontier]) >= 0), "frontier ordered by party a's utility"
    nash, ks, welfare = brute_points(ua.tolist(), ub.tolist(), ra, rb)
    assert ua[a.max_welfare] + ub[a.max_welfare] == pytest.approx(welfare, abs=1e-12)
    if nash is None:
        assert a.nash == a.kalai_smorodinsky == -1 and not a.zopa
    else:
        n, k = a.nash, a.kalai_smorodinsky
        assert ua[n] >= ra and ub[n] >= rb and ua[k] >= ra and ub[k] >= rb
        assert (ua[n] - ra) * (ub[n] - rb) == pytest.approx(nash, abs=1e-12)
        span_a = max(ua[i] for i in range(len(ua)) if ua[i] >= ra and ub[i] >= rb) - ra
        span_b = max(ub[i] for i in range(len(ub)) if ua[i] >= ra and ub[i] >= rb) - rb
        rel = min((ua[k] - ra) / span_a if span_a > 0 else 1.0, (ub[k] - rb) / span_b if span_b > 0 else 1.0)
        assert rel == pytest.approx(ks, abs=1e-12)
    # The plain-Python reference implementation agrees index for index.
    ref = analyse_python(ta, tb, sizes, ra, rb)
    assert ref["frontier"] == sorted(a.frontier.tolist())
    assert (ref["nash"], ref["kalai_smorodinsky"], ref["max_welfare"]) == (a.nash, a.kalai_smorodinsky, a.max_welfare)


def test_duplicate_utility_pairs_are_all_on_the_frontier():
    # Two values of issue 1 that neither party distinguishes: every frontier point appears twice.
    ta = np.array([[0.0, 0.5, 1.0], [0.0, 0.0, 0.0]]) * np.array([[1.0], [0.0]])
    tb = np.array([[1.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
    sizes = np.array([3, 2], dtype=np.int64)
    ua, ub = enumerate_pair(ta, tb, sizes)
    a = analyse_arrays(ua, ub, 0.0, 0.0)
    assert sorted(a.frontier.tolist()) == brute_frontier(ua.tolist(), ub.tolist()) == [0, 1, 2, 3, 4, 5]
    assert a.nash in (2, 3)  # (0.5, 0.5), lowest index wins the tie
    assert a.nash == 2


def test_no_zone_of_agreement():
    ua = np.array([0.0, 0.5, 1.0])
    ub = np.array([1.0, 0.5, 0.0])
    a = analyse_arrays(ua, ub, 0.6, 0.6)
    assert not a.zopa and a.nash == -1 and a.kalai_smorodinsky == -1
    assert a.max_welfare == 0  # every outcome has welfare 1: the lowest index


def test_one_million_outcomes():
    rng = np.random.default_rng(3)
    sizes = [100, 100, 100]
    ta, tb = random_tables(rng, sizes), random_tables(rng, sizes)
    sizes_arr = np.array(sizes, dtype=np.int64)
    ua, ub = enumerate_pair(ta, tb, sizes_arr)
    assert ua.shape == (1_000_000,)
    # Utilities against numpy broadcasting of the same tables.
    grid_a = ta[0][:, None, None] + ta[1][None, :, None] + ta[2][None, None, :]
    assert np.allclose(ua, grid_a.reshape(-1), atol=1e-12)
    a = analyse_arrays(ua, ub, 0.3, 0.25)
    # Frontier against an independent vectorised method: sort by (ua desc, ub desc); a point is on
    # the frontier iff its ub beats the running max of ub over all points with strictly larger ua.
    order = np.lexsort((-ub, -ua))
    sa, sb = ua[order], ub[order]
    running = np.maximum.accumulate(sb)
    prev_max = np.concatenate([[-np.inf], running[:-1]])
    starts = np.concatenate([[True], sa[1:] != sa[:-1]])
    group_id = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    beaten = prev_max[first][group_id]  # best ub at strictly larger ua
    group_best = np.maximum.reduceat(sb, first)[group_id]
    on = (sb > beaten) & (sb == group_best)
    assert sorted(a.frontier.tolist()) == sorted(order[on].tolist())
    rational = (ua >= 0.3) & (ub >= 0.25)
    product = np.where(rational, (ua - 0.3) * (ub - 0.25), -np.inf)
    assert (ua[a.nash] - 0.3) * (ub[a.nash] - 0.25) == pytest.approx(product.max(), abs=1e-12)
    assert ua[a.max_welfare] + ub[a.max_welfare] == pytest.approx((ua + ub).max(), abs=1e-12)
    assert a.frontier_distance(a.point(a.nash)) == 0.0


ISSUES = {
    "price": {"range": [100, 200], "step": 10},
    "months": {"values": [0, 6, 12, 24]},
    "colour": {"values": ["red", "blue", "green"]},
}


def params(buyer=None, seller=None):
    return BargainingParams.model_validate({
        "issues": ISSUES,
        "parties": {
            "buyer": buyer or {"weights": {"price": 3, "months": 1, "colour": 1},
                               "utilities": {"price": {"prefer": "low"}, "months": {"peak": 12},
                                             "colour": {"table": {"red": 5, "blue": 2, "green": 1}}},
                               "reservation": 0.3},
            "seller": seller or {"weights": {"price": 2, "months": 1},
                                 "utilities": {"price": {"table": {100: 0, 150: 0.8, 200: 1}},
                                               "months": {"prefer": "low"}},
                                 "reservation": 0.2},
        },
    })


def model_of(p, role):
    space = OutcomeSpace(p.issues)
    party = p.parties[role]
    fns = {n: f.model_dump(exclude_none=True) for n, f in party.utilities.items()}
    return utility_model(utility_spec(space, party.weights, fns, party.reservation)), space


def test_utilities_are_normalised_to_unit_interval():
    p = params()
    for role in ("buyer", "seller"):
        model, space = model_of(p, role)
        assert model.utilities.min() == pytest.approx(0.0, abs=1e-12)
        assert model.utilities.max() == pytest.approx(1.0, abs=1e-12)
        assert model.weights.sum() == pytest.approx(1.0)
        assert space.size == 11 * 4 * 3 == model.utilities.shape[0]
    buyer, space = model_of(p, "buyer")
    assert buyer.weights.tolist() == pytest.approx([0.6, 0.2, 0.2])
    # Each issue's value function spans [0, 1]: check one outcome by hand.
    terms = {"price": 150, "months": 6, "colour": "blue"}
    price = (200 - 150) / 100
    months = 1 - abs(6 - 12) / 12  # peak at 12, farthest value (0 and 24) is 12 away
    colour = (2 - 1) / (5 - 1)
    assert buyer.utility(terms) == pytest.approx(0.6 * price + 0.2 * months + 0.2 * colour)
    seller, _ = model_of(p, "seller")
    # Piecewise-linear table on a continuous issue: 170 lies 40% of the way from 150 to 200.
    assert seller.utility({"price": 170, "months": 24, "colour": "red"}) == pytest.approx(2 / 3 * (0.8 + 0.4 * 0.2))


def test_preferences_are_checked_against_the_issues():
    with pytest.raises(ValueError, match="unknown issue 'prce'; did you mean 'price'"):
        params(buyer={"weights": {"prce": 1}, "utilities": {}, "reservation": 0.1})
    with pytest.raises(ValueError, match="table has no score for 'green'"):
        params(buyer={"weights": {"colour": 1}, "utilities": {"colour": {"table": {"red": 1, "blue": 0}}},
                      "reservation": 0.1})
    with pytest.raises(ValueError, match="constant"):
        params(buyer={"weights": {"colour": 1}, "utilities": {"colour": {"table": {"red": 1, "blue": 1, "green": 1}}},
                      "reservation": 0.1})
    with pytest.raises(ValueError, match="has a weight but no value function"):
        params(buyer={"weights": {"months": 1}, "utilities": {}, "reservation": 0.1})
    with pytest.raises(ValueError, match="not a whole number of steps"):
        IssueSpec.model_validate({"range": [0, 10], "step": 3})
    with pytest.raises(ValueError, match="exactly two parties"):
        BargainingParams.model_validate({"issues": ISSUES, "parties": {}})


def test_table_keys_survive_json_round_trips():
    # JSON turns the numeric keys of a table into text; the utility must not change.
    p = params(seller={"weights": {"months": 1}, "utilities": {"months": {"table": {0: 1, 6: 0.5, 12: 0.2, 24: 0}}},
                       "reservation": 0.1})
    q = BargainingParams.model_validate_json(p.model_dump_json())
    a, _ = model_of(p, "seller")
    b, _ = model_of(q, "seller")
    assert np.array_equal(a.utilities, b.utilities)


def test_analysis_is_cached_per_profile():
    p = params()
    a, _ = model_of(p, "buyer")
    b, _ = model_of(p, "seller")
    assert analyse(a, b) is analyse(a, b)


def brute_select(u, sizes, ordered, low, high, ref):
    digits = list(itertools.product(*(range(n) for n in sizes)))
    band = [o for o in range(len(u)) if low <= u[o] <= high]
    if not band:
        above = [o for o in range(len(u)) if u[o] >= low]
        return min(above, key=lambda o: (u[o], o)) if above else None

    def dist(o):
        if ref[0] < 0:
            return 0.0
        return sum((abs(digits[o][i] - ref[i]) / (sizes[i] - 1) if sizes[i] > 1 else 0.0) if ordered[i]
                   else float(digits[o][i] != ref[i]) for i in range(len(sizes)))

    return min(band, key=lambda o: (dist(o), -u[o], o))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=3), st.integers(0, 2**31), st.floats(0, 1),
       st.floats(0, 0.3), st.booleans())
def test_select_offer_matches_brute_force(sizes, seed, low, width, with_ref):
    rng = np.random.default_rng(seed)
    tables = random_tables(rng, sizes, quantise=3)
    sizes_arr = np.array(sizes, dtype=np.int64)
    u = enumerate_utilities(tables[None], sizes_arr)[0]
    ordered = rng.random(len(sizes)) < 0.5
    ref = np.array([int(rng.integers(n)) for n in sizes] if with_ref else [-1] * len(sizes), dtype=np.int64)
    order, starts, bucket, bounds, best = utility_buckets(u)
    assert best == int(np.argmax(u))
    # The one-call form a UtilityModel is built with gives the same arrays.
    fused = compile_utility(tables, sizes_arr)
    for x, y in zip(fused, (u, order, starts, bucket, bounds, best)):
        assert np.array_equal(x, y)
    digits = np.array(list(itertools.product(*(range(n) for n in sizes))), dtype=np.uint8).reshape(len(u), len(sizes))
    got = select_offer(u, order, starts, bounds, best, digits, sizes_arr, ordered, low, low + width, ref)
    want = brute_select(u.tolist(), sizes, ordered.tolist(), low, low + width, ref.tolist())
    if want is None:  # nothing at or above `low`: the best outcome
        assert u[got] == u.max()
    else:
        assert got == want


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.integers(0, 2**31), st.floats(-0.2, 1.2),
       st.sampled_from([None, 2, 4]))
def test_nearest_outcome_matches_argmin(sizes, seed, target, quantise):
    rng = np.random.default_rng(seed)
    u = enumerate_utilities(random_tables(rng, sizes, quantise)[None], np.array(sizes, dtype=np.int64))[0]
    order, starts, _, bounds, _ = utility_buckets(u)
    assert nearest_kernel(u, order, starts, bounds, target) == int(np.argmin(np.abs(u - target)))
    for o in rng.integers(len(u), size=3):  # exactly on a utility (and its ties)
        assert nearest_kernel(u, order, starts, bounds, float(u[o])) == int(np.argmin(np.abs(u - u[o])))


def test_digit_table_decodes_every_outcome():
    space = OutcomeSpace({n: IssueSpec.model_validate(s) for n, s in ISSUES.items()})
    table = space.digit_table
    assert table.shape == (space.size, 3) and table.dtype == np.uint8
    for o in range(space.size):
        assert table[o].tolist() == space.digits(o).tolist()
        assert space.index(space.terms(o)) == o


def test_compile_tables_rejects_unknown_issue():
    space = OutcomeSpace({n: IssueSpec.model_validate(s) for n, s in ISSUES.items()})
    with pytest.raises(ValueError, match="unknown issue"):
        compile_tables(space, {"speed": 1.0}, {})
