"""The outcome space (issue grids, outcome numbering, wording) and compiled utility functions.

A party's preferences travel as a JSON-able *utility spec* (stored in the task's private info, so
a trajectory alone is enough to recompute every utility)::

    {"issues": {name: {"range": [lo, hi], "step": s} | {"values": [...]}, ...},
     "weights": {name: w, ...},                 # normalised, sum 1
     "functions": {name: {"prefer": "low"} | {"peak": x} | {"table": [[value, score], ...]}},
     "reservation": r}

:func:`utility_model` compiles a spec into per-issue value tables and the utility of every
outcome (one kernel call), cached per spec in :data:`ARRAY_CACHE`, which bounds every per-outcome
array the negotiation caches hold by one budget, :data:`CACHE_BYTES`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from simworld.environments.negotiation.kernels import compile_utility, select_offer
from simworld.environments.negotiation.kernels import nearest_outcome as kernel_nearest_outcome
from simworld.environments.negotiation.spec import IssueSpec, Value, _value_key


def spec_key(obj: Any) -> str:
    """A short stable hash of a JSON-able object (cache keys)."""
    return hashlib.blake2b(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS), digest_size=12).hexdigest()


def format_number(x: Value, decimals: int | None = None) -> str:
    """A value as text: thousands separators, as few decimals as needed (or exactly `decimals`)."""
    if isinstance(x, str):
        return x
    if decimals is not None:
        return f"{x:,.{decimals}f}"
    if isinstance(x, float) and not x.is_integer():
        text = f"{x:,.2f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{int(x):,}"


class OutcomeSpace:
    """The issues' value grids and the mixed-radix numbering of their combinations."""

    def __init__(self, issues: Mapping[str, IssueSpec]) -> None:
        self.issues = dict(issues)
        self.names = list(issues)
        self.grids = [spec.grid() for spec in issues.values()]
        self.sizes = np.array([len(g) for g in self.grids], dtype=np.int64)
        self.size = int(math.prod(len(g) for g in self.grids))
        self.ordered = np.array([spec.numeric for spec in issues.values()], dtype=np.bool_)
        self._positions = [{_value_key(v): d for d, v in enumerate(g)} for g in self.grids]
        strides = np.ones(len(self.grids), dtype=np.int64)
        for i in range(len(self.grids) - 2, -1, -1):
            strides[i] = strides[i + 1] * self.sizes[i + 1]
        self.strides = strides
        self._shape = tuple(int(n) for n in self.sizes)
        self._radix = [(int(st), int(sz)) for st, sz in zip(strides, self.sizes)]
        self._texts: dict[int, tuple[list[str], list[bool]]] = {}
        self._values: dict[tuple[int, str], np.ndarray] = {}
        self._described: dict[int, str] = {}
        self.offers: dict[tuple[Any, ...], int] = {}
        """Outcome numbers of offered terms (values in issue order), filled by the world's make_offer."""
        self.memo: dict[Any, Any] = {}
        """Derived values that depend on the space alone (e.g. wording of preferences), by key."""

    @classmethod
    def from_spec(cls, issues: Mapping[str, Mapping[str, Any]]) -> OutcomeSpace:
        return cls({name: IssueSpec.model_validate(dict(spec)) for name, spec in issues.items()})

    def compact(self) -> dict[str, dict[str, Any]]:
        """The issues as a utility spec holds them (grid only, no wording)."""
        out: dict[str, dict[str, Any]] = {}
        for name, spec in self.issues.items():
            if spec.range is not None:
                out[name] = {"range": list(spec.range), "step": spec.step}
            else:
                out[name] = {"values": list(spec.values or [])}
        return out

    # -- numbering
    def position(self, issue: int, value: Any) -> int:
        """Digit of `value` on issue number `issue`, or -1 if it is not on the grid.

        On a numeric issue numeric text counts too ('6' is 6), since JSON turns keys into text.
        """
        d = self._positions[issue].get(_value_key(value), -1)
        if d < 0 and isinstance(value, str) and self.ordered[issue]:
            try:
                d = self._positions[issue].get(_value_key(float(value)), -1)
            except ValueError:
                pass
        return d

    @property
    def digit_table(self) -> np.ndarray:
        """`digit_table[o, i]`: the digit of outcome o on issue i (the smallest unsigned type that
        holds them; read-only). Built on first use (offer selection reads it) and held in the shared
        array cache, per grid shape: spaces with the same issue sizes share one."""
        table = ARRAY_CACHE.get("digits", self._shape)
        if table is None:
            dtype = np.uint8 if self.sizes.max() <= 256 else np.uint16 if self.sizes.max() <= 65536 else np.uint32
            table = np.empty((self.size, len(self.names)), dtype=dtype)
            for start in range(0, self.size, 1 << 18):  # (in blocks: int64 temporaries of the whole table are 8x its size)
                outcomes = np.arange(start, min(start + (1 << 18), self.size), dtype=np.int64)
                table[start:start + len(outcomes)] = (outcomes[:, None] // self.strides) % self.sizes
            table.setflags(write=False)
            ARRAY_CACHE.put("digits", self._shape, table, table.nbytes)
        return table

    def digits(self, outcome: int) -> np.ndarray:
        return np.array([(outcome // st) % sz for st, sz in self._radix], dtype=np.int64)

    def index(self, terms: Mapping[str, Any]) -> int:
        """Outcome number of complete `terms` (raises KeyError/ValueError if not on the grid)."""
        o = 0
        for i, name in enumerate(self.names):
            d = self.position(i, terms[name])
            if d < 0:
                raise ValueError(f"{name}={terms[name]!r} is not an allowed value")
            o += d * int(self.strides[i])
        return o

    def terms(self, outcome: int) -> dict[str, Value]:
        return {name: grid[(outcome // st) % sz] for name, grid, (st, sz) in zip(self.names, self.grids, self._radix)}

    # -- wording
    def _wording(self, i: int) -> tuple[list[str], list[bool]]:
        """Text of every grid value of issue i, and whether it is a scenario label."""
        cached = self._texts.get(i)
        if cached is None:
            spec = self.issues[self.names[i]]
            labels = [""] * len(self.grids[i])
            for key, text in spec.labels.items():
                d = self.position(i, key)
                if d >= 0:
                    labels[d] = text
            texts = [labels[d] or f"{spec.prefix}{format_number(v, spec.decimals)}{spec.suffix}"
                     for d, v in enumerate(self.grids[i])]
            cached = self._texts[i] = (texts, [bool(x) for x in labels])
        return cached

    def value_texts(self, name: str) -> list[str]:
        """Text of every grid value of an issue, in grid order."""
        return self._wording(self.names.index(name))[0]

    def value_text(self, name: str, value: Value) -> str:
        """A value as written on its own: '$9,800', '12-month', 'dealer financing'."""
        i = self.names.index(name)
        d = self.position(i, value)
        if d < 0:
            spec = self.issues[name]
            return f"{spec.prefix}{format_number(value, spec.decimals)}{spec.suffix}"
        return self._wording(i)[0][d]

    def label(self, name: str) -> str:
        return self.issues[name].label or name.replace("_", " ")

    def describe_value(self, name: str, value: Value) -> str:
        """A value as part of a sentence: 'a price of $9,800' (the issue's phrase) or 'price $9,800'."""
        i = self.names.index(name)
        spec = self.issues[name]
        d = self.position(i, value)
        texts, labelled = self._wording(i)
        text = texts[d] if d >= 0 else self.value_text(name, value)
        if d >= 0 and labelled[d]:
            return text
        if spec.phrase:
            return spec.phrase.replace("{value}", text)
        return f"{self.label(name)} {text}"

    def describe_outcome(self, outcome: int) -> str:
        """`describe` of an outcome number (memoised: offers repeat)."""
        text = self._described.get(outcome)
        if text is None:
            if len(self._described) >= 100_000:
                self._described.clear()
            phrases = self._phrases
            parts = [phrases[i][(outcome // st) % sz] for i, (st, sz) in enumerate(self._radix)]
            text = self._described[outcome] = ("".join(parts) if len(parts) <= 1
                                               else ", ".join(parts[:-1]) + " and " + parts[-1])
        return text

    @functools.cached_property
    def _phrases(self) -> list[list[str]]:
        # describe_value of every grid value, per issue
        return [[self.describe_value(name, v) for v in grid] for name, grid in zip(self.names, self.grids)]

    def describe(self, terms: Mapping[str, Value]) -> str:
        """`terms` in words: 'a price of $9,800, a 12-month warranty and dealer financing'."""
        parts = [self.describe_value(name, terms[name]) for name in self.names if name in terms]
        if len(parts) <= 1:
            return "".join(parts)
        return ", ".join(parts[:-1]) + " and " + parts[-1]

    # -- value functions
    def normalised_values(self, i: int, function: Mapping[str, Any]) -> np.ndarray:
        """Normalised value of every grid value of issue i under `function` (cached, read-only)."""
        key = (i, orjson.dumps(function, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode())
        cached = self._values.get(key)
        if cached is None:
            cached = normalise(value_scores(self, i, function))
            cached.setflags(write=False)
            self._values[key] = cached
        return cached


# ----------------------------------------------------------------------------------------------
# Value functions


def _table_pairs(table: Any) -> list[tuple[Any, float]]:
    return [(k, float(v)) for k, v in (table.items() if isinstance(table, Mapping) else table)]


def value_scores(space: OutcomeSpace, i: int, function: Mapping[str, Any]) -> np.ndarray:
    """Raw scores of every grid value of issue i under one value function (before normalising)."""
    spec = space.issues[space.names[i]]
    grid = space.grids[i]
    if "prefer" in function:
        x = np.array(grid, dtype=np.float64) if spec.numeric else np.arange(len(grid), dtype=np.float64)
        return x if function["prefer"] == "high" else -x
    if "peak" in function:
        if not spec.numeric:
            raise ValueError("peak needs a numeric issue")
        # (a peak outside the issue's range is refused by validate only: BargainingParams.scenario_problems)
        return -np.abs(np.array(grid, dtype=np.float64) - float(function["peak"]))
    pairs = _table_pairs(function["table"])
    if spec.continuous:
        xs = np.array([float(k) for k, _ in pairs])
        ys = np.array([v for _, v in pairs])
        order = np.argsort(xs, kind="stable")
        return np.interp(np.array(grid, dtype=np.float64), xs[order], ys[order])
    scores = np.full(len(grid), np.nan)
    for k, v in pairs:
        d = space.position(i, k)
        if d < 0:
            raise ValueError(f"table scores unknown value {k!r}")
        scores[d] = v
    missing = [repr(grid[d]) for d in np.flatnonzero(np.isnan(scores))]
    if missing:
        raise ValueError(f"table has no score for {', '.join(missing)}")
    return scores


def normalise(scores: np.ndarray) -> np.ndarray:
    """Scale to span exactly [0, 1] (a constant function cannot be normalised)."""
    lo, hi = float(scores.min()), float(scores.max())
    if not hi > lo:
        raise ValueError("the value function is constant over the issue, so it cannot be normalised")
    return (scores - lo) / (hi - lo)


@dataclass(frozen=True)
class UtilityModel:
    """A party's compiled utility: weighted value tables and the utility of every outcome."""

    key: str
    space: OutcomeSpace
    weights: np.ndarray
    tables: np.ndarray
    """`tables[i, d]`: weighted value of value d of issue i (padded with 0)."""
    utilities: np.ndarray
    """`utilities[o]` for every outcome o."""
    reservation: float
    buckets: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    """`(order, starts, bucket, bounds)` of `kernels.utility_buckets(utilities)` (made by
    `kernels.compile_utility`): outcomes indexed by utility, for `select` and the Pareto frontier."""
    best: int
    """The best outcome (lowest index among equals)."""

    def utility(self, terms: Mapping[str, Any]) -> float:
        return float(self.utilities[self.space.index(terms)])

    def select(self, low: float, high: float, ref: np.ndarray) -> int:
        """`kernels.select_offer` over this model: the outcome in the utility band `[low, high]`
        closest to the reference digits `ref` (all -1: none); see the kernel for the fallbacks."""
        order, starts, _, bounds = self.buckets
        space = self.space
        return int(select_offer(self.utilities, order, starts, bounds, self.best, space.digit_table, space.sizes,
                                space.ordered, low, high, ref))


def limited_model(model: UtilityModel, allowed: np.ndarray) -> UtilityModel:
    """`model` with every outcome that takes a value outside `allowed` (`allowed[i, d]`: value d of
    issue i; every issue must allow one) worth less than -1, so no reservation value or utility band
    admits it. Allowed outcomes keep their exact utilities (the same sums of the same table values),
    and the best outcome becomes the best allowed one."""
    tables = np.where(allowed, model.tables, model.tables - 2.0)
    key = model.key + ":limited:" + hashlib.blake2b(np.packbits(allowed).tobytes(), digest_size=8).hexdigest()
    return _model(key, model.space, model.weights, tables, model.reservation)


def _model(key: str, space: OutcomeSpace, weights: np.ndarray, tables: np.ndarray, reservation: float) -> UtilityModel:
    utilities, *buckets, best = compile_utility(tables, space.sizes)
    for array in (utilities, *buckets):
        array.setflags(write=False)
    return UtilityModel(key, space, weights, tables, utilities, float(reservation), tuple(buckets), int(best))


class PreferenceError(ValueError):
    """A party's preferences do not fit the issues; `issue` names the issue at fault (if one is)."""

    def __init__(self, message: str, issue: str | None = None) -> None:
        super().__init__(message)
        self.issue = issue


def compile_tables(space: OutcomeSpace, weights: Mapping[str, float],
                   functions: Mapping[str, Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised weights and weighted value tables of one party (raises PreferenceError)."""
    unknown = sorted(set(weights) - set(space.names)) + sorted(set(functions) - set(space.names))
    if unknown:
        raise PreferenceError(f"unknown issue {unknown[0]!r}", unknown[0])
    w = np.array([float(weights.get(name, 0.0)) for name in space.names])
    if not w.sum() > 0:
        raise PreferenceError("at least one weight must be positive")
    w = w / w.sum()
    return w, w[:, None] * value_tables(space, w, functions)


def value_tables(space: OutcomeSpace, weights: Any, functions: Mapping[str, Mapping[str, Any]]) -> np.ndarray:
    """`values[i, d]`: normalised value of value d of issue i, for the issues weighing more than 0
    (`weights` in issue order; other rows and the padding stay 0). Raises PreferenceError."""
    values = np.zeros((len(space.names), int(space.sizes.max())))
    for i, name in enumerate(space.names):
        if weights[i] == 0:
            continue
        if name not in functions:
            raise PreferenceError(f"issue {name!r} has a weight but no value function", name)
        try:
            row = space.normalised_values(i, functions[name])
        except ValueError as exc:
            raise PreferenceError(str(exc), name) from None
        values[i, : len(row)] = row
    return values


class ArrayCache:
    """An LRU cache of values that hold per-outcome arrays, bounded by the bytes of those arrays all
    together (`budget`) and by a number of entries of each kind (`limits`).

    Over the budget, the least recently used entries are dropped, the kinds of the first group of
    `evict` before those of the next, but never the `keep[kind]` most recently used entries of a
    kind (what the running episode uses): so the cache holds at most the budget or, when those
    alone are more, just those. An entry may *use* others (`put(..., uses=)`): it holds their
    arrays too (an analysis holds its two models' utilities), so it is dropped with them and never
    keeps arrays alive that the cache no longer counts.
    """

    def __init__(self, budget: int, limits: Mapping[str, int], keep: Mapping[str, int],
                 evict: tuple[tuple[str, ...], ...]) -> None:
        self.budget = budget
        self.limits = dict(limits)
        self.keep = {kind: keep.get(kind, 0) for kind in self.limits}
        self.evict = evict
        self.held = 0
        """Bytes counted for the entries held."""
        # Per kind, least recently used first: [value, bytes, uses, last use].
        self._kinds: dict[str, OrderedDict[Any, list[Any]]] = {kind: OrderedDict() for kind in self.limits}
        self._users: dict[tuple[str, Any], set[tuple[str, Any]]] = {}
        self._clock = itertools.count()

    def get(self, kind: str, key: Any) -> Any:
        """The value held for (kind, key), now the most recently used, or None."""
        entries = self._kinds[kind]
        entry = entries.get(key)
        if entry is None:
            return None
        entries.move_to_end(key)
        entry[3] = next(self._clock)
        return entry[0]

    def peek(self, kind: str, key: Any) -> Any:
        """`get` without making it recently used."""
        entry = self._kinds[kind].get(key)
        return None if entry is None else entry[0]

    def put(self, kind: str, key: Any, value: Any, nbytes: int, uses: tuple[tuple[str, Any], ...] = ()) -> None:
        """Hold `value`, counting `nbytes` (the arrays it holds that no entry in `uses` holds), and
        drop entries while over a limit."""
        entries = self._kinds[kind]
        if key in entries:
            self._drop(kind, key)
        if uses:
            uses = tuple([u for u in uses if u[1] in self._kinds[u[0]]])
            for u in uses:
                users = self._users.get(u)
                if users is None:
                    users = self._users[u] = set()
                users.add((kind, key))
        entries[key] = [value, nbytes, uses, next(self._clock)]
        self.held += nbytes
        if len(entries) > self.limits[kind]:
            self._drop(kind, next(iter(entries)))
        while self.held > self.budget:
            victim = self._victim()
            if victim is None:
                break
            self._drop(*victim)

    def _victim(self) -> tuple[str, Any] | None:
        for group in self.evict:
            oldest: tuple[int, str, Any] | None = None
            for kind in group:
                entries = self._kinds[kind]
                if len(entries) > self.keep[kind]:
                    key = next(iter(entries))
                    if oldest is None or entries[key][3] < oldest[0]:
                        oldest = (entries[key][3], kind, key)
            if oldest is not None:
                return oldest[1], oldest[2]
        return None

    def _drop(self, kind: str, key: Any) -> None:
        _, nbytes, uses, _ = self._kinds[kind].pop(key)
        self.held -= nbytes
        me = (kind, key)
        for u in uses:
            users = self._users.get(u)
            if users is not None:
                users.discard(me)
                if not users:
                    del self._users[u]
        if self._users:
            for user_kind, user in self._users.pop(me, ()):
                if user in self._kinds[user_kind]:
                    self._drop(user_kind, user)

    def clear(self) -> None:
        for kind, entries in self._kinds.items():
            while entries:
                self._drop(kind, next(iter(entries)))

    def items(self) -> list[tuple[str, Any, Any]]:
        """(kind, key, value) of every entry held."""
        return [(kind, key, entry[0]) for kind, entries in self._kinds.items() for key, entry in entries.items()]

    def counts(self) -> dict[str, int]:
        """Entries held, by kind."""
        return {kind: len(entries) for kind, entries in self._kinds.items()}


CACHE_BYTES = 1 << 29
"""The most bytes of per-outcome arrays that the negotiation caches hold together, whatever the
number of episodes (512 MiB): compiled utility models (utilities and their bucket index, 17 bytes
an outcome), digit tables (1 to 36 bytes an outcome) and analyses' Pareto frontiers. Only what the
running episode uses may stay beyond it: its two models, their analysis and the digit table
(about 0.9 GB for five issues at `spec.MAX_OUTCOMES`, 1.6 GB for the most wasteful shapes)."""

ARRAY_CACHE = ArrayCache(CACHE_BYTES, limits={"model": 64, "recent": 16, "analysis": 32, "digits": 16},
                         keep={"model": 2, "analysis": 1, "digits": 1}, evict=(("model", "analysis"), ("digits",)))
"""The shared cache: "model" (spec key -> UtilityModel), "recent" (id of a spec object -> (spec,
model): no bytes of its own, dropped with its model), "analysis" (see `analysis.analyse`) and
"digits" (issue sizes -> `OutcomeSpace.digit_table`, kept over models: every episode in the space
uses it)."""


def model_bytes(model: UtilityModel) -> int:
    """Bytes of the arrays a utility model holds."""
    return (model.utilities.nbytes + sum(a.nbytes for a in model.buckets) + model.tables.nbytes
            + model.weights.nbytes)


_SPACES: OrderedDict[str, OutcomeSpace] = OrderedDict()


def outcome_space(issues: Mapping[str, Mapping[str, Any]]) -> OutcomeSpace:
    """The outcome space of compact issue specs, cached."""
    key = spec_key(issues)
    space = _SPACES.get(key)
    if space is None:
        space = _SPACES[key] = OutcomeSpace.from_spec(issues)
        while len(_SPACES) > 16:
            _SPACES.popitem(last=False)
    return space


def utility_model(spec: Mapping[str, Any], profile: PartyProfile | None = None) -> UtilityModel:
    """Compile (or fetch) the utility model of a utility spec (see the module docstring).

    The same spec object (an episode's private info, asked for by the task, both agents and the
    metrics) is answered from the cache by identity without re-hashing it. `profile`, the
    party's profile the spec was made from (`PartyProfile.spec`), saves recompiling its value
    functions.
    """
    recent = ARRAY_CACHE.get("recent", id(spec))
    if recent is not None and recent[0] is spec and recent[1].reservation == spec["reservation"]:
        return recent[1]  # (its model needs no touch: the running episode's two are kept anyway)
    model = _utility_model(spec, profile)
    # (holding `spec` keeps its id from being reused; dropped with the model, whose arrays it shares)
    ARRAY_CACHE.put("recent", id(spec), (spec, model), 0, uses=(("model", model.key),))
    return model


def _utility_model(spec: Mapping[str, Any], profile: PartyProfile | None = None) -> UtilityModel:
    key = spec_key({k: spec[k] for k in ("issues", "weights", "functions")})
    cached = ARRAY_CACHE.get("model", key)
    if cached is not None:
        if cached.reservation == spec["reservation"]:
            return cached
        return dataclasses.replace(cached, reservation=float(spec["reservation"]))
    if profile is not None:
        space = profile.space
        weights = np.array([float(spec["weights"].get(name, 0.0)) for name in space.names])
        weights = weights / weights.sum()
        tables = weights[:, None] * profile.values  # what compile_tables gives, without re-reading the functions
    else:
        space = outcome_space(spec["issues"])
        weights, tables = compile_tables(space, spec["weights"], spec["functions"])
    model = _model(key, space, weights, tables, float(spec["reservation"]))
    ARRAY_CACHE.put("model", key, model, model_bytes(model))
    return model


def utility_spec(space: OutcomeSpace, weights: Mapping[str, float], functions: Mapping[str, Mapping[str, Any]],
                 reservation: float) -> dict[str, Any]:
    """A JSON-able utility spec: normalised weights, value functions as plain data."""
    plain_functions: dict[str, Any] = {}
    for name, fn in functions.items():
        if weights.get(name, 0.0) <= 0:
            continue
        if "table" in fn:
            i = space.names.index(name)
            if space.issues[name].continuous:
                pairs = [[float(k), v] for k, v in _table_pairs(fn["table"])]
            else:  # keys as the grid's own values (JSON may have turned 6 into '6')
                pairs = [[space.grids[i][d] if (d := space.position(i, k)) >= 0 else k, v]
                         for k, v in _table_pairs(fn["table"])]
            plain_functions[name] = {"table": pairs}
        else:
            plain_functions[name] = dict(fn)
    return {
        "issues": space.compact(),
        "weights": _spec_weights(space, weights),
        "functions": plain_functions,
        "reservation": round(float(reservation), 12),
    }


def _spec_weights(space: OutcomeSpace, weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {name: round(weights.get(name, 0.0) / total, 12) for name in space.names}


class PartyProfile:
    """A party's preferences compiled once for an outcome space.

    Episodes that jitter the party's weights and reservation (the `negotiate` task) share its value
    tables and the spec's issues and functions: `spec` only re-normalises the weights, and
    `utility_model(spec, profile)` only rescales the tables' rows. Treat the shared parts of the
    specs it makes as read-only.
    """

    def __init__(self, space: OutcomeSpace, weights: Mapping[str, float],
                 functions: Mapping[str, Mapping[str, Any]]) -> None:
        self.space = space
        self.base = utility_spec(space, weights, functions, 0.0)
        self.values = value_tables(space, [weights.get(name, 0.0) for name in space.names], functions)
        self.values.setflags(write=False)

    def spec(self, weights: Mapping[str, float], reservation: float) -> dict[str, Any]:
        """The utility spec of these preferences with `weights` (same issues weighted) and `reservation`;
        equal to `utility_spec(space, weights, functions, reservation)`."""
        spec = dict(self.base)
        spec["weights"] = _spec_weights(self.space, weights)
        spec["reservation"] = round(float(reservation), 12)
        return spec


def nearest_outcome(model: UtilityModel, target: float) -> int:
    """The outcome whose utility is closest to `target` (ties: lowest index)."""
    order, starts, _, bounds = model.buckets
    return int(kernel_nearest_outcome(model.utilities, order, starts, bounds, float(target)))


_CHECKED: OrderedDict[bytes, list[tuple[tuple[str, ...], str]]] = OrderedDict()


def check_preferences(issues: Mapping[str, IssueSpec], parties: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """Problems of the parties' preferences against the issues, as (location, message) pairs
    (location relative to the world params); empty when they compile. Cached."""
    key = orjson.dumps([[n, s.model_dump_json()] for n, s in issues.items()]
                       + [[r, p.model_dump_json(exclude={"brief", "temperaments"})] for r, p in parties.items()])
    cached = _CHECKED.get(key)
    if cached is not None:
        return cached
    from simworld.errors import suggest

    space = OutcomeSpace(issues)
    problems: list[tuple[tuple[str, ...], str]] = []
    for role, party in parties.items():
        bad = False
        for section in ("weights", "utilities"):
            for name in getattr(party, section):
                if name not in issues:
                    problems.append((("parties", role, section, name),
                                     f"unknown issue {name!r}{suggest(name, issues)}"))
                    bad = True
        if bad:
            continue
        functions = {n: f.model_dump(exclude_none=True) for n, f in party.utilities.items()}
        try:
            compile_tables(space, party.weights, functions)
        except PreferenceError as exc:
            where = ("parties", role, "utilities") + ((exc.issue,) if exc.issue in party.utilities else ())
            if exc.issue is None:
                where = ("parties", role, "weights")
            problems.append((where, str(exc)))
    _CHECKED[key] = problems
    while len(_CHECKED) > 64:
        _CHECKED.popitem(last=False)
    return problems
