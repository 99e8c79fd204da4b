"""Scripted negotiation strategies, usable as either party of a bargaining world.

Every strategy reads its own utility spec from its private info and the public offer record, and
answers with a Message: a sentence in natural language and one protocol tool call (sometimes an
explicit ``reject_offer`` before a counter-offer, or an information tool on its first turn).

A strategy decides a *target utility* for its next offer and offers, among its outcomes whose
utility lies in ``[target, target + window]``, the one closest to the opponent's last offer (so
concessions move towards the opponent). It accepts the standing offer when that is worth at least
what its own next offer would be (AC_next), and never when the offer is worth less than its
reservation value (net of the deadline cost). When no offers are left, it accepts an offer at or
above its reservation value and otherwise walks away.

* ``time_based``: target ``u(t) = r + (1 - r)(1 - t^e)`` at normalised time t (t = 0 at the
  first offer, 1 at the last), reservation r; ``boulware`` (e = 4, concedes late), ``linear``
  (e = 1), ``conceder`` (e = 0.25, concedes early) are the same with other default exponents.
* ``tit_for_tat``: concedes, in its own utility, what the opponent's last offer conceded to it
  (times `factor`); `initial_concession` after the opponent's first offer breaks a deadlock.
* ``random_offer``: a uniformly random outcome worth at least its reservation value.
* ``hardliner``: never offers or accepts less than ``r + aspiration (1 - r)``.

Every strategy opens from an anchor that depends on what it knows, not from its ideal outcome: an
aspiration ``a`` drawn per episode from its ``opening`` range (its own RNG) sets the opening's
utility ``r + a (1 - r)`` (never below what the strategy may offer at all), and a party that looked
up the market price (``check_market_price``) pins the matching issue near the favourable edge of
the market (a buyer somewhat below the market low, a seller somewhat above the market high; the
higher its aspiration, the further out) and meets its aspiration on the other issues. Time-based
strategies then concede from the opening's utility instead of from 1.

What a party learns and who it is today change how it negotiates, always within its reservation value:

* Temperament (``private["temperament"]``, drawn per episode by the task from the scenario's
  ``parties.<role>.temperaments``): ``concession`` multiplies its concession speed (time-based
  exponents are divided by it, tit-for-tat steps multiplied), ``patience`` p is the share of the
  offers it means to use (time-based curves reach the reservation value at t = p; past p it accepts
  any offer it would accept at the deadline), ``anchor`` moves its aspiration towards 1 or 0,
  ``research`` is the chance it looks things up first, ``rejects`` its chance of an explicit
  rejection before a counter-offer, and ``remarks`` are sentences it now and then says.
* Stock (``get_inventory``, read through the world's ``stock`` levels): a plentiful stock presses
  its owner to close (it concedes faster and aims lower) and lets its counterpart hold out; a
  scarce one does the reverse. Its opening message says so.
* Policies (``check_policy`` answers with ``limits``): a party that looked them up offers and
  accepts only terms within them (it walks away when no such terms are worth its reservation value),
  and its opening message says so. Its first turn looks up every policy that sets limits.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import orjson
from pydantic import Field, model_validator

from simworld.agent import Agent, AgentParams, View
from simworld.agents.negotiation.phrasing import choose, market_remark, phrase, policy_remark, stock_remark
from simworld.environments.negotiation.kernels import opening_offer
from simworld.environments.negotiation.space import OutcomeSpace, UtilityModel, limited_model, utility_model
from simworld.environments.negotiation.spec import IssueLimit
from simworld.environments.negotiation.world import BargainingWorld, NegotiationRecord, Offer, negotiation_record
from simworld.episode import AgentFailure
from simworld.registry import register_agent
from simworld.types import Message, ToolCall

INFO_TOOLS = ("check_market_price", "get_inventory", "check_policy")
STOCK_CONCESSION = 1.6
"""Concession multiple of a party the stock presses most to close (its inverse for the least pressed)."""
STOCK_ANCHOR = 0.2
"""Aspiration given up by a party the stock presses most to close, per unit of pressure (-0.5..0.5)."""
REMARK_CHANCE = 0.3
"""Chance that an offer carries one of its temperament's remarks."""


class StrategyParams(AgentParams):
    window: float = Field(default=0.05, ge=0.0, le=1.0, description="Width of the utility band an offer "
                          "is chosen from, above the target.")
    reject_first: float = Field(default=0.25, ge=0.0, le=1.0, description="Probability of an explicit "
                                "reject_offer before a counter-offer.")
    research: bool = Field(default=True, description="Use an information tool (if granted) on the first turn.")
    opening: tuple[float, float] = Field(default=(0.6, 0.95), description="Range the per-episode aspiration "
                                         "a is drawn from: the first offer is worth r + a (1 - r).")

    @model_validator(mode="after")
    def _opening_range(self) -> StrategyParams:
        lo, hi = self.opening
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"opening must be [low, high] with 0 <= low <= high <= 1, got [{lo}, {hi}]")
        return self


def _call(name: str, **arguments: Any) -> ToolCall:
    return ToolCall(id="call", name=name, arguments=arguments)


def _message(content: str, calls: list[ToolCall]) -> Message:
    return Message(role="assistant", content=content, tool_calls=calls)


_NO_REFERENCE: dict[int, np.ndarray] = {}


def _no_reference(n_issues: int) -> np.ndarray:
    ref = _NO_REFERENCE.get(n_issues)
    if ref is None:
        ref = _NO_REFERENCE[n_issues] = np.full(n_issues, -1, np.int64)
        ref.setflags(write=False)
    return ref


def _words(text: str) -> set[str]:
    return {w.rstrip("s") for w in re.findall(r"[a-z0-9]+", text.lower())}


def _answers(view: View, role: str, tool: str) -> list[dict[str, Any]]:
    """The successful answers of `tool` that `role` got in this episode, latest first."""
    out = []
    for event in reversed(view.episode.events):
        if event.role == "tool" and event.speaker == role and event.name == tool and not event.error:
            answer = orjson.loads(event.content)
            if isinstance(answer, dict):
                out.append(answer)
    return out


def _market_research(view: View, role: str) -> dict[str, Any] | None:
    """The latest successful check_market_price answer `role` got in this episode, if any."""
    for answer in _answers(view, role, "check_market_price"):
        if all(isinstance(answer.get(k), (int, float)) for k in ("low", "median", "high")):
            return answer
    return None


def policy_mask(space: OutcomeSpace, limits: dict[str, Any]) -> np.ndarray:
    """`mask[i, d]`: whether value d of issue i is within every limit in `limits` (issue -> IssueLimit
    data, as check_policy answers them; issues it does not know are ignored). Memoised per space;
    read-only."""
    key = ("policy-mask", orjson.dumps(limits, option=orjson.OPT_SORT_KEYS))
    mask = space.memo.get(key)
    if mask is None:
        mask = np.zeros((len(space.names), int(space.sizes.max())), np.bool_)
        for i, (name, grid) in enumerate(zip(space.names, space.grids)):
            limit = limits.get(name)
            rule = IssueLimit.model_validate(limit) if isinstance(limit, dict) else None
            mask[i, : len(grid)] = [rule is None or rule.allows(v) for v in grid]
        mask.setflags(write=False)
        if len(space.memo) > 10_000:
            space.memo.clear()
        space.memo[key] = mask
    return mask


class NegotiationStrategy(Agent):
    """Base of the scripted strategies: protocol handling, acceptance rule and wording."""

    Params = StrategyParams
    params: StrategyParams
    worlds = ("bargaining",)  # either party, so no `kinds`

    def __init__(self, params: StrategyParams, role: str, rng: np.random.Generator) -> None:
        super().__init__(params, role, rng)
        self._model: UtilityModel | None = None
        """This party's utility."""
        self._offering: UtilityModel | None = None
        """The utility it offers and accepts by: `_model`, or with terms outside a policy it looked up ruled out."""
        self._researched = False
        self._concession = 1.0
        """Multiple of the strategy's concession speed (temperament and stock)."""
        self._patience = 1.0
        """Share of the offers after which any offer acceptable at the deadline is accepted."""
        self._shift = 0.0
        """Moves the drawn aspiration towards 1 (> 0) or 0 (< 0): temperament and stock."""
        self._rejects = params.reject_first
        self._remarks: list[str] = []
        self._opening_notes: list[str] = []
        """What it learned that its opening message says (stock, policies)."""
        self._last_target: float | None = None
        self._words: OutcomeSpace | None = None
        self._record: NegotiationRecord | None = None
        self._aspiration: float | None = None
        self._start = 1.0
        self._market_note: tuple[str, bool, float, float, float] | None = None
        """(issue, wants it low, market low, median, high) the opening was anchored on, cited when opening."""
        """Net utility of this party's opening offer (1 until it has opened): time-based curves start here."""

    @property
    def agent_id(self) -> str:
        """The base id, worked out once per agent (the metrics and the trajectory both ask)."""
        cached = self.__dict__.get("_agent_id")
        if cached is None:
            cached = self.__dict__["_agent_id"] = super().agent_id
        return cached

    # -- what a strategy decides
    def target(self, record: NegotiationRecord, model: UtilityModel, cost: float) -> float:
        """Net utility the next offer should be worth (at least the reservation value)."""
        raise NotImplementedError

    def band_width(self) -> float:
        """How far above its target an offer may be (the band the closest-to-opponent offer comes from)."""
        return self.params.window

    def final_threshold(self, model: UtilityModel) -> float:
        """What the last offer of an episode must be worth (net) to be accepted."""
        return model.reservation

    def offer_floor(self, model: UtilityModel) -> float:
        """The least (net) utility this strategy ever offers; the opening never asks for less."""
        return model.reservation

    def aspiration(self) -> float:
        """This episode's aspiration: drawn once from the strategy's `opening` range, then moved by its
        temperament and what it learned of the stock (a shift s > 0 moves it that share of the way up
        to 1, s < 0 that share of the way down to 0)."""
        if self._aspiration is None:
            lo, hi = self.params.opening
            self._aspiration = float(lo + (hi - lo) * self.rng.random())
        a, shift = self._aspiration, self._shift
        return a + shift * (1.0 - a) if shift > 0 else a + shift * a if shift < 0 else a

    def opening_outcome(self, view: View, record: NegotiationRecord, model: UtilityModel, cost: float) -> int:
        """The first offer: worth about `r + a (1 - r)` (net of `cost`), the researched issue pinned
        near the researched anchor; closest to the opponent's offer if it opened, else drawn at random."""
        floor = max(model.reservation, self.offer_floor(model))
        target = max(floor, model.reservation + self.aspiration() * (1.0 - model.reservation))
        space = model.space
        anchor = self._anchor(view, model)
        issue, position = anchor if anchor is not None else (-1, 0.0)
        opponent = record.offers_by(record.counterpart(self.role))
        ref = space.digit_table[opponent[-1].outcome].astype(np.int64) if opponent else _no_reference(len(space.names))
        order, starts, _, bounds = model.buckets
        band, choice = opening_offer(model.utilities, cost, order, starts, bounds, model.best, model.tables,
                                     space.digit_table, space.sizes, space.ordered, floor - 1e-12, target - 1e-12,
                                     target + self.params.window + 1e-12, issue, position, ref)
        if choice == -2:
            return model.best
        if choice >= 0:
            return choice
        return int(band[int(self.rng.integers(band.size))])

    def _anchor(self, view: View, model: UtilityModel) -> tuple[int, float] | None:
        """(issue, grid position) this party's market research points its opening at, if any: the
        favourable market edge pushed out by the aspiration, on the range issue the prices fall in."""
        answer = _market_research(view, self.role)
        if answer is None:
            return None
        low, median, high = float(answer["low"]), float(answer["median"]), float(answer["high"])
        space = model.space
        best_issue, best_overlap = -1, 0.0
        for i, name in enumerate(space.names):
            spec = space.issues[name]
            if spec.range is None:
                continue
            lo, hi = spec.range
            overlap = min(hi, high) - max(lo, low)
            if overlap >= 0 and (best_issue < 0 or overlap > best_overlap):
                best_issue, best_overlap = i, overlap
        if best_issue < 0:
            return None  # the prices looked up are not those of any issue (another item)
        size = int(space.sizes[best_issue])
        values = model.tables[best_issue, :size].tolist()
        steps = list(zip(values, values[1:]))
        if size < 2 or not (all(a <= b for a, b in steps) or all(a >= b for a, b in steps)) or values[0] == values[-1]:
            return None  # no monotone preference on that issue: the market says nothing about where to open
        wants_low = values[0] > values[-1]
        edge = low if wants_low else high
        self._market_note = (space.names[best_issue], wants_low, low, median, high)
        lo_a, hi_a = self.params.opening
        boldness = min(max((self.aspiration() - lo_a) / (hi_a - lo_a), -0.25), 1.25) if hi_a > lo_a else 0.5
        anchor = median + (edge - median) * (0.8 + 0.8 * boldness)
        lo, hi = space.issues[space.names[best_issue]].range  # type: ignore[misc]
        anchor = min(max(anchor, lo), hi)
        return best_issue, (anchor - lo) / (hi - lo) * (size - 1) if hi > lo else 0.0

    def choose_outcome(self, record: NegotiationRecord, model: UtilityModel, target: float, cost: float) -> int:
        """The outcome to offer for a net `target`: the closest in the band to the opponent's last offer."""
        opponent = record.offers_by(record.counterpart(self.role))
        space = model.space
        ref = space.digit_table[opponent[-1].outcome].astype(np.int64) if opponent else _no_reference(len(space.names))
        low = target + cost
        return model.select(low, low + self.band_width(), ref)

    # -- the turn
    async def act(self, view: View) -> Message:
        if self._model is None:
            self._load(view)
        private = view.private
        cost = float(private.get("deadline_cost", 0.0))
        record = self._record = negotiation_record(view.episode.state, int(private["max_rounds"]), self._record)
        events = view.episode.events
        last = events[-1] if events else None
        if last is not None and last.role == "tool" and last.speaker == self.role and last.error:
            # A scripted strategy never makes an invalid move; if the world refused one anyway,
            # leave rather than loop.
            return self._say("walk_away", _call("walk_away", reason=choose(self.rng, "walk_reason")))
        if self.params.research and not self._researched and not record.offers_by(self.role):
            self._researched = True
            temperament = private.get("temperament")
            thorough = float(temperament.get("research", 1.0)) if isinstance(temperament, dict) else 1.0
            calls = self._research_calls(view) if thorough >= 1.0 or self.rng.random() < thorough else []
            if calls:
                return _message(choose(self.rng, "research"), calls)
        model = self._offering or self._inform(view)
        other = record.counterpart(self.role)
        standing = record.table if record.table is not None and record.table.by == other else None
        next_cost = cost * record.offers  # the cost if my next offer (number offers + 1) is accepted
        if standing is not None:
            value = float(model.utilities[standing.outcome]) - cost * (standing.round - 1)
            if record.offers >= record.max_rounds:
                if value >= max(model.reservation, self.final_threshold(model)):
                    return self._accept()
                return self._say("walk_away", _call("walk_away", reason=choose(self.rng, "walk_reason")))
            outcome, target = self._next(view, record, model, next_cost)
            if value >= model.reservation and (value >= self.accept_threshold(record, model, target) or (
                    self._patience < 1.0 and time_fraction(record) >= self._patience
                    and value >= self.final_threshold(model))):
                return self._accept()
        elif record.offers >= record.max_rounds:
            return self._say("walk_away", _call("walk_away", reason=choose(self.rng, "walk_reason")))
        else:
            outcome, target = self._next(view, record, model, next_cost)
        if float(model.utilities[model.best]) - next_cost < model.reservation:
            # Nothing it may offer (within the policies it knows) is worth more than no deal.
            return self._say("walk_away", _call("walk_away", reason=choose(self.rng, "walk_reason")))
        if outcome is None:
            outcome = self.choose_outcome(record, model, target, next_cost)
        self._last_target = target
        return self._offer(record, model, outcome, standing)

    def _next(self, view: View, record: NegotiationRecord, model: UtilityModel,
              cost: float) -> tuple[int | None, float]:
        """(outcome, net target) of the next offer; the outcome is None when `choose_outcome` picks it later
        (after the acceptance test, so a strategy drawing at random draws only when it offers)."""
        if not record.offers_by(self.role):
            outcome = self.opening_outcome(view, record, model, cost)
            self._start = float(model.utilities[outcome]) - cost
            return outcome, max(self._start, model.reservation)
        return None, max(self.target(record, model, cost), model.reservation)

    def accept_threshold(self, record: NegotiationRecord, model: UtilityModel, target: float) -> float:
        """Accept the standing offer when it is worth at least this (net); default AC_next."""
        return target

    # -- helpers
    def _load(self, view: View) -> UtilityModel:
        spec = view.private.get("utility")
        if not isinstance(spec, dict):
            raise AgentFailure(f"role {self.role!r} has no negotiation preferences: is it one of the parties in "
                               "world.params.parties?")
        self._model = utility_model(spec)
        world = view.episode.world
        # Offers are worded with the scenario's labels and phrases (the world's issue space).
        self._words = world.space if isinstance(world, BargainingWorld) else self._model.space
        return self._model

    def _inform(self, view: View) -> UtilityModel:
        """Settle how this party negotiates in this episode, once, after its research: its temperament,
        what the stock it looked up means for it, and the policies it looked up. Returns the model it
        offers and accepts by."""
        assert self._model is not None
        model = self._model
        temperament = view.private.get("temperament")
        if isinstance(temperament, dict):
            self._concession = float(temperament.get("concession", 1.0))
            self._patience = float(temperament.get("patience", 1.0))
            self._shift = float(temperament.get("anchor", 0.0))
            self._remarks = [str(r) for r in temperament.get("remarks", ())]
            if temperament.get("rejects") is not None:
                self._rejects = float(temperament["rejects"])
        world = view.episode.world
        params = world.params if isinstance(world, BargainingWorld) else None
        stock = params.stock if params is not None else None
        inventory = _answers(view, self.role, "get_inventory")
        level = stock.level(inventory[0]) if stock is not None and inventory else None
        if level is not None:
            owner = stock.owner == self.role
            pressure = (level - 0.5) if owner else (0.5 - level)  # how much the stock presses it to close, -0.5..0.5
            self._concession *= STOCK_CONCESSION ** (2.0 * pressure)
            self._shift = min(max(self._shift - STOCK_ANCHOR * pressure, -0.5), 0.5)
            if abs(level - 0.5) >= 0.1:
                self._opening_notes.append(stock_remark(self.rng, owner, level > 0.5))
        limits: dict[str, Any] = {}
        topics = []
        for answer in reversed(_answers(view, self.role, "check_policy")):  # in the order looked up
            if isinstance(answer.get("limits"), dict) and answer["limits"]:
                topics.append(str(answer.get("topic", "")))
                for name, limit in answer["limits"].items():
                    limits.setdefault(name, {})
                    limits[name] = _tighter(limits[name], limit)
        if limits:
            mask = policy_mask(model.space, limits)
            if mask.any(axis=1).all():
                model = limited_model(model, mask)
                self._opening_notes.append(policy_remark(self.rng, topics))
        self._offering = model
        return model

    def _research_calls(self, view: View) -> list[ToolCall]:
        """The information calls of its first turn: market prices of the item, the inventory, and the
        policies that set limits (else one topic at random), as granted and available."""
        granted = {t.name for t in view.tools}
        world = view.episode.world
        calls = []
        for name in INFO_TOOLS:
            if name not in granted:
                continue
            if name == "check_market_price":
                items = world.data.vocab.get("item") or []
                if items:
                    calls.append(_call(name, item=self._market_item(items, str(getattr(world.params, "subject", "")))))
            elif name == "get_inventory" and world.params.inventory:
                calls.append(_call(name))
            elif name == "check_policy" and world.params.policies:
                policies = world.params.policies
                limited = [t for t in sorted(policies) if policies[t].limits]
                topics = limited or [sorted(policies)[int(self.rng.integers(len(policies)))]]
                calls.extend(_call(name, topic=topic) for topic in topics)
        return calls

    def _market_item(self, items: list[str], subject: str) -> str:
        """The market item that shares the most words with the negotiation's subject (ties: at random)."""
        words = _words(subject)
        scores = np.array([len(_words(item) & words) for item in items])
        best = np.flatnonzero(scores == scores.max())
        return items[int(best[int(self.rng.integers(best.size))])]

    def _say(self, bank: str, *calls: ToolCall, terms: str = "") -> Message:
        return _message(phrase(self.rng, bank, terms), list(calls))

    def _accept(self) -> Message:
        return self._say("accept", _call("accept_offer"))

    def _offer(self, record: NegotiationRecord, model: UtilityModel, outcome: int, standing: Offer | None) -> Message:
        terms = model.space.terms(outcome)
        words = self._words.describe_outcome(outcome)
        mine = record.offers_by(self.role)
        if record.offers + 1 >= record.max_rounds:
            bank = "final"
        elif not record.history:
            bank = "open"
        elif standing is None:
            bank = "repeat" if mine and mine[-1].outcome == outcome else "counter"
        elif mine and model.utilities[outcome] < model.utilities[mine[-1].outcome] - 1e-12:
            bank = "concede"
        elif mine and mine[-1].outcome == outcome:
            bank = "hold"
        else:
            bank = "counter" if mine else "open"
        calls = [_call("make_offer", **terms)]
        if standing is not None and self.rng.random() < self._rejects:
            calls.insert(0, _call("reject_offer", reason=choose(self.rng, "reject_reason")))
        remark = None  # a temperament's own remark replaces the generic closing one
        if self._remarks and self.rng.random() < REMARK_CHANCE:
            remark = self._remarks[int(self.rng.integers(len(self._remarks)))]
        message = _message(phrase(self.rng, bank, words, closer=remark is None), calls)
        if remark is not None:
            message.content += " " + remark
        if not mine:  # say what the opening is anchored on
            notes = list(self._opening_notes)
            if self._market_note is not None:
                issue, wants_low, *prices = self._market_note
                low, median, high = (self._words.value_text(issue, x) for x in prices)
                notes.append(market_remark(self.rng, wants_low, low, median, high))
            if notes:
                message.content = " ".join([*notes, message.content])
        return message


class TimeBasedParams(StrategyParams):
    exponent: float = Field(default=1.0, gt=0.0, le=100.0, description="Concession exponent e: e > 1 "
                            "concedes late (Boulware), e < 1 early (Conceder).")


def time_fraction(record: NegotiationRecord) -> float:
    """Normalised time of the next offer: 0 at the first offer, 1 at the last allowed one."""
    if record.max_rounds <= 1:
        return 1.0
    return min(1.0, record.offers / (record.max_rounds - 1))


def _tighter(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two limits on one issue (IssueLimit data) as one that keeps within both."""
    out = dict(a)
    if b.get("min") is not None:
        out["min"] = max(b["min"], out.get("min", b["min"]))
    if b.get("max") is not None:
        out["max"] = min(b["max"], out.get("max", b["max"]))
    if b.get("values") is not None:
        out["values"] = [v for v in b["values"] if "values" not in a or v in a["values"]]
    return out


@register_agent("time_based")
class TimeBased(NegotiationStrategy):
    """Time-based concession: target u(t) = r + (u0 - r)(1 - t^e), u0 the opening's utility (1 before it).

    A temperament's concession c and patience p make it u(t) = r + (u0 - r)(1 - min(1, t / p)^(e / c)).
    """

    Params = TimeBasedParams
    params: TimeBasedParams

    def target(self, record: NegotiationRecord, model: UtilityModel, cost: float) -> float:
        r = model.reservation
        t = min(1.0, time_fraction(record) / self._patience)
        return r + (max(self._start, r) - r) * (1.0 - t ** (self.params.exponent / self._concession))


class BoulwareParams(TimeBasedParams):
    exponent: float = Field(default=4.0, gt=0.0, le=100.0)
    opening: tuple[float, float] = Field(default=(0.75, 0.97))


class ConcederParams(TimeBasedParams):
    exponent: float = Field(default=0.25, gt=0.0, le=100.0)
    opening: tuple[float, float] = Field(default=(0.5, 0.85))


@register_agent("boulware")
class Boulware(TimeBased):
    """Time-based concession with e = 4: holds out and concedes near the deadline."""

    Params = BoulwareParams


@register_agent("linear")
class Linear(TimeBased):
    """Time-based concession with e = 1: concedes at a constant rate."""

    Params = TimeBasedParams


@register_agent("conceder")
class Conceder(TimeBased):
    """Time-based concession with e = 0.25: concedes early."""

    Params = ConcederParams


class TitForTatParams(StrategyParams):
    factor: float = Field(default=1.0, ge=0.0, le=10.0, description="Multiple of the opponent's concession "
                          "to reciprocate.")
    initial_concession: float = Field(default=0.05, ge=0.0, le=1.0, description="Concession after the "
                                      "opponent's first offer.")


@register_agent("tit_for_tat")
class TitForTat(NegotiationStrategy):
    """Relative tit-for-tat: mirrors the opponent's concessions, measured in its own utility."""

    Params = TitForTatParams
    params: TitForTatParams

    def target(self, record: NegotiationRecord, model: UtilityModel, cost: float) -> float:
        previous = self._last_target if self._last_target is not None else 1.0
        opponent = record.offers_by(record.counterpart(self.role))
        if not opponent or self._last_target is None:
            return previous
        if len(opponent) == 1:
            step = self.params.initial_concession * self._concession
        else:
            u = self._model.utilities if self._model is not None else model.utilities  # not the policy-limited one
            step = self.params.factor * self._concession * float(u[opponent[-1].outcome] - u[opponent[-2].outcome])
        return float(min(1.0, max(model.reservation, previous - step)))


class RandomOfferParams(StrategyParams):
    rational: bool = Field(default=True, description="Only offer outcomes worth at least the reservation value.")


@register_agent("random_offer")
class RandomOffer(NegotiationStrategy):
    """Baseline: offers a uniformly random (individually rational) outcome each round."""

    Params = RandomOfferParams
    params: RandomOfferParams

    def __init__(self, params: RandomOfferParams, role: str, rng: np.random.Generator) -> None:
        super().__init__(params, role, rng)
        self._pick: int | None = None

    def target(self, record: NegotiationRecord, model: UtilityModel, cost: float) -> float:
        floor = model.reservation + cost if self.params.rational else -np.inf
        candidates = np.flatnonzero(model.utilities >= floor)
        if candidates.size == 0:  # nothing is worth the floor any more: the best outcome
            candidates = np.array([int(np.argmax(model.utilities))])
        self._pick = int(candidates[int(self.rng.integers(candidates.size))])
        return float(model.utilities[self._pick]) - cost

    def choose_outcome(self, record: NegotiationRecord, model: UtilityModel, target: float, cost: float) -> int:
        assert self._pick is not None
        return self._pick


class HardlinerParams(StrategyParams):
    aspiration: float = Field(default=0.8, ge=0.0, le=1.0, description="Share of the surplus above the "
                              "reservation value it insists on.")


@register_agent("hardliner")
class Hardliner(NegotiationStrategy):
    """Never concedes: offers and accepts only terms worth r + aspiration (1 - r) or more."""

    Params = HardlinerParams
    params: HardlinerParams

    def final_threshold(self, model: UtilityModel) -> float:
        return model.reservation + self.params.aspiration * (1.0 - model.reservation)

    def offer_floor(self, model: UtilityModel) -> float:
        return self.final_threshold(model)

    def target(self, record: NegotiationRecord, model: UtilityModel, cost: float) -> float:
        return self.final_threshold(model)

    def band_width(self) -> float:
        return 1.0


__all__ = ["Boulware", "Conceder", "Hardliner", "Linear", "NegotiationStrategy", "RandomOffer", "TimeBased",
           "TitForTat"]
