"""The bargaining world: alternating-offers negotiation over scenario-declared issues, via tools.

Protocol (enforced inside the tools; a violation is a :class:`ToolError`, i.e. an error result the
acting party sees):

* ``make_offer(<issue>=<value>, ...)`` proposes complete terms (every issue, each on its grid) and
  ends the turn; the counterpart is notified. At most ``max_rounds`` offers per episode.
* ``accept_offer()`` accepts the counterpart's standing offer: the episode ends in ``agreement``.
* ``reject_offer(reason)`` declines it without ending the turn (the party then counters with
  ``make_offer`` or walks away). Rejecting the final offer ends the episode (``no_agreement``).
* ``walk_away(reason)`` ends the episode (``walk_away``).
* Information tools (``check_market_price``, ``get_inventory``, ``check_policy``) answer from the
  world and do not end the turn.
* Acting out of turn (any call after the party's turn-ending move in the same message), accepting
  with no offer on the table or one's own offer, an offer off the grid or out of range, or an offer
  past the round limit are invalid moves.

``make_offer``'s arguments are the scenario's issues: each world instance carries its own tool
whose JSON Schema lists them (an integer or number with minimum/maximum for a continuous issue, an
enum for a discrete one), so a model learns calls like ``make_offer(price=9800,
warranty_months=12, financing="dealer")``. The class-level tool (used when no world params are at
hand, e.g. for scenario validation) takes one ``offer`` object instead.

Negotiation state lives in ``State.vars`` (part of the state hash): parties, status, offer count,
the standing offer, the public offer history, whose move it is. :func:`negotiation_record` reads it.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

import numpy as np
from pydantic import Field

from simworld.environments.negotiation.space import OutcomeSpace, format_number
from simworld.environments.negotiation.spec import BargainingParams, IssueSpec, Value
from simworld.errors import counted, suggest
from simworld.registry import register_world
from simworld.types import ToolSpec
from simworld.world import State, Table, Tool, ToolContext, ToolError, World, WorldData


def party_name(role: str) -> str:
    """How a role is named in sentences: 'seller' -> 'the seller'."""
    return "the " + role.replace("_", " ")


class Offer(NamedTuple):
    by: str
    round: int
    terms: dict[str, Value]
    outcome: int


class NegotiationRecord(NamedTuple):
    """The public record of a negotiation (what both parties have been told)."""

    parties: tuple[str, ...]
    status: str
    offers: int
    max_rounds: int
    table: Offer | None
    history: tuple[Offer, ...]
    to_move: str | None
    by_party: dict[str, tuple[Offer, ...]] | None = None
    """`history` split by party (filled by `negotiation_record`; None: split on demand)."""

    def counterpart(self, role: str) -> str:
        if len(self.parties) == 2:
            a, b = self.parties
            return b if a == role else a
        return next(p for p in self.parties if p != role)

    def offers_by(self, role: str) -> list[Offer]:
        if self.by_party is not None:
            return list(self.by_party.get(role, ()))
        return [o for o in self.history if o.by == role]


def _offer(raw: dict[str, Any]) -> Offer:
    return Offer(raw["by"], raw["round"], raw["terms"], raw["outcome"])


def negotiation_record(state: State, max_rounds: int, previous: NegotiationRecord | None = None) -> NegotiationRecord:
    """The public record of the negotiation in `state`.

    `previous`, an earlier record of the same episode, saves re-reading the (append-only) history.
    """
    v = state.vars
    table = v.get("table")
    raw = v.get("history", ())
    reuse = previous is not None and previous.by_party is not None and len(previous.history) <= len(raw)
    if reuse and len(previous.history) == len(raw):  # nothing new: only the table and the turn may differ
        history, by_party = previous.history, previous.by_party  # type: ignore[union-attr]
    else:
        known = previous.history if reuse else ()  # type: ignore[union-attr]
        by_party = dict(previous.by_party) if reuse else {}  # type: ignore[union-attr, arg-type]
        added = tuple(map(_offer, raw[len(known):]))
        for offer in added:
            by_party[offer.by] = by_party.get(offer.by, ()) + (offer,)
        history = known + added
    standing = None
    if table:
        # The standing offer is usually the last one made: reuse its record.
        last = history[-1] if history else None
        standing = last if last is not None and last.round == table["round"] and last.by == table["by"] else _offer(table)
    return NegotiationRecord(tuple(v.get("parties", ())), v.get("status", "open"), v.get("offers", 0), max_rounds,
                             standing, history, v.get("to_move"), by_party)


def open_negotiation(state: State, parties: list[str]) -> None:
    """Initialise the negotiation state of an episode (called by the task)."""
    state.vars.update({"parties": list(parties), "status": "open", "offers": 0, "table": None,
                       "history": [], "to_move": None})


# ----------------------------------------------------------------------------------------------
# The world


class _ToolSpecs:
    """`tool_specs`: on a world instance, its own tools (issue-specific make_offer); on the class, the generic ones."""

    def __get__(self, obj: Any, owner: type) -> Callable[..., list[ToolSpec]]:
        tools = obj.tools if obj is not None else owner.tools

        def tool_specs(names: Any = None) -> list[ToolSpec]:
            chosen = tools if names is None else names
            return [tools[n].spec for n in chosen]

        return tool_specs


@register_world("bargaining")
class BargainingWorld(World):
    """Multi-issue bargaining between two parties with private additive preferences."""

    Params = BargainingParams
    version = 3  # 2: params gained temperaments, stock and policy limits (new defaults in the recorded params);
    # 3: a one-offer limit is worded "1 offer" in the prompts and the round-limit error
    _cache: ClassVar[OrderedDict[tuple[str, str, int], WorldData]] = OrderedDict()
    CACHE_SIZE: ClassVar[int] = 64
    tool_specs = _ToolSpecs()  # type: ignore[assignment]

    params: BargainingParams

    def __init__(self, data: WorldData, params: BargainingParams, seed: int) -> None:  # type: ignore[override]
        super().__init__(data, params, seed)
        self.space: OutcomeSpace = data.meta["space"]
        self.tools = data.meta["tools"]  # type: ignore[misc]

    @classmethod
    def build(cls, params: BargainingParams, rng: np.random.Generator) -> WorldData:  # type: ignore[override]
        space, tools = _issue_tools(params)
        items = sorted(params.market)
        k = params.comparables
        lows = np.array([params.market[i][0] for i in items], dtype=np.float64)
        highs = np.array([params.market[i][1] for i in items], dtype=np.float64)
        draws = rng.random((len(items), k))
        # Listing prices rounded to whole currency units, sorted per item.
        prices = np.sort(np.round(lows[:, None] + draws * (highs - lows)[:, None]), axis=1)
        market = Table("market", {"item": np.repeat(np.arange(len(items), dtype=np.int64), k),
                                  "price": prices.reshape(-1)})
        # The market never changes during an episode: check_market_price's answers are made once.
        answers = [_market_answer(item, row) for item, row in zip(items, prices)]
        return WorldData({"market": market}, vocab={"item": items},
                         meta={"space": space, "tools": tools, "system_prompt": _system_prompt(params, []),
                               "system_prompt_market": _system_prompt(params, items),
                               "market_answers": answers})

    # -- episode hooks
    def default_system_prompt(self, kind: str, tools: tuple[str, ...] = ()) -> str:
        """The protocol and the issues (the same for both parties; their briefs add private goals),
        and what check_market_price knows for a party that has it."""
        return str(self.data.meta["system_prompt_market" if "check_market_price" in tools else "system_prompt"])

    def next_speaker(self, state: State, current: str, order: list[str]) -> str:
        """The other party; a turn handed over by text alone passes the move too."""
        nxt = order[(order.index(current) + 1) % len(order)]
        if state.vars.get("status") == "open" and "parties" in state.vars:
            state.vars["to_move"] = nxt
        return nxt

    def finalize_outcome(self, episode: Any, outcome: Any) -> Any:
        from simworld.environments.negotiation.metrics import negotiation_metrics

        metrics = negotiation_metrics(episode)
        outcome.metrics.update(metrics)
        outcome.success = bool(metrics["agreement"]) and outcome.error is None
        return outcome

    def record(self, state: State) -> NegotiationRecord:
        return negotiation_record(state, self.params.max_rounds)


def _market_answer(item: str, prices: np.ndarray) -> dict[str, Any]:
    return {"item": item, "listings": [format_number(float(x)) for x in prices],
            "low": float(prices.min()), "median": float(np.median(prices)), "high": float(prices.max())}


def _system_prompt(p: BargainingParams, market_items: list[str]) -> str:
    issues = "\n".join(f"- {name}: {_issue_domain(spec)}" for name, spec in p.issues.items())
    cost = ""
    if p.deadline_cost > 0:
        cost = f" Delay is costly: each round before agreement costs both sides {p.deadline_cost:g} of utility."
    market = f" check_market_price knows: {', '.join(market_items)}." if market_items else ""
    return (
        f"You are negotiating {p.subject} with a counterpart. The terms to agree on:\n{issues}\n\n"
        "Act through your tools. make_offer proposes complete terms (a value for every issue) and "
        "ends your turn; accept_offer accepts the counterpart's standing offer and closes the deal; "
        "reject_offer declines it (then counter with make_offer or walk away); walk_away ends the "
        f"negotiation without a deal. Offers alternate, with at most {counted(p.max_rounds, 'offer')} in total; "
        f"after the last one the only choices are to accept it or walk away.{cost}{market} Write a short "
        "message to the counterpart alongside each move. Never reveal your exact limits."
    )


def _issue_domain(spec: IssueSpec) -> str:
    desc = (spec.description.rstrip(".") + ". ") if spec.description else ""
    if spec.range is not None:
        lo, hi = spec.value_at(0), spec.value_at(spec.size - 1)
        step = int(spec.step) if spec.integral else spec.step
        return f"{desc}{format_number(lo)} to {format_number(hi)} in steps of {format_number(step)}"
    values = ", ".join(repr(v) if isinstance(v, str) else format_number(v) for v in spec.values or [])
    return f"{desc}one of {values}"


# ----------------------------------------------------------------------------------------------
# Protocol helpers


def _world(ctx: ToolContext) -> BargainingWorld:
    if not isinstance(ctx.world, BargainingWorld):
        raise ToolError("this tool needs a bargaining world")
    return ctx.world


def _turn(ctx: ToolContext) -> tuple[dict[str, Any], str]:
    """Check that the caller may make a protocol move now; returns (vars, counterpart)."""
    v = ctx.state.vars
    parties = v.get("parties")
    if not parties:
        raise ToolError("no negotiation is open")
    if ctx.caller not in parties:
        raise ToolError(f"{ctx.caller or 'the caller'} is not a party to this negotiation")
    if v.get("status", "open") != "open":
        raise ToolError(f"the negotiation is over ({v.get('status')})")
    counterpart = next(p for p in parties if p != ctx.caller)
    to_move = v.get("to_move") or ctx.caller
    if to_move != ctx.caller:
        raise ToolError(f"it is not your turn: you already made your move, now {party_name(counterpart)} "
                        "answers")
    return v, counterpart


def _digit(spec: IssueSpec, space: OutcomeSpace, i: int, name: str, value: Any) -> int:
    """Grid position of an offered value (raises ToolError off the grid)."""
    if spec.values is not None:
        d = space.position(i, value)
        if d < 0:
            raise ToolError(f"{name}={value!r} is not allowed; choose one of {', '.join(map(repr, spec.values))}")
        return d
    assert spec.range is not None and spec.step is not None
    lo, step = spec.range[0], spec.step
    k = (float(value) - lo) / step
    d = int(round(k))
    if abs(k - d) > 1e-6 or not 0 <= d < spec.size:
        below = lo + int(np.floor(k)) * step
        raise ToolError(f"{name}={format_number(value)} is off the grid: use steps of {format_number(step)} "
                        f"from {format_number(lo)} (e.g. {format_number(below)} or {format_number(below + step)})")
    return d


def _outcome(p: BargainingParams, space: OutcomeSpace, terms: dict[str, Any]) -> int:
    """Outcome number of offered terms (raises ToolError for missing, unknown or off-grid values).

    Valid terms are memoised per space by their values in issue order (offers repeat); values that
    compare equal (6, 6.0) denote the same grid value, so they may share an entry.
    """
    key: Any = None
    if len(terms) == len(space.names):
        try:
            key = tuple([terms[n] for n in space.names])
            cached = space.offers.get(key)
        except (KeyError, TypeError):  # a missing issue (reported below) or an unhashable value
            key = cached = None
        if cached is not None:
            return cached
    missing = [n for n in space.names if n not in terms]
    if missing:
        raise ToolError(f"an offer needs a value for every issue; missing: {', '.join(missing)}")
    extra = [n for n in terms if n not in p.issues]
    if extra:
        raise ToolError(f"unknown issue {extra[0]!r}{suggest(extra[0], p.issues)}")
    outcome = 0
    for i, name in enumerate(space.names):
        outcome += _digit(p.issues[name], space, i, name, terms[name]) * int(space.strides[i])
    if key is not None:
        if len(space.offers) >= 100_000:
            space.offers.clear()
        space.offers[key] = outcome
    return outcome


def _make_offer(ctx: ToolContext, terms: dict[str, Any]) -> dict[str, Any]:
    world = _world(ctx)
    v, counterpart = _turn(ctx)
    p = world.params
    space = world.space
    if v["offers"] >= p.max_rounds:
        raise ToolError(f"the round limit is reached ({counted(p.max_rounds, 'offer')}): accept the standing offer or "
                        "walk away")
    outcome = _outcome(p, space, terms)
    clean = space.terms(outcome)
    k = v["offers"] + 1
    offer = {"by": ctx.caller, "round": k, "terms": clean, "outcome": outcome}
    v["offers"] = k
    v["table"] = offer
    v["history"].append(dict(offer))
    v["to_move"] = counterpart
    left = p.max_rounds - k
    tail = ("This is the final offer: accept it or walk away." if left == 0 else
            "Answer with accept_offer, a counter-offer (make_offer), reject_offer or walk_away.")
    ctx.notify(counterpart, f"{party_name(ctx.caller).capitalize()} offers {space.describe_outcome(outcome)} "
                            f"(offer {k} of at most {p.max_rounds}). {tail}")
    ctx.finish_turn()
    return {"status": "offer_sent", "round": k, "offers_left": left, "terms": clean}


# ----------------------------------------------------------------------------------------------
# Tools


@BargainingWorld.tool(produces=["offer"], writes=True)
def make_offer(ctx: ToolContext, offer: Annotated[dict[str, Value], Field(
        description="The proposed terms: one value per issue.")]) -> dict[str, Any]:
    """Propose complete terms (a value for every issue) to the counterpart. Ends your turn."""
    return _make_offer(ctx, offer)


@BargainingWorld.tool(consumes=["offer"], writes=True)
def accept_offer(ctx: ToolContext) -> dict[str, Any]:
    """Accept the counterpart's standing offer. Closes the deal and ends the negotiation."""
    v, counterpart = _turn(ctx)
    table = v.get("table")
    if not table:
        raise ToolError("there is no offer on the table to accept; propose terms with make_offer")
    if table["by"] == ctx.caller:
        raise ToolError(f"you cannot accept your own offer: wait for {party_name(counterpart)}'s answer")
    world = _world(ctx)
    v["status"] = "agreement"
    v["agreement"] = table
    v["to_move"] = None
    ctx.notify(counterpart, f"{party_name(ctx.caller).capitalize()} accepts your offer: "
                            f"{world.space.describe_outcome(table['outcome'])}. Deal.")
    ctx.finish_episode("agreement")
    return {"status": "agreement", "round": table["round"], "terms": table["terms"]}


@BargainingWorld.tool(consumes=["offer"], writes=True)
def reject_offer(ctx: ToolContext, reason: Annotated[str, Field(
        description="Why the offer does not work for you (the counterpart sees it).")]) -> dict[str, Any]:
    """Decline the counterpart's standing offer. Your turn continues: counter with make_offer or walk away."""
    v, counterpart = _turn(ctx)
    table = v.get("table")
    if not table or table["by"] == ctx.caller:
        raise ToolError(f"there is no offer from {party_name(counterpart)} to reject")
    world = _world(ctx)
    v["table"] = None
    reason = reason.strip()
    ctx.notify(counterpart, f"{party_name(ctx.caller).capitalize()} rejects your offer"
                            + (f": {reason}" if reason else "."))
    left = world.params.max_rounds - v["offers"]
    if left <= 0:
        v["status"] = "no_agreement"
        v["to_move"] = None
        ctx.finish_episode("no_agreement")
        return {"status": "no_agreement", "note": "that was the final offer; the negotiation ends without a deal"}
    return {"status": "rejected", "offers_left": left, "note": "counter with make_offer or walk_away"}


@BargainingWorld.tool(writes=True)
def walk_away(ctx: ToolContext, reason: Annotated[str, Field(
        description="Why you are leaving (the counterpart sees it).")]) -> dict[str, Any]:
    """End the negotiation without a deal."""
    v, counterpart = _turn(ctx)
    v["status"] = "walk_away"
    v["walked_away"] = ctx.caller
    v["to_move"] = None
    reason = reason.strip()
    ctx.notify(counterpart, f"{party_name(ctx.caller).capitalize()} walks away from the negotiation"
                            + (f": {reason}" if reason else "."))
    ctx.finish_episode("walk_away")
    return {"status": "walk_away"}


def _info_turn(ctx: ToolContext) -> None:
    to_move = ctx.state.vars.get("to_move")
    if to_move and to_move != ctx.caller:
        raise ToolError("it is not your turn: your move is made, wait for the answer")


@BargainingWorld.tool(consumes=["item"], produces=["market_price"])
def check_market_price(ctx: ToolContext, item: Annotated[str, Field(
        description="The item to look up, e.g. the product or vehicle name.")]) -> dict[str, Any]:
    """Look up recent comparable market listings for an item."""
    _info_turn(ctx)
    data = ctx.state.data
    items = data.vocab["item"]
    key = item.strip().lower()
    code = next((i for i, name in enumerate(items) if name.lower() == key), -1)
    if code < 0:
        if not items:
            raise ToolError("no market data is available in this negotiation")
        raise ToolError(f"no market data for {item!r}{suggest(item, items)}; known items: {', '.join(items)}")
    answer = data.meta["market_answers"][code]
    return {**answer, "listings": list(answer["listings"])}


@BargainingWorld.tool(produces=["inventory"])
def get_inventory(ctx: ToolContext) -> dict[str, Any]:
    """Report current stock and capacity."""
    _info_turn(ctx)
    world = _world(ctx)
    if not world.params.inventory:
        raise ToolError("no inventory information is available in this negotiation")
    return dict(ctx.state.vars.get("inventory") or world.params.inventory)  # the episode's draw, if any


@BargainingWorld.tool(consumes=["topic"], produces=["policy"])
def check_policy(ctx: ToolContext, topic: Annotated[str, Field(
        description="The policy topic to look up, e.g. 'refunds'.")]) -> dict[str, Any]:
    """Look up a policy that applies to this negotiation."""
    _info_turn(ctx)
    policies = _world(ctx).params.policies
    found = {k.lower(): k for k in policies}.get(topic.strip().lower())
    if found is None:
        if not policies:
            raise ToolError("no policies are available in this negotiation")
        raise ToolError(f"no policy on {topic!r}{suggest(topic, policies)}; topics: {', '.join(policies)}")
    policy = policies[found]
    answer: dict[str, Any] = {"topic": found, "policy": policy.text}
    if policy.limits:
        answer["limits"] = {name: limit.model_dump(exclude_none=True) for name, limit in policy.limits.items()}
    return answer


# ----------------------------------------------------------------------------------------------
# The issue-specific make_offer


def _annotation(name: str, spec: IssueSpec) -> Any:
    description = _issue_domain(spec) + "."
    if spec.values is not None:
        return Annotated[Literal[tuple(spec.values)], Field(description=description)]  # type: ignore[misc]
    assert spec.range is not None
    lo, hi = spec.range
    if spec.integral:
        return Annotated[int, Field(ge=int(lo), le=int(hi), description=description)]
    return Annotated[float, Field(ge=lo, le=hi, description=description)]


_ISSUE_TOOLS: OrderedDict[str, tuple[OutcomeSpace, dict[str, Tool]]] = OrderedDict()


def _issue_tools(params: BargainingParams) -> tuple[OutcomeSpace, dict[str, Tool]]:
    """The outcome space and tool set of a world's issues, cached per issue declaration."""
    key = params.model_dump_json(include={"issues"})
    cached = _ISSUE_TOOLS.get(key)
    if cached is not None:
        return cached

    def make_offer(ctx: ToolContext, **terms: Any) -> dict[str, Any]:
        return _make_offer(ctx, terms)

    parameters = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=ToolContext)]
    annotations: dict[str, Any] = {}
    for name, spec in params.issues.items():
        annotations[name] = _annotation(name, spec)
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotations[name]))
    make_offer.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    make_offer.__annotations__ = annotations
    generic = BargainingWorld.tools["make_offer"]
    tools = dict(BargainingWorld.tools)
    tools["make_offer"] = Tool(make_offer, name="make_offer", description=generic.description,
                               consumes=generic.consumes, produces=generic.produces, writes=True)
    result = (OutcomeSpace(params.issues), tools)
    _ISSUE_TOOLS[key] = result
    while len(_ISSUE_TOOLS) > 16:
        _ISSUE_TOOLS.popitem(last=False)
    return result
