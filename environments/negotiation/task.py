"""The `negotiate` task: each party's private preferences and brief, and the reference points.

There is no gold plan and no single expected end state (any agreement in the zone of possible
agreement is a valid ending); the episode is judged by the metrics the world computes at the end.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import orjson

from simworld.environments.negotiation.analysis import Analysis, analyse
from simworld.environments.negotiation.space import (
    OutcomeSpace,
    PartyProfile,
    nearest_outcome,
    spec_key,
    utility_model,
)
from simworld.environments.negotiation.spec import BargainingTaskParams, PartySpec, Temperament
from simworld.environments.negotiation.world import BargainingWorld, open_negotiation, party_name
from simworld.errors import counted
from simworld.registry import register_task
from simworld.task import TaskGenerator, TaskInstance
from simworld.world import State


def _preference_line(space: OutcomeSpace, name: str, weight: float, function: dict[str, Any]) -> str:
    head = f"- {space.label(name)} ({weight * 100:.0f}% of your score): "
    # Episodes of one party share its function objects (PartyProfile): look them up by identity
    # first (the entry holds the object, so its id is not reused), else by content.
    by_id = space.memo.get(("preference-of", name, id(function)))
    if by_id is not None and by_id[0] is function:
        return head + by_id[1]
    key = ("preference", name, orjson.dumps(function, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS))
    tail = space.memo.get(key)
    if tail is None:
        tail = space.memo[key] = _preference_words(space, name, function)
    if len(space.memo) > 10_000:
        space.memo.clear()
    space.memo[("preference-of", name, id(function))] = (function, tail)
    return head + tail


def _preference_words(space: OutcomeSpace, name: str, function: dict[str, Any]) -> str:
    spec = space.issues[name]
    head = ""
    text = space.value_texts(name)
    if "prefer" in function:
        best, worst = (text[-1], text[0]) if function["prefer"] == "high" else (text[0], text[-1])
        direction = "higher" if function["prefer"] == "high" else "lower"
        if spec.numeric:
            return head + f"the {direction} the better: {best} is best for you, {worst} worst."
        ranked = text[::-1] if function["prefer"] == "high" else text
        return head + "from best to worst for you: " + ", ".join(ranked) + "."
    if "peak" in function:
        return head + f"ideally {space.value_text(name, function['peak'])}; the further from it, the worse."
    i = space.names.index(name)
    scaled = space.normalised_values(i, function) * 100
    if spec.continuous:
        xs = sorted(float(k) for k, _ in function["table"])
        marks = [(x, float(np.interp(x, np.array(space.grids[i], dtype=float), scaled))) for x in xs]
        return head + "your satisfaction at key points: " + ", ".join(
            f"{space.value_text(name, x)} -> {s:.0f}" for x, s in marks) + " (linear in between)."
    order = np.argsort(-scaled, kind="stable")
    ranked = [f"{text[i]} ({scaled[i]:.0f})" for i in order]
    return head + "from best to worst for you: " + ", ".join(ranked) + "."


def party_brief(space: OutcomeSpace, role: str, party: PartySpec, spec: dict[str, Any], example: int,
                example_utility: float, max_rounds: int, temperament: Temperament | None = None) -> str:
    """What an LLM playing `role` is told privately: its goal, its temperament in this episode,
    preferences and walk-away point."""
    lines = []
    if party.brief.strip():
        lines.append(party.brief.strip())
    if temperament is not None and temperament.text.strip():
        lines.append(" ".join(temperament.text.split()))
    lines.append(f"You negotiate as {party_name(role)}. Your private preferences (never reveal them exactly):")
    for name in space.names:
        weight = spec["weights"][name]
        if weight > 0:
            lines.append(_preference_line(space, name, weight, spec["functions"][name]))
    r = spec["reservation"]
    lines.append(
        "A deal scores from 0 to 100 for you: the weighted sum of how well each term suits you. "
        f"With no deal you score {r * 100:.0f}, so never accept terms that score less. "
        f"For example, {space.describe_outcome(example)} would score about {example_utility * 100:.0f}. "
        f"At most {counted(max_rounds, 'offer')} can be exchanged in total."
    )
    return "\n".join(lines)


def _reference(space: OutcomeSpace, analysis: Analysis, outcome: int, parties: list[str]) -> dict[str, Any] | None:
    if outcome < 0:
        return None
    ua, ub = analysis.point(outcome)
    return {"terms": space.terms(outcome), "utilities": {parties[0]: round(ua, 6), parties[1]: round(ub, 6)}}


_PROFILES: OrderedDict[tuple[int, int], tuple[OutcomeSpace, PartySpec, PartyProfile]] = OrderedDict()


def party_profile(space: OutcomeSpace, party: PartySpec) -> PartyProfile:
    """The compiled preferences of a scenario party, once per (space, party) object pair (validated
    world params are shared by every episode, so this is once per distinct party declaration)."""
    key = (id(space), id(party))
    cached = _PROFILES.get(key)
    if cached is not None and cached[0] is space and cached[1] is party:
        return cached[2]
    functions = {n: f.model_dump(exclude_none=True) for n, f in party.utilities.items()}
    profile = PartyProfile(space, party.weights, functions)
    _PROFILES[key] = (space, party, profile)  # holding both keeps their ids from being reused
    while len(_PROFILES) > 64:
        _PROFILES.popitem(last=False)
    return profile


@register_task("bargaining", "negotiate")
class Negotiate(TaskGenerator):
    """Sample one negotiation: jittered private preferences, a temperament per party (where the
    scenario lists some), the stock (where `world.params.stock.vary`) and briefs for both parties."""

    Params = BargainingTaskParams
    params: BargainingTaskParams

    def sample(self, world: BargainingWorld, state: State, rng: np.random.Generator) -> TaskInstance:  # type: ignore[override]
        p = world.params
        space = world.space
        parties = list(p.parties)
        specs: dict[str, dict[str, Any]] = {}
        profiles: dict[str, PartyProfile] = {}
        for role in parties:
            party = p.parties[role]
            weights = dict(party.weights)
            if self.params.weight_jitter > 0:
                j = self.params.weight_jitter
                factors = rng.uniform(1 - j, 1 + j, len(space.names))
                weights = {n: weights.get(n, 0.0) * float(f) for n, f in zip(space.names, factors)}
            reservation = party.reservation
            if self.params.reservation_jitter > 0:
                j = self.params.reservation_jitter
                reservation = min(max(reservation + float(rng.uniform(-j, j)), 0.0), 0.95)
            profiles[role] = profile = party_profile(space, party)
            specs[role] = profile.spec(weights, reservation)
        # Drawn after the preferences, so a scenario without temperaments samples as it always did.
        temperaments = {role: p.parties[role].temperaments[int(rng.integers(len(p.parties[role].temperaments)))]
                        for role in parties if p.parties[role].temperaments}
        inventory = p.stock.draw(p.inventory, rng) if p.stock is not None and p.stock.vary else None
        models = {role: utility_model(specs[role], profiles[role]) for role in parties}
        analysis = analyse(models[parties[0]], models[parties[1]])
        private: dict[str, dict[str, Any]] = {}
        for i, role in enumerate(parties):
            model = models[role]
            example = nearest_outcome(model, max(model.reservation, 0.0) + 0.02)
            private[role] = {
                "utility": specs[role],
                "reservation": specs[role]["reservation"],
                "counterpart": parties[1 - i],
                "max_rounds": p.max_rounds,
                "deadline_cost": p.deadline_cost,
                "brief": party_brief(space, role, p.parties[role], specs[role], example,
                                     float(model.utilities[example]), p.max_rounds, temperaments.get(role)),
            }
            if role in temperaments:
                private[role]["temperament"] = temperaments[role].model_dump(exclude={"text"})
        open_negotiation(state, parties)
        if inventory is not None:
            state.vars["inventory"] = inventory  # what get_inventory reports in this episode
        goal = {
            "subject": p.subject,
            "parties": parties,
            "outcome_space": analysis.size,
            "frontier_size": int(analysis.frontier.shape[0]),
            "zopa": analysis.zopa,
            "nash": _reference(space, analysis, analysis.nash, parties),
            "kalai_smorodinsky": _reference(space, analysis, analysis.kalai_smorodinsky, parties),
            "max_welfare": _reference(space, analysis, analysis.max_welfare, parties),
        }
        return TaskInstance(type="negotiate", instance_id=f"negotiate-{spec_key(specs)[:12]}", goal=goal,
                            private=private, gold_plan=[], expected_state=None)

