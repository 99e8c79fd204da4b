"""Per-trajectory negotiation metrics, stored in ``outcome.metrics``.

Utilities are net of the deadline cost; an episode without agreement scores each party its
reservation value (the disagreement point), and distances are measured from that point too.

Top-level numbers are the ones a run summary averages per ``group`` (the strategy pairing):
``agreement``, ``agreement_round``, ``rounds``, ``utility_<role>``, ``pareto_distance``,
``nash_distance``, ``welfare_ratio``. Per-party details are mappings role -> value
(``surplus_share``, ``offers``, ``concessions`` (offers worth less to the offerer than its
previous one), ``conceded`` (utility given up from its first offer), ``invalid_moves`` (invalid
actions and refused tool calls), ``passes`` (turns of text alone), ``reservations``,
``utilities``: the environments' per-role rewards, ``temperaments``: the temperament drawn for each
party, or None), and ``solution`` holds the
rest (Kalai-Smorodinsky distance, Pareto optimality, zone of agreement, outcome-space size).
"""

from __future__ import annotations

import math
from typing import Any

from simworld import registry
from simworld.agent import config_id
from simworld.environments.negotiation.analysis import analyse
from simworld.environments.negotiation.space import utility_model
from simworld.errors import SimworldError


def agent_label(episode: Any, role: str) -> str:
    """The strategy of `role`: its agent's id, else the scenario's agent spec."""
    agent = getattr(episode, "agents", {}).get(role)
    if agent is not None:
        return str(agent.agent_id)
    if role not in episode.sc.roles:
        return "absent"  # a party the scenario gives no role (the episode fails at its first turn)
    spec = episode.sc.roles[role].agent
    try:  # as the agent would have labelled itself: the parameters that differ from their defaults
        return config_id(spec.type, registry.get_agent(spec.type).Params.model_validate(spec.model_dump()))
    except (SimworldError, ValueError):  # (an agent this install lacks, or parameters it refuses)
        return config_id(spec.type, spec)  # (every parameter the scenario gives: none has a default here)


def _distance(p: tuple[float, float], q: tuple[float, float]) -> float:
    return math.hypot(p[0] - q[0], p[1] - q[1])


def negotiation_metrics(episode: Any) -> dict[str, Any]:
    """The metrics of a (finished or cut-off) negotiation episode."""
    world, task, state = episode.world, episode.task, episode.state
    record = world.record(state)
    parties = list(task.goal["parties"])
    a, b = parties
    models = {role: utility_model(task.private[role]["utility"]) for role in parties}
    analysis = analyse(models[a], models[b])
    agreed = state.vars.get("agreement") if record.status == "agreement" else None
    if agreed is not None:
        outcome = int(agreed["outcome"])
        cost = world.params.deadline_cost * (int(agreed["round"]) - 1)
        utility = {r: float(models[r].utilities[outcome]) - cost for r in parties}
    else:
        utility = {r: models[r].reservation for r in parties}
    point = (utility[a], utility[b])
    surplus = {r: utility[r] - models[r].reservation for r in parties}
    total_surplus = surplus[a] + surplus[b]
    welfare = point[0] + point[1]
    pareto_distance = analysis.frontier_distance(point)
    own = {r: [float(models[r].utilities[o.outcome]) for o in record.offers_by(r)] for r in parties}
    invalid = dict.fromkeys(parties, 0)
    passes = dict.fromkeys(parties, 0)  # turns of text alone: talk, no protocol move
    for e in episode.events:
        if e.speaker not in invalid:
            continue
        if e.invalid is not None or e.error or (e.role == "assistant" and not e.tool_calls and not e.content.strip()):
            invalid[e.speaker] += 1  # the engine counts an empty turn as invalid too
        elif e.role == "assistant" and not e.tool_calls:
            passes[e.speaker] += 1
    m: dict[str, Any] = {
        "group": " vs ".join(f"{r}={agent_label(episode, r)}" for r in parties),
        "agreement": agreed is not None,
        "agreement_round": int(agreed["round"]) if agreed else None,
        "rounds": record.offers,
        **{f"utility_{r}": round(utility[r], 9) for r in parties},
        "pareto_distance": round(pareto_distance, 9),
        "nash_distance": round(_distance(point, analysis.point(analysis.nash)), 9) if analysis.zopa else None,
        "welfare_ratio": round(welfare / analysis.max_welfare_value, 9) if analysis.max_welfare_value > 0 else None,
        "agreed_outcome": dict(agreed["terms"]) if agreed else None,
        "utilities": {r: round(utility[r], 9) for r in parties},
        "reservations": {r: round(models[r].reservation, 9) for r in parties},
        "surplus_share": ({r: round(surplus[r] / total_surplus, 9) for r in parties}
                          if agreed and total_surplus > 0 else None),
        "offers": {r: len(own[r]) for r in parties},
        "concessions": {r: sum(1 for x, y in zip(own[r], own[r][1:]) if y < x - 1e-12) for r in parties},
        "conceded": {r: round(own[r][0] - min(own[r]), 9) if own[r] else 0.0 for r in parties},
        "invalid_moves": invalid,
        "passes": passes,
        "walked_away_by": state.vars.get("walked_away"),
        "temperaments": {r: (task.private[r].get("temperament") or {}).get("name") for r in parties},
        "solution": {
            "ks_distance": (round(_distance(point, analysis.point(analysis.kalai_smorodinsky)), 9)
                            if analysis.zopa else None),
            "pareto_optimal": agreed is not None and pareto_distance < 1e-9,
            "zopa": analysis.zopa,
            "welfare": round(welfare, 9),
            "outcome_space": analysis.size,
            "frontier_size": int(analysis.frontier.shape[0]),
        },
    }
    return m
