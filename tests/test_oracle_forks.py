"""The support oracle taking over another agent's conversation (`simworld replay RUN --fork-at N`).

Caught up on the prefix, the oracle must read the customer's answers as answers to what the other
agent asked, not to what it would have asked itself, and count only the questions the customer
heard: before, when another agent asked for a return's items and refund method in one question
(and the oracle would have asked for the items alone), the oracle dropped the refund method the
customer gave, counted its own unheard questions for it, and transferred to a human once the count
ran out.
"""

from __future__ import annotations

from pathlib import Path

from simworld.agents.retail.oracle import SupportOracle
from simworld.episode import episode_specs, run_episode_sync
from simworld.registry import load_builtins, register_agent
from simworld.replay import fork_trajectory, replay_trajectory, turn_boundaries
from simworld.scenario import load_scenario, scenario_from_data

load_builtins()
ROOT = Path(__file__).resolve().parent.parent


@register_agent("test_asks_items_and_refund_at_once")
class AsksItemsAndRefundAtOnce(SupportOracle):
    """The oracle, except that it always asks for a return's items and refund method in one question
    (the oracle does so half of the time)."""

    def resolve_items(self):
        req = self.req
        if req.intent == "return" and req.items is None and not req.items_text and not req.payment_text:
            order = self.orders[req.order_id]
            return self.ask("ask_items_refund", "items", {"order_id": req.order_id, "verb": "return",
                                                          "status": order["status"]}, also="payment")
        return super().resolve_items()


def _with_support(sc, agent: dict):
    return scenario_from_data(sc.model_dump(mode="json"), overrides={"roles.support.agent": agent})


def _turns(traj) -> int:
    return sum(1 for e in traj.events if e.role in ("user", "assistant"))


def test_the_oracle_reads_answers_to_a_question_it_would_not_have_asked():
    # The customer names the items and the refund method in one answer to the other agent: the oracle
    # taking over after that answer proposes the return without asking for the refund method again.
    sc = _with_support(load_scenario(ROOT / "scenarios/retail/return_delivered_order_items.yaml",
                                     overrides={"roles.customer.agent.clarify_rate": 0.0}),
                       {"type": "test_asks_items_and_refund_at_once"})
    oracle = _with_support(sc, {"type": "oracle"})
    forks = after_the_answer = 0
    for spec in episode_specs(sc, 12, sc.seed):
        traj = run_episode_sync(sc, spec)
        assert traj.outcome.success, traj.episode_id
        asked = next(i for i, e in enumerate(traj.events) if e.speaker == "support" and "refund go to" in e.content)
        answered = next(i for i, e in enumerate(traj.events) if i > asked and e.speaker == "customer")
        for at in turn_boundaries(traj):
            fork = fork_trajectory(traj, sc, at, oracle)
            forks += 1
            assert fork.outcome.success, (traj.episode_id, at, fork.outcome.termination, fork.outcome.missing_outputs)
            assert replay_trajectory(fork, oracle).ok
            if at >= answered:
                after_the_answer += 1
                asks = [e.content for e in fork.events[at + 1:] if e.speaker == "support"
                        and "which payment method" in e.content.lower()]
                assert not asks, (traj.episode_id, at, asks)
    assert forks >= 100 and after_the_answer >= 40, (forks, after_the_answer)


def test_the_oracle_takes_over_a_noisy_agent_at_any_turn():
    # Every turn boundary of noisy episodes (wrong calls, proposals the customer turned down):
    # wherever the oracle takes over with turns left, it serves every request.
    sc = load_scenario(ROOT / "scenarios/retail/noisy_support.yaml",
                       overrides={"roles.support.agent.error_rate": 0.5, "task.type": "return_delivered_order_items",
                                  "variations": {"roles.customer.agent.style": ["short", "long", "sloppy"]}})
    oracle = _with_support(sc, {"type": "oracle"})
    forks = 0
    failed = []
    for spec in episode_specs(sc, 24, sc.seed):
        traj = run_episode_sync(sc, spec)
        for at in turn_boundaries(traj):
            fork = fork_trajectory(traj, sc, at, oracle)
            if _turns(fork) >= sc.max_turns - 2:
                continue  # the parent used up the conversation: no turns left to serve it in
            forks += 1
            if not fork.outcome.success:
                failed.append((traj.episode_id, at, fork.outcome.termination))
    assert forks >= 300, forks
    assert not failed, failed
