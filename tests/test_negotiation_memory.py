"""Memory of the bargaining world's caches: one byte budget over every per-outcome array they hold.

Each episode of a scenario with weight jitter compiles two new utility models, so without a bound
over all the caches together (models, the specs' recent models, analyses, digit tables) a long run
grows with its number of episodes. bench/bench_negotiation_memory.py shows the RSS at 1M to 19M
outcomes; here the accounting is checked at small sizes with a small budget.
"""

import os

import numpy as np
import orjson
import pytest

from simworld.environments.negotiation import space as negotiation_space
from simworld.environments.negotiation.kernels import select_offer
from simworld.environments.negotiation.space import ARRAY_CACHE, ArrayCache, OutcomeSpace, utility_model, utility_spec
from simworld.environments.negotiation.spec import IssueSpec
from simworld.episode import episode_specs, run_episode_sync
from simworld.registry import load_builtins
from simworld.scenario import load_scenario, parse_overrides
from simworld.types import strip_timings

SUPPLIER = "scenarios/negotiation/supplier_contract.yaml"
STEP = "world.params.issues.unit_price.step=0.06"
"""101 unit prices times 400 other terms: 40,400 outcomes, a model of about 0.7 MB."""


def small_cache(budget: int) -> ArrayCache:
    return ArrayCache(budget, limits={"model": 4, "recent": 2, "analysis": 4, "digits": 2},
                      keep={"model": 2, "analysis": 1, "digits": 1}, evict=(("model", "analysis"), ("digits",)))


def held_keys(cache: ArrayCache) -> set[tuple[str, object]]:
    return {(kind, key) for kind, key, _ in cache.items()}


def test_over_budget_drops_least_recent_models_before_digit_tables():
    cache = small_cache(100)
    cache.put("digits", "d", "table", 30)
    for name in ("m1", "m2", "m3"):
        cache.put("model", name, name, 30)
    assert held_keys(cache) == {("digits", "d"), ("model", "m2"), ("model", "m3")}  # m1 went, not the table
    cache.put("analysis", "a23", "analysis", 5, uses=(("model", "m2"), ("model", "m3")))
    cache.put("recent", "r2", "spec", 0, uses=(("model", "m2"),))
    assert cache.get("model", "m2") == "m2"  # m3 is now the least recently used model
    cache.put("model", "m4", "m4", 30)
    # m3 dropped, and the analysis that holds its arrays with it; m2's recent spec stays
    assert held_keys(cache) == {("digits", "d"), ("model", "m2"), ("model", "m4"), ("recent", "r2")}
    assert cache.held == 90
    cache.put("model", "m5", "m5", 30)
    assert held_keys(cache) == {("digits", "d"), ("model", "m4"), ("model", "m5")}  # r2 went with m2
    assert cache.held == 90


def test_what_the_running_episode_uses_stays_beyond_the_budget():
    cache = small_cache(100)
    cache.put("digits", "d", "table", 30)
    cache.put("model", "a", "a", 30)
    cache.put("model", "b", "b", 200)
    # Over the budget, but the two most recent models and the one digit table are kept.
    assert held_keys(cache) == {("digits", "d"), ("model", "a"), ("model", "b")}
    assert cache.held == 260
    cache.put("model", "c", "c", 30)
    assert held_keys(cache) == {("digits", "d"), ("model", "b"), ("model", "c")}  # a went
    assert cache.held == 260
    cache.put("model", "e", "e", 30)
    assert held_keys(cache) == {("digits", "d"), ("model", "c"), ("model", "e")}  # back within the budget
    assert cache.held == 90


def test_counts_per_kind_and_no_stale_bookkeeping():
    cache = small_cache(10**9)
    cache.put("model", "m", "m", 10)
    for i in range(100):
        cache.put("recent", i, "spec", 0, uses=(("model", "m"),))
        cache.get("model", "m")
    assert cache.counts() == {"model": 1, "recent": 2, "analysis": 0, "digits": 0}
    assert len(cache._users[("model", "m")]) == 2  # dropped recents do not linger as users of m
    cache.put("model", "m", "m again", 10)  # replacing an entry drops its users
    assert cache.counts()["recent"] == 0 and cache.held == 10
    cache.clear()
    assert cache.held == 0 and not cache._users and sum(cache.counts().values()) == 0


def distinct_bytes(cache: ArrayCache) -> int:
    """Bytes of the distinct arrays reachable from the cache's entries."""
    arrays: dict[int, np.ndarray] = {}

    def add(*xs: np.ndarray) -> None:
        for x in xs:
            arrays[id(x)] = x

    for kind, _, value in cache.items():
        if kind == "recent":
            value = value[1]
        if kind in ("model", "recent"):
            add(value.utilities, *value.buckets, value.tables, value.weights)
        elif kind == "analysis":
            add(value.ua, value.ub, value.frontier)
        else:
            add(value)
    return sum(x.nbytes for x in arrays.values())


@pytest.fixture
def budget(monkeypatch):
    """The shared cache emptied, with a budget of 4 MB (about five models of 40,400 outcomes)."""
    load_builtins()
    ARRAY_CACHE.clear()
    monkeypatch.setattr(ARRAY_CACHE, "budget", 4 << 20)
    yield 4 << 20
    ARRAY_CACHE.clear()


def test_many_jittered_episodes_stay_within_the_budget(budget):
    sc = load_scenario(SUPPLIER, parse_overrides([STEP]))
    most = 0
    for spec in episode_specs(sc, 30):
        t = run_episode_sync(sc, spec)
        assert t.task.goal["outcome_space"] == 40_400
        held = distinct_bytes(ARRAY_CACHE)
        assert held == ARRAY_CACHE.held  # every array the caches hold is counted, once
        assert held <= budget
        most = max(most, ARRAY_CACHE.counts()["model"])
    assert most >= 4  # (the budget, not a count limit, is what bounded it)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_process_memory_stops_growing_once_the_cache_is_full(monkeypatch):
    # A million outcomes: each episode compiles two 17 MB models (in Numba, out of tracemalloc's
    # sight), so the process's RSS shows what the caches keep.
    load_builtins()
    ARRAY_CACHE.clear()
    monkeypatch.setattr(ARRAY_CACHE, "budget", 48 << 20)
    sc = load_scenario(SUPPLIER, parse_overrides(["world.params.issues.unit_price.step=0.0024"]))
    specs = episode_specs(sc, 14)
    try:
        for spec in specs[:4]:
            run_episode_sync(sc, spec)
        filled = rss()
        for spec in specs[4:]:
            t = run_episode_sync(sc, spec)
        after = rss()
    finally:
        ARRAY_CACHE.clear()
    assert t.task.goal["outcome_space"] == 1_000_400
    # 10 more episodes compiled 20 more models (340 MB) and dropped as many
    assert after - filled < 40 << 20


def test_a_budget_that_holds_nothing_gives_the_same_trajectories(monkeypatch):
    load_builtins()
    sc = load_scenario(SUPPLIER, parse_overrides([STEP]))
    specs = episode_specs(sc, 12)

    def run() -> list[bytes]:
        return [orjson.dumps(strip_timings(orjson.loads(run_episode_sync(sc, spec).to_jsonl())),
                             option=orjson.OPT_SORT_KEYS) for spec in specs]

    ARRAY_CACHE.clear()
    cached = run()
    monkeypatch.setattr(ARRAY_CACHE, "budget", 1)
    evicting = run()
    assert ARRAY_CACHE.counts()["model"] == 2  # only the last episode's two models stayed
    assert evicting == cached
    ARRAY_CACHE.clear()


def test_spaces_of_one_shape_share_a_digit_table_of_the_smallest_type():
    wide = {"units": IssueSpec.model_validate({"range": [0, 70000], "step": 1}),
            "colour": IssueSpec.model_validate({"values": ["red", "blue"]})}
    space = OutcomeSpace(wide)
    table = space.digit_table
    assert table.dtype == np.uint32 and table.shape == (140_002, 2)
    assert OutcomeSpace(wide).digit_table is table  # one table per grid shape, not per space object
    for o in (0, 1, 77_777, space.size - 1):
        assert table[o].tolist() == space.digits(o).tolist()
    spec = utility_spec(space, {"units": 0.6, "colour": 0.4},
                        {"units": {"prefer": "low"}, "colour": {"table": [["red", 1.0], ["blue", 0.0]]}}, 0.2)
    model = utility_model(spec)
    order, starts, _, bounds = model.buckets
    ref = np.array([35_000, 1], dtype=np.int64)
    wide_digits = table.astype(np.int64)
    for low, high in ((0.5, 0.55), (0.9, 1.0), (0.0, 0.01)):
        want = select_offer(model.utilities, order, starts, bounds, model.best, wide_digits, space.sizes,
                            space.ordered, low, high, ref)
        assert model.select(low, high, ref) == want
    assert negotiation_space.CACHE_BYTES == ARRAY_CACHE.budget
