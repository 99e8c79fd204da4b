"""Outcome-space analysis of a two-party negotiation: Pareto frontier and bargaining solutions.

:func:`analyse` runs the Numba kernels once per preference profile (cached: episodes that share
a profile share the analysis). :func:`analyse_python` is the same analysis in plain Python, kept as
a readable reference and for the benchmark.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from simworld.environments.negotiation.kernels import (
    bargaining_points,
    enumerate_utilities,
    frontier_distance,
    pareto_frontier,
    pareto_frontier_indexed,
)
from simworld.environments.negotiation.space import ARRAY_CACHE, UtilityModel


@dataclass(frozen=True)
class Analysis:
    """Reference points of one preference profile (party a, party b).

    Outcome indices are -1 where undefined: Nash and Kalai-Smorodinsky need an outcome both
    parties prefer to no deal (a zone of possible agreement, `zopa`).
    """

    ua: np.ndarray
    ub: np.ndarray
    frontier: np.ndarray
    """Frontier outcome indices, ordered by party a's utility (ascending)."""
    nash: int
    kalai_smorodinsky: int
    max_welfare: int
    reservation: tuple[float, float]

    @property
    def zopa(self) -> bool:
        return self.nash >= 0

    @property
    def size(self) -> int:
        return int(self.ua.shape[0])

    def point(self, outcome: int) -> tuple[float, float]:
        return float(self.ua[outcome]), float(self.ub[outcome])

    def frontier_points(self) -> np.ndarray:
        """`(k, 2)` array of the frontier's utility pairs."""
        return np.stack([self.ua[self.frontier], self.ub[self.frontier]], axis=1)

    def frontier_distance(self, point: tuple[float, float]) -> float:
        """Euclidean distance from a utility pair to the nearest frontier point."""
        return float(frontier_distance(self.ua, self.ub, self.frontier, float(point[0]), float(point[1])))

    @property
    def max_welfare_value(self) -> float:
        return float(self.ua[self.max_welfare] + self.ub[self.max_welfare])


def _order_frontier(ua: np.ndarray, front: np.ndarray) -> np.ndarray:
    # `front` ascends by index, so a stable sort by utility breaks ties by index.
    return front[np.argsort(ua[front], kind="stable")]


def analyse_arrays(ua: np.ndarray, ub: np.ndarray, ra: float, rb: float,
                   buckets_a: tuple[np.ndarray, ...] | None = None) -> Analysis:
    """Analysis of two utility arrays over the same outcomes (kernels: one call each).

    `buckets_a`, `utility_buckets(ua)` (or its first four arrays) if at hand, saves the frontier
    kernel recomputing it.
    """
    if buckets_a is None:
        front = pareto_frontier(ua, ub)
    else:
        front = pareto_frontier_indexed(ua, ub, buckets_a[2], buckets_a[1].shape[0] - 1)
    nash, ks, welfare = (int(x) for x in bargaining_points(ua, ub, front, float(ra), float(rb)))
    return Analysis(ua, ub, _order_frontier(ua, front), nash, ks, welfare, (float(ra), float(rb)))


def analyse(a: UtilityModel, b: UtilityModel) -> Analysis:
    """The analysis of party models `a` and `b` (same outcome space), cached per profile in the
    shared array cache (`space.CACHE_BYTES`): it counts the frontier, and the utilities unless they
    are those of cached models (then it is dropped with them)."""
    if a.space.names != b.space.names or a.space.size != b.space.size:
        raise ValueError("the two parties' utility specs describe different outcome spaces")
    key = (a.key, b.key, a.reservation, b.reservation)
    cached = ARRAY_CACHE.get("analysis", key)
    if cached is not None:
        return cached
    result = analyse_arrays(a.utilities, b.utilities, a.reservation, b.reservation, a.buckets)
    nbytes, uses = result.frontier.nbytes, []
    for model in (a, b):
        held = ARRAY_CACHE.peek("model", model.key)
        if held is not None and held.utilities is model.utilities:
            uses.append(("model", model.key))
        else:
            nbytes += model.utilities.nbytes
    ARRAY_CACHE.put("analysis", key, result, nbytes, tuple(uses))
    return result


def enumerate_pair(tables_a: np.ndarray, tables_b: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both parties' utilities of every outcome in one kernel call."""
    both = enumerate_utilities(np.stack([tables_a, tables_b]), sizes)
    return both[0], both[1]


def analyse_python(tables_a: Any, tables_b: Any, sizes: Any, ra: float, rb: float) -> dict[str, Any]:
    """The whole analysis in plain Python (lists and loops), for reference and benchmarks.

    Returns ``{"frontier": [indices ascending], "nash": i, "kalai_smorodinsky": i,
    "max_welfare": i}`` with the same definitions and tie-breaks as the kernels.
    """
    sizes = [int(s) for s in sizes]
    ta = [[float(x) for x in row] for row in tables_a]
    tb = [[float(x) for x in row] for row in tables_b]
    ua: list[float] = []
    ub: list[float] = []
    for digits in itertools.product(*(range(s) for s in sizes)):
        a = 0.0
        b = 0.0
        for i, d in enumerate(digits):
            a += ta[i][d]
            b += tb[i][d]
        ua.append(a)
        ub.append(b)
    order = sorted(range(len(ua)), key=lambda o: -ua[o])
    front: list[int] = []
    best = float("-inf")
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and ua[order[j]] == ua[order[i]]:
            j += 1
        group_best = max(ub[o] for o in order[i:j])
        if group_best > best:
            front.extend(o for o in order[i:j] if ub[o] == group_best)
            best = group_best
        i = j
    front.sort()
    rational = [o for o in front if ua[o] >= ra and ub[o] >= rb]
    welfare = max(front, key=lambda o: (ua[o] + ub[o], -o))
    if not rational:
        return {"frontier": front, "nash": -1, "kalai_smorodinsky": -1, "max_welfare": welfare}
    span_a = max(ua[o] for o in rational) - ra
    span_b = max(ub[o] for o in rational) - rb

    def relative(o: int) -> tuple[float, float]:
        rel_a = (ua[o] - ra) / span_a if span_a > 0 else 1.0
        rel_b = (ub[o] - rb) / span_b if span_b > 0 else 1.0
        return rel_a, rel_b

    nash = max(rational, key=lambda o: ((ua[o] - ra) * (ub[o] - rb), ua[o] + ub[o], -o))
    ks = max(rational, key=lambda o: (min(relative(o)), sum(relative(o)), -o))
    return {"frontier": front, "nash": nash, "kalai_smorodinsky": ks, "max_welfare": welfare}
