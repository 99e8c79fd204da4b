"""Scenario-facing parameter models of the bargaining world and its task.

World parameters (``world.params``) declare what is negotiated and how: the issues, the protocol
(round limit, deadline cost) and what the information tools answer. Task parameters
(``task.params``) declare who negotiates: each party's private preferences and reservation value,
plus optional per-episode jitter. Keeping preferences in the task means a variation over a
reservation value re-samples a task, not the world.

An issue is either continuous (``range: [lo, hi]`` with a ``step``) or discrete (``values``).
A party's utility is additive: ``u(o) = sum_i w_i * v_i(o_i)`` with weights normalised to sum 1
and each value function ``v_i`` normalised to span exactly [0, 1] over the issue's values, so
every party's best outcome scores 1 and its worst 0.
"""

from __future__ import annotations

import keyword
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

MAX_OUTCOMES = 20_000_000
"""Largest outcome space a scenario may declare (the analysis holds a few arrays of this size)."""

PROTOCOL_TOOLS = ("make_offer", "accept_offer", "reject_offer", "walk_away")

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

Value = str | int | float


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _is_integral(x: float) -> bool:
    return float(x).is_integer()


class IssueSpec(_Strict):
    """One negotiated issue: continuous (`range` + `step`) or discrete (`values`)."""

    range: tuple[float, float] | None = Field(default=None, description="[low, high] of a continuous issue.")
    step: float | None = Field(default=None, gt=0, description="Grid step of a continuous issue.")
    values: list[Value] | None = Field(default=None, description="The allowed values of a discrete issue.")
    label: str = Field(default="", description="Human name (default: the issue key with spaces).")
    description: str = Field(default="", description="What the issue means (shown in the make_offer schema).")
    prefix: str = Field(default="", description="Written before a value, e.g. '$'.")
    suffix: str = Field(default="", description="Written after a value, e.g. ' months'.")
    phrase: str = Field(default="", description="How a value reads in a sentence, with {value}, e.g. "
                        "'a {value} warranty'. Default: '<label> <value>'.")
    decimals: int | None = Field(default=None, ge=0, le=6, description="Decimals a number is written with "
                                 "(default: as few as needed), e.g. 2 for prices in dollars and cents.")
    labels: dict[Value, str] = Field(default_factory=dict, description="Display text of values of the issue, "
                                     "e.g. {dealer: dealer financing, 0: no warranty}.")

    @model_validator(mode="after")
    def _shape(self) -> IssueSpec:
        if (self.range is None) == (self.values is None):
            raise ValueError("an issue needs either range (with step) or values, not both")
        if self.range is not None:
            lo, hi = self.range
            if self.step is None:
                raise ValueError("a continuous issue (range) needs a step")
            if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
                raise ValueError(f"range must be [low, high] with low <= high, got [{lo}, {hi}]")
            k = (hi - lo) / self.step
            if abs(k - round(k)) > 1e-6 * max(1.0, k):
                raise ValueError(f"range [{lo}, {hi}] is not a whole number of steps of {self.step}")
        else:
            if self.step is not None:
                raise ValueError("step is only for a continuous issue (range)")
            if not self.values:
                raise ValueError("values must not be empty")
            if len(set(map(_value_key, self.values))) != len(self.values):
                raise ValueError("values must be distinct")
        if self.phrase and "{value}" not in self.phrase:
            raise ValueError("phrase must contain {value}")
        return self

    def position(self, value: Any) -> int:
        """Index of `value` on the issue's grid, or -1 (numeric text counts on a numeric issue: JSON
        turns mapping keys into text). As :meth:`OutcomeSpace.position`, without building the grid."""
        if isinstance(value, str) and self.numeric:
            try:
                value = float(value)
            except ValueError:
                pass
        if self.values is not None:
            keys = [_value_key(v) for v in self.values]
            return keys.index(_value_key(value)) if _value_key(value) in keys else -1
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return -1
        assert self.range is not None and self.step is not None
        k = round((value - self.range[0]) / self.step)
        return k if 0 <= k < self.size and _value_key(self.value_at(k)) == _value_key(value) else -1

    def _values_in_words(self) -> str:
        if self.range is not None:
            return f"[{self.range[0]:g}, {self.range[1]:g}] in steps of {self.step:g}"
        shown = ", ".join(map(str, (self.values or [])[:12]))
        return f"values {shown}" + (", ..." if len(self.values or []) > 12 else "")

    def bounds(self) -> tuple[float, float]:
        """Lowest and highest value of a numeric issue."""
        if self.range is not None:
            return float(self.range[0]), float(self.range[1])
        numbers = [float(v) for v in self.values or []]
        return min(numbers), max(numbers)

    @property
    def continuous(self) -> bool:
        return self.range is not None

    @property
    def integral(self) -> bool:
        """A continuous issue whose grid is whole numbers (offered as integers)."""
        return (self.range is not None and self.step is not None and _is_integral(self.range[0])
                and _is_integral(self.step))

    @property
    def size(self) -> int:
        if self.range is not None:
            assert self.step is not None
            return int(round((self.range[1] - self.range[0]) / self.step)) + 1
        assert self.values is not None
        return len(self.values)

    def value_at(self, k: int) -> Value:
        """The k-th allowed value."""
        if self.values is not None:
            return self.values[k]
        assert self.range is not None and self.step is not None
        if self.integral:
            return int(self.range[0]) + k * int(self.step)
        return round(self.range[0] + k * self.step, 10)

    def grid(self) -> list[Value]:
        """Every allowed value, in order."""
        if self.values is not None:
            return list(self.values)
        return [self.value_at(k) for k in range(self.size)]

    @property
    def numeric(self) -> bool:
        return self.values is None or all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values)


def _located(title: str, problems: list[tuple[tuple[Any, ...], str]]) -> ValidationError:
    """A ValidationError with each problem at its own location (relative to the model validated), so
    that a scenario error names the YAML line of the offending key."""
    # (no context is given, so pydantic keeps each message as written: braces included)
    return ValidationError.from_exception_data(title, [
        InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=None)
        for loc, message in problems])


def _value_key(v: Any) -> Any:
    """Dictionary key of an issue value: 6 and 6.0 are the same value, '6' is not."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


class ValueFunction(_Strict):
    """How much a party likes each value of one issue (normalised to [0, 1] afterwards).

    Exactly one of: ``prefer: low|high`` (linear in the value; for text values, in listed order),
    ``peak: x`` (1 at x, falling linearly to the far end), ``table`` (value -> score; on a
    continuous issue the points are interpolated linearly).
    """

    prefer: Literal["low", "high"] | None = Field(default=None, description="'low' or 'high': linear in the "
                                                  "value (for text values, in listed order).")
    peak: float | None = Field(default=None, description="The best value, within the issue's range: 1 there, "
                               "falling linearly to the far end of the issue.")
    table: dict[Value, float] | None = Field(default=None, description="Value -> score; on a continuous issue "
                                             "the points are interpolated linearly.")

    @model_validator(mode="after")
    def _one(self) -> ValueFunction:
        given = [n for n in ("prefer", "peak", "table") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of prefer (low|high), peak or table")
        if self.table is not None and not self.table:
            raise ValueError("table must not be empty")
        return self


class Temperament(_Strict):
    """One disposition a party may negotiate with: the `negotiate` task draws one per episode (each
    equally likely), adds its text to the party's brief, and the scripted strategies read its
    parameters (all relative to the strategy's own settings; the defaults change nothing)."""

    name: str = Field(min_length=1, description="Short name, recorded in the episode's metrics.")
    text: str = Field(default="", description="Who the party is today, in words: added to its brief.")
    concession: float = Field(default=1.0, gt=0.0, le=10.0, description="How fast it concedes, as a multiple: "
                              "time-based exponents are divided by it, tit-for-tat reciprocates this multiple.")
    patience: float = Field(default=1.0, gt=0.0, le=1.0, description="Share of the offers it means to use: "
                            "time-based curves reach the reservation value by then, and once it has passed any "
                            "standing offer the strategy would accept at the deadline is accepted.")
    anchor: float = Field(default=0.0, ge=-0.5, le=0.5, description="Moves the aspiration drawn for its "
                          "opening this share of the way up to 1 (+: opens more ambitiously) or down to 0 (-).")
    research: float = Field(default=1.0, ge=0.0, le=1.0, description="Chance that it looks things up (the "
                            "information tools it has) before its first offer.")
    rejects: float | None = Field(default=None, ge=0.0, le=1.0, description="Chance of an explicit rejection "
                                  "before a counter-offer (default: the strategy's reject_first).")
    remarks: list[str] = Field(default_factory=list, description="Sentences it now and then adds to an offer, "
                               "in its voice.")


class PartySpec(_Strict):
    """One party's private preferences."""

    weights: dict[str, float] = Field(description="Importance of each issue (normalised to sum 1; "
                                      "issues not listed weigh 0).")
    utilities: dict[str, ValueFunction] = Field(description="Value function of each weighted issue.")
    reservation: float = Field(ge=0.0, lt=1.0, description="Utility of no deal, in [0, 1).")
    brief: str = Field(default="", description="Role-play goal in words, put before the preferences.")
    temperaments: list[Temperament] = Field(default_factory=list, description="Dispositions drawn from per "
                                            "episode (none: the strategy as configured).")

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        if any(not math.isfinite(w) or w < 0 for w in v.values()):
            raise ValueError("weights must be finite and >= 0")
        if sum(v.values()) <= 0:
            raise ValueError("at least one weight must be positive")
        return v




class IssueLimit(_Strict):
    """What a policy allows on one issue: a numeric bound, or a set of allowed values."""

    min: int | float | None = Field(default=None, description="Least allowed value (numeric issues).")
    max: int | float | None = Field(default=None, description="Greatest allowed value (numeric issues).")
    values: list[Value] | None = Field(default=None, description="The allowed values.")

    @model_validator(mode="after")
    def _some(self) -> IssueLimit:
        if self.min is None and self.max is None and self.values is None:
            raise ValueError("give min, max or values")
        if self.min is not None and self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max:g}) is below min ({self.min:g})")
        return self

    def allows(self, value: Value) -> bool:
        if self.values is not None and _value_key(value) not in {_value_key(v) for v in self.values}:
            return False
        if self.min is not None or self.max is not None:
            if isinstance(value, str):
                return False
            if (self.min is not None and value < self.min - 1e-9) or (self.max is not None and value > self.max + 1e-9):
                return False
        return True


class PolicySpec(_Strict):
    """A policy check_policy reports: its text and, optionally, the limits it sets on issues."""

    text: str = Field(description="The policy in words (what check_policy answers).")
    limits: dict[str, IssueLimit] = Field(default_factory=dict, description="Issue -> what the policy allows. "
                                          "A scripted party that has looked the policy up offers and accepts "
                                          "only terms within these limits.")


class StockSpec(_Strict):
    """How get_inventory's numbers read as a stock level, from scarce (0) to plentiful (1)."""

    owner: str = Field(description="The party whose stock it is (its counterpart learns it by get_inventory too).")
    levels: dict[str, tuple[float, float]] = Field(description="Inventory key -> [scarce, plentiful]: the values "
                                                   "that read as scarce and as plentiful (linear in between, "
                                                   "clipped); the stock level is their mean.")
    vary: bool = Field(default=False, description="Draw each of these numbers per episode, uniformly between its "
                       "scarce and plentiful values (whole numbers stay whole), instead of always reporting "
                       "inventory's: the stock differs from episode to episode without a variation per value.")

    def draw(self, inventory: dict[str, Any], rng: Any) -> dict[str, Any]:
        """`inventory` with the numbers in `levels` drawn for one episode (see `vary`)."""
        out = dict(inventory)
        for (key, (scarce, plentiful)), u in zip(self.levels.items(), rng.random(len(self.levels))):
            value = scarce + float(u) * (plentiful - scarce)
            out[key] = int(round(value)) if isinstance(inventory.get(key), int) else round(value, 4)
        return out

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        if not v:
            raise ValueError("name at least one inventory key")
        for key, (scarce, plentiful) in v.items():
            if not (math.isfinite(scarce) and math.isfinite(plentiful)) or scarce == plentiful:
                raise ValueError(f"{key}: give two different finite values [scarce, plentiful]")
        return v

    def level(self, inventory: dict[str, Any]) -> float | None:
        """The stock level (0 scarce .. 1 plentiful) an inventory answer reads as, or None without the numbers."""
        shares = []
        for key, (scarce, plentiful) in self.levels.items():
            value = inventory.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                shares.append(min(max((value - scarce) / (plentiful - scarce), 0.0), 1.0))
        return sum(shares) / len(shares) if shares else None


class BargainingParams(_Strict):
    """``world.params`` of the bargaining world: issues, the two parties, protocol, information."""

    issues: dict[str, IssueSpec] = Field(description="The negotiated issues, in offer order.")
    parties: dict[str, PartySpec] = Field(description="Exactly two parties: the scenario's two roles, each "
                                          "keyed by its role name.")
    max_rounds: int = Field(default=10, ge=1, le=1000, description="Most offers in an episode (both "
                            "parties together); after the last one the responder can only accept or walk away.")
    deadline_cost: float = Field(default=0.0, ge=0.0, le=1.0, description="Utility each party loses per "
                                 "round before agreement (agreement on offer k costs (k-1) x this).")
    subject: str = Field(default="the deal", description="What is negotiated, in words ('a used 2017 Civic').")
    market: dict[str, tuple[float, float]] = Field(default_factory=dict, description="check_market_price: "
                                                   "item -> [low, high] band comparable listings are drawn from.")
    comparables: int = Field(default=5, ge=1, le=100, description="Listings per market item.")
    inventory: dict[str, int | float | str] = Field(default_factory=dict, description="What get_inventory reports.")
    policies: dict[str, PolicySpec] = Field(default_factory=dict, description="check_policy: topic -> text, "
                                            "or {text, limits} for a policy that bounds offers.")
    stock: StockSpec | None = Field(default=None, description="How a scripted party reads get_inventory: a "
                                    "plentiful stock makes its owner concede faster and its counterpart hold "
                                    "out, a scarce one the reverse.")

    @field_validator("issues")
    @classmethod
    def _names(cls, v: dict[str, IssueSpec]) -> dict[str, IssueSpec]:
        if not v:
            raise ValueError("at least one issue is required")
        for name in v:
            if not _NAME.match(name) or keyword.iskeyword(name) or hasattr(BaseModel, name):
                raise ValueError(f"issue name {name!r} must be a lower-case identifier (letters, digits, _) "
                                 "that is not a Python keyword")
        size = math.prod(i.size for i in v.values())
        if size > MAX_OUTCOMES:
            raise ValueError(f"the outcome space has {size:,} outcomes; at most {MAX_OUTCOMES:,} are supported")
        return v

    @field_validator("parties")
    @classmethod
    def _two(cls, v: dict[str, PartySpec]) -> dict[str, PartySpec]:
        if len(v) != 2:
            raise ValueError(f"exactly two parties are supported, got {len(v)}")
        return v

    @field_validator("policies", mode="before", json_schema_input_type=dict[str, str | PolicySpec])
    @classmethod
    def _policy_texts(cls, v: Any) -> Any:
        # A policy given as text alone is a policy without limits.
        if isinstance(v, dict):
            return {topic: {"text": p} if isinstance(p, str) else p for topic, p in v.items()}
        return v

    @field_validator("market")
    @classmethod
    def _bands(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for item, (low, high) in v.items():
            if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high):
                raise ValueError(f"market.{item}: give [low, high] with 0 <= low <= high")
        return v

    @model_validator(mode="after")
    def _information_fits(self) -> BargainingParams:
        problems: list[tuple[tuple[str, ...], str]] = []
        if self.stock is not None:
            if self.stock.owner not in self.parties:
                problems.append((("stock", "owner"), f"{self.stock.owner!r} is not one of the parties "
                                 f"({', '.join(self.parties)})"))
            for key in self.stock.levels:
                value = self.inventory.get(key)
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    problems.append((("stock", "levels", key), f"inventory has no number {key!r}"))
        allowed: dict[str, set[int]] = {}
        for topic, policy in self.policies.items():
            for name, limit in policy.limits.items():
                where = ("policies", topic, "limits", name)
                issue = self.issues.get(name)
                if issue is None:
                    from simworld.errors import suggest

                    problems.append((where, f"unknown issue {name!r}{suggest(name, self.issues)}"))
                    continue
                if (limit.min is not None or limit.max is not None) and not issue.numeric:
                    problems.append((where, "min and max need a numeric issue; give values"))
                    continue
                grid = issue.grid()
                if limit.values is not None:
                    known = {_value_key(v) for v in grid}
                    off = [v for v in limit.values if _value_key(v) not in known]
                    if off:
                        problems.append((where, f"{off[0]!r} is not a value of the issue"))
                        continue
                ok = {d for d, v in enumerate(grid) if limit.allows(v)}
                allowed[name] = allowed.get(name, set(range(len(grid)))) & ok
                if not allowed[name]:
                    problems.append((where, "no value of the issue is within this limit and the other policies' "
                                     "limits on it"))
        if problems:
            raise _located(type(self).__name__, problems)
        return self

    def scenario_problems(self, scenario: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
        """(path, message) of what a new scenario is refused for (scenario data as in its file; see
        simworld.scenario), checked when a scenario is validated, not when a recorded run's world is
        rebuilt, so runs recorded before these rules still replay and score:

        - each party is a role, keyed by its name, and each role a party, or no episode can run (a
          role's strategy has no preferences to negotiate by);
        - a label names a value of its issue (else it is never shown);
        - a utility's peak is within its issue's range (else the function just falls towards one
          end: prefer low/high says that, a peak outside is a typo).
        """
        problems = self._label_problems() + self._peak_problems()
        roles = scenario.get("roles")
        if not isinstance(roles, dict) or not roles:
            return problems
        from simworld.errors import suggest

        parties, names = ", ".join(self.parties), ", ".join(map(str, roles))
        problems += [
            (("world", "params", "parties", party), f"party {party!r} is no role of this scenario (roles: {names})"
             f"{suggest(party, roles)}; the parties are keyed by role name")
            for party in self.parties if party not in roles]
        problems += [(("roles", role), f"role {role!r} is not one of the parties in world.params.parties ({parties}): "
                      "each role negotiates by its party's preferences") for role in roles if role not in self.parties]
        return problems

    def _label_problems(self) -> list[tuple[tuple[Any, ...], str]]:
        return [(("world", "params", "issues", name, "labels", key), f"{key!r} is not a value of the issue "
                 f"({issue._values_in_words()}); a label is the text of one of its values")
                for name, issue in self.issues.items() for key in issue.labels if issue.position(key) < 0]

    def _peak_problems(self) -> list[tuple[tuple[Any, ...], str]]:
        problems: list[tuple[tuple[Any, ...], str]] = []
        for role, party in self.parties.items():
            for name, function in party.utilities.items():
                issue = self.issues.get(name)
                if function.peak is None or issue is None or not issue.numeric:
                    continue  # (an unknown issue or a peak on text values is the preferences' own problem)
                lo, hi = issue.bounds()
                if not lo - 1e-9 * max(1.0, abs(lo)) <= function.peak <= hi + 1e-9 * max(1.0, abs(hi)):
                    problems.append((("world", "params", "parties", role, "utilities", name),
                                     f"peak {function.peak:g} is outside the issue's range [{lo:g}, {hi:g}]; the "
                                     "best value must be within it"))
        return problems

    @model_validator(mode="after")
    def _preferences_fit_issues(self) -> BargainingParams:
        from simworld.environments.negotiation.space import check_preferences

        problems = check_preferences(self.issues, self.parties)
        if problems:
            raise _located(type(self).__name__, problems)  # (at world.params.parties.<role>...)
        return self


class BargainingTaskParams(_Strict):
    """``task.params`` of the `negotiate` task: per-episode variation of the parties' preferences."""

    reservation_jitter: float = Field(default=0.0, ge=0.0, le=0.5, description="Each episode moves each "
                                      "reservation by a uniform amount in [-j, +j] (clipped to [0, 0.95]).")
    weight_jitter: float = Field(default=0.0, ge=0.0, le=0.9, description="Each episode multiplies each "
                                 "weight by a uniform factor in [1-j, 1+j] before normalising.")
