"""Per-trajectory negotiation metrics, stored in ``outcome.metrics``.

Utilities are net of the deadline cost; an episode without agreement scores each party its
reservation value (the disagreement point), and distances are measured from that point too.
Keys with a role name (``utility_buyer``) exist per party. ``group`` names the strategy pairing
(the run summary averages numeric metrics per group); ``utilities`` maps role -> utility (the
environments' per-role rewards).
"""

from __future__ import annotations

import math
from typing import Any

from simworld.environments.negotiation.analysis import analyse
from simworld.environments.negotiation.space import utility_model


def agent_label(episode: Any, role: str) -> str:
    """The strategy of `role`: its agent's id, else the scenario's agent spec."""
    agent = getattr(episode, "agents", {}).get(role)
    if agent is not None:
        return str(agent.agent_id)
    spec = episode.sc.roles[role].agent.model_dump()
    kind = spec.pop("type")
    return kind + ("(" + ",".join(f"{k}={spec[k]}" for k in sorted(spec)) + ")" if spec else "")


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
    m: dict[str, Any] = {
        "group": " vs ".join(f"{r}={agent_label(episode, r)}" for r in parties),
        "agreement": agreed is not None,
        "agreed_outcome": dict(agreed["terms"]) if agreed else None,
        "agreement_round": int(agreed["round"]) if agreed else None,
        "rounds": record.offers,
        "utilities": {r: round(utility[r], 9) for r in parties},
        "pareto_distance": round(pareto_distance, 9),
        "pareto_optimal": agreed is not None and pareto_distance < 1e-9,
        "nash_distance": round(_distance(point, analysis.point(analysis.nash)), 9) if analysis.zopa else None,
        "ks_distance": (round(_distance(point, analysis.point(analysis.kalai_smorodinsky)), 9)
                        if analysis.zopa else None),
        "welfare": round(welfare, 9),
        "welfare_ratio": round(welfare / analysis.max_welfare_value, 9) if analysis.max_welfare_value > 0 else None,
        "zopa": analysis.zopa,
        "outcome_space": analysis.size,
        "frontier_size": int(analysis.frontier.shape[0]),
        "walked_away_by": state.vars.get("walked_away"),
        "invalid_moves": 0,
    }
    for r in parties:
        own = [float(models[r].utilities[o.outcome]) for o in record.offers_by(r)]
        invalid = sum(1 for e in episode.events
                      if e.speaker == r and (e.invalid is not None or (e.role == "tool" and e.error)))
        m["invalid_moves"] += invalid
        m.update({
            f"utility_{r}": round(utility[r], 9),
            f"reservation_{r}": round(models[r].reservation, 9),
            f"surplus_{r}": round(surplus[r], 9),
            f"surplus_share_{r}": round(surplus[r] / total_surplus, 9) if agreed and total_surplus > 0 else None,
            f"offers_{r}": len(own),
            f"concessions_{r}": sum(1 for x, y in zip(own, own[1:]) if y < x - 1e-12),
            f"conceded_{r}": round(own[0] - min(own), 9) if own else 0.0,
            f"invalid_moves_{r}": invalid,
        })
    return m
