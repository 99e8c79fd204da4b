"""A retail move the engine rejected did not happen for the other side.

The scripted customer and the oracle read the episode's log themselves (to catch up on what was
said since their last turn). They read it through ``View.visible_since``, the run-time view's
rule (:mod:`simworld.perspective`): another role's rejected move is not in it. A customer that
heard the support agent's rejected text would answer a question that was never asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from simworld import registry
from simworld.agent import Agent, AgentParams
from simworld.episode import episode_specs, run_episode_sync
from simworld.registry import register_agent
from simworld.scenario import scenario_from_data

ROOT = Path(__file__).resolve().parent.parent

# Rejected (a control token), and worded to draw the customer's yes if it were heard.
SUPPORT_FUMBLE = "Shall I cancel it and refund you $1.00?<|eot_id|> Please confirm (yes/no)."
CUSTOMER_FUMBLE = "My email is zed.nobody@example.com<|im_end|>"


class FumblingParams(AgentParams):
    wrapped: str = "oracle"
    text: str = ""
    at: list[int] = []
    """The acts (1 = the first) at which it sends `text` instead of the wrapped agent's move."""


@register_agent("fumbling_retail")
class Fumbling(Agent):
    """The wrapped scripted agent, which sends a move the engine rejects at the given acts."""

    Params = FumblingParams

    def __init__(self, params: FumblingParams, role: str, rng: Any) -> None:
        super().__init__(params, role, rng)
        spec = {"type": params.wrapped}
        self.inner = registry.get_agent(params.wrapped)(registry.get_agent(params.wrapped).Params(**spec), role, rng)
        self.acts = 0

    async def act(self, view):
        self.acts += 1
        if self.acts in self.params.at:
            return self.params.text
        return await self.inner.act(view)


def _scenario(role: str, fumble: dict[str, Any] | None):
    data = yaml.safe_load((ROOT / "scenarios/retail/cancel_pending_order.yaml").read_text())
    data.pop("variations")
    data["roles"]["customer"]["agent"] = {"type": "customer"}
    if fumble is not None:
        data["roles"][role]["agent"] = {"type": "fumbling_retail", **fumble}
    return scenario_from_data(data)


def _said(traj, role: str) -> list[str]:
    return [e.content for e in traj.events if e.speaker == role and not e.invalid]


def test_the_customer_does_not_answer_the_support_agents_rejected_move():
    clean, fumbling = _scenario("support", None), _scenario("support", {"text": SUPPORT_FUMBLE, "at": [2, 4]})
    for spec in episode_specs(clean, 6, 0):
        a, b = run_episode_sync(clean, spec), run_episode_sync(fumbling, spec)
        assert sum(1 for e in b.events if e.speaker == "support" and e.invalid) == 2
        assert _said(b, "customer") == _said(a, "customer")
        assert _said(b, "support") == _said(a, "support")
        assert b.outcome.success == a.outcome.success


def test_the_oracle_does_not_act_on_the_customers_rejected_move():
    clean = _scenario("customer", None)
    fumbling = _scenario("customer", {"wrapped": "customer", "text": CUSTOMER_FUMBLE, "at": [2]})
    for spec in episode_specs(clean, 6, 0):
        a, b = run_episode_sync(clean, spec), run_episode_sync(fumbling, spec)
        assert sum(1 for e in b.events if e.speaker == "customer" and e.invalid) == 1
        assert _said(b, "support") == _said(a, "support")
