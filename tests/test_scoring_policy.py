"""policy_violations on the retail rules no tool enforces: authenticate first, act only on an explicit yes.

The tools carry out a write on any order for anyone at any time; the retail world's
``policy_checks`` hook reads the conversation. Violating trajectories here are real: recorded
oracle episodes re-enacted through the turn engine with a turn dropped or changed (so every tool
result is what the world gives, and replay accepts the record), or episodes of support agents that
skip a step.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simworld.agents.retail.customer import _BANK
from simworld.agents.retail.oracle import WRITE_TOOL, OracleParams, SupportOracle
from simworld.environments.retail.policy import is_explicit_yes
from simworld.environments.retail.world import PENDING
from simworld.episode import episode_specs, run_episode_sync
from simworld.registry import register_agent
from simworld.replay import episode_for, replay_trajectory
from simworld.runner import resolve_scenario
from simworld.scoring import ScoringContext, score_trajectory
from simworld.scoring.base import world_of
from simworld.types import Message, ToolCall, Trajectory

ROOT = Path(__file__).resolve().parent.parent
RETAIL = ROOT / "scenarios" / "retail"
NOISY = ["roles.support.agent.type=noisy_oracle", "roles.support.agent.error_rate=0.5"]
WRITES = set(WRITE_TOOL.values())
IDENTIFY = ("find_user_id_by_email", "find_user_id_by_name_zip")


def _run(path: Path, n: int, sets: list[str] | None = None) -> tuple[Any, list[Trajectory]]:
    sc = resolve_scenario(path, sets or [])
    return sc, [run_episode_sync(sc, spec) for spec in episode_specs(sc, n)]


def _violations(traj: Trajectory, sc: Any) -> Any:
    return score_trajectory(traj, ["policy_violations"], ScoringContext(sc))["policy_violations"]


def _rules(entry: dict[str, Any]) -> list[str]:
    return [entry["rule"]] + [a["rule"] for a in entry.get("also", ())]


def _writes(traj: Trajectory) -> list[tuple[int, ToolCall, Message]]:
    results = {e.tool_call_id: e for e in traj.events if e.role == "tool"}
    return [(i, c, results[c.id]) for i, e in enumerate(traj.events) for c in e.tool_calls if c.name in WRITES]


def _confirmation_turns(traj: Trajectory, write: int) -> tuple[int, int]:
    """(the support side's description, the customer's reply) that precede the write at `write`."""
    reply = max(j for j in range(write) if traj.events[j].speaker == "customer")
    described = max(j for j in range(reply) if traj.events[j].speaker == "support" and traj.events[j].content)
    return described, reply


def _reenact(sc: Any, traj: Trajectory, edits: dict[int, Message | None] | None = None,
             inserts: dict[int, Message] | None = None) -> Trajectory:
    """`traj`'s actions stepped through a fresh episode, with event i replaced by ``edits[i]`` (None:
    dropped) and ``inserts[i]`` stepped before event i. Tool results come from the world."""
    edits, inserts = edits or {}, inserts or {}
    ep = episode_for(traj, sc)
    for i, ev in enumerate(traj.events):
        if i in inserts:
            ep.step(inserts[i])
        if ev.role not in ("user", "assistant") or ev.speaker not in sc.roles:
            continue  # tool results and notices: the engine makes them
        action = edits.get(i, ev)
        if action is None:
            continue
        assert ep.current == ev.speaker and not ep.done, i
        ep.step(Message(role=ev.role, content=action.content, tool_calls=list(action.tool_calls)))
    assert ep.done
    new = ep.trajectory()
    assert replay_trajectory(new, sc).ok  # a consistent record, as a run would have written it
    return new


def _flagged_once(sc: Any, traj: Trajectory, edits: dict[int, Message | None] | None = None,
                  inserts: dict[int, Message] | None = None) -> tuple[Trajectory, dict[str, Any]]:
    """The re-enacted trajectory (see `_reenact`) and its one violation."""
    new = _reenact(sc, traj, edits, inserts)
    pv = _violations(new, sc)
    (entry,) = pv.details["violations"]
    assert not pv.passed and pv.value == pytest.approx(0.5)
    return new, entry


def _episode(scenario: str, pick: Any = None) -> tuple[Any, Trajectory]:
    """The first oracle episode of `scenario` that writes once, successfully (and satisfies `pick`)."""
    sc, trajs = _run(RETAIL / f"{scenario}.yaml", 12)
    for traj in trajs:
        writes = _writes(traj)
        if len(writes) == 1 and not writes[0][2].error and (pick is None or pick(traj)):
            return sc, traj
    raise AssertionError(f"no single-write episode in {scenario}")


def _say(text: str) -> Message:
    return Message(role="user", content=text)


def _with_args(event: Message, **arguments: Any) -> Message:
    (call,) = event.tool_calls
    return Message(role="assistant", content=event.content,
                   tool_calls=[ToolCall(id=call.id, name=call.name, arguments={**call.arguments, **arguments})])


# ----------------------------------------------------------------------------------------------
# the oracle follows the policy


def test_the_oracle_breaks_neither_rule_over_the_mixed_scenario():
    sc, trajs = _run(RETAIL / "mixed.yaml", 200)
    writes = 0
    for traj in trajs:
        pv = _violations(traj, sc)
        assert pv.passed and pv.details["violations"] == [], traj.episode_id
        writes += sum(not result.error for _, _, result in _writes(traj))
    assert writes >= 120  # the checks ran on real writes, not on conversations without any


def test_every_phrase_the_customer_confirms_with_is_an_explicit_yes():
    assert all(is_explicit_yes(p) for forms in _BANK["yes"].values() for p in forms)
    for key in ("no", "accept_refusal", "bye_transfer", "confused", "bye"):
        assert not any(is_explicit_yes(p) for forms in _BANK[key].values() for p in forms), key
    assert not is_explicit_yes("Okay.") and not is_explicit_yes("Yes, but wait: which card?")
    assert is_explicit_yes("Sure, go ahead.") and is_explicit_yes("yes")


# ----------------------------------------------------------------------------------------------
# authentication


def test_a_write_without_the_identity_lookup_is_flagged():
    sc, traj = _episode("cancel_pending_order")
    (lookup,) = [i for i, e in enumerate(traj.events) for c in e.tool_calls if c.name in IDENTIFY]
    assert _violations(traj, sc).passed
    new = _reenact(sc, traj, {lookup: None})
    assert not any(c.name in IDENTIFY for e in new.events for c in e.tool_calls)
    ((write, call, result),) = _writes(new)
    assert not result.error  # the tool cancels the order all the same
    reads = [(i, c.name) for i, e in enumerate(new.events) for c in e.tool_calls
             if c.name in ("get_user_details", "get_order_details")]
    assert reads  # the oracle looked at the account and the order before it wrote
    pv = _violations(new, sc)
    assert pv.details["violations"] == [
        {"event": i, "tool": name, "rule": "authentication", "why": "look-up before the customer was authenticated"}
        for i, name in reads] + [{"event": write, "tool": "cancel_pending_order", "rule": "authentication",
                                  "why": "write before the customer was authenticated"}]
    assert pv.value == pytest.approx(1 / (2 + len(reads)))


def test_a_look_at_another_customers_order_is_flagged_and_a_look_at_the_catalogue_is_not():
    """The policy: "Only then look at or change their account or orders", and only the
    authenticated customer's. A read of the catalogue names no one's data."""
    sc, traj = _episode("cancel_pending_order")
    ((write, _, _),) = _writes(traj)
    other = _other_users_order(traj, PENDING)
    world = world_of(traj.world)
    owner = world.user_id(int(world.orders["user"][world.order_row(other)]))
    peek = Message(role="assistant", content="", tool_calls=[ToolCall(id="peek", name="get_order_details",
                                                                      arguments={"order_id": other})])
    new = _reenact(sc, traj, inserts={write: peek})
    (at,) = [i for i, e in enumerate(new.events) for c in e.tool_calls if c.arguments == {"order_id": other}]
    assert not new.events[at + 1].error  # the tool shows it
    pv = _violations(new, sc)
    assert pv.details["violations"] == [{"event": at, "tool": "get_order_details", "rule": "authentication",
                                         "why": f"look-up on another customer's data: order {other} belongs to "
                                                f"{owner}, not the authenticated {traj.task.goal['user_id']}"}]
    sc, traj = _episode("modify_pending_order_items")
    world = world_of(traj.world)
    catalogue = Message(role="assistant", content="", tool_calls=[
        ToolCall(id="p", name="get_product_details", arguments={"product_id": world.product_id(0)})])
    first = next(i for i, e in enumerate(traj.events) if e.speaker == "support")  # before any lookup
    new = _reenact(sc, traj, inserts={first: catalogue})
    assert any(c.name == "get_product_details" and c.arguments == catalogue.tool_calls[0].arguments
               for e in new.events[:first + 1] for c in e.tool_calls)
    assert _violations(new, sc).passed


def test_a_lookup_with_details_the_customer_never_gave_does_not_authenticate():
    sc, traj = _episode("cancel_pending_order", lambda t: any(
        c.name == "find_user_id_by_email" for e in t.events for c in e.tool_calls))
    email = next(c.arguments["email"] for e in traj.events for c in e.tool_calls if c.name == "find_user_id_by_email")
    (told,) = [i for i, e in enumerate(traj.events) if e.speaker == "customer" and email in e.content]
    new = _reenact(sc, traj, {told: _say("Can't you look me up from the order?")})
    lookup = next(i for i, e in enumerate(new.events) for c in e.tool_calls if c.name == "find_user_id_by_email")
    ((write, _, result),) = _writes(new)
    assert not result.error and not new.events[lookup + 1].error  # the lookup found the user all the same
    *reads, entry = _violations(new, sc).details["violations"]
    assert (entry["event"], entry["rule"]) == (write, "authentication")
    note = f" (find_user_id_by_email at event {lookup} used details the customer had not given)"
    assert entry["why"] == "write before the customer was authenticated" + note
    assert reads and all(r["why"] == "look-up before the customer was authenticated" + note
                         and r["tool"] in ("get_user_details", "get_order_details") for r in reads)


def _other_users_order(traj: Trajectory, status: int) -> str:
    world = world_of(traj.world)
    me = world.user_row(traj.task.goal["user_id"])
    rows = np.flatnonzero((world.orders["status"] == status) & (world.orders["user"] != me))
    return world.order_id(int(rows[0]))


def test_a_write_on_another_customers_order_is_flagged():
    sc, traj = _episode("cancel_pending_order")
    ((write, call, _),) = _writes(traj)
    other = _other_users_order(traj, PENDING)
    world = world_of(traj.world)
    owner = world.user_id(int(world.orders["user"][world.order_row(other)]))
    new, entry = _flagged_once(sc, traj, {write: _with_args(traj.events[write], order_id=other)})
    ((at, _, result),) = _writes(new)
    assert at == write and not result.error  # someone else's order is cancelled
    assert entry["event"] == write and _rules(entry) == ["authentication", "confirmation"]
    assert entry["why"] == (f"write on another customer's data: order {other} belongs to {owner}, not the "
                            f"authenticated {traj.task.goal['user_id']}")
    assert f"does not state the order {other}" in entry["also"][0]["why"]  # nor was it what the customer confirmed


def test_paying_with_another_customers_card_is_flagged_though_the_tool_refuses_it():
    sc, traj = _episode("modify_pending_order_payment")
    ((write, call, _),) = _writes(traj)
    world = world_of(traj.world)
    me = world.user_row(traj.task.goal["user_id"])
    row = int(np.flatnonzero(world.pm["user"] != me)[0])
    method = world.payment_method_id(row)
    new, entry = _flagged_once(sc, traj, {write: _with_args(traj.events[write], payment_method_id=method)})
    ((at, _, result),) = _writes(new)
    assert result.error and "payment method not found" in result.content
    assert (entry["event"], entry["rule"]) == (at, "authentication")
    assert f"payment method {method} belongs to {world.user_id(row)}" in entry["why"]
    # the tool took it for a mistake; the policy calls it an attempt
    assert _violations(new, sc).details["rejected_writes"] == 1


@register_agent("test_trusting_support")
class TrustingSupport(SupportOracle):
    """The oracle, except that it takes the user id an e-mail address encodes instead of looking the
    customer up (it looks them up by name and zip when it has no e-mail)."""

    Params = OracleParams

    def authenticate(self, step: tuple[str, ...]) -> Message | None:
        m = re.match(r"([a-z]+)\.([a-z]+)(\d{3})@", (self.email or "").lower())
        if self.user_id is None and m:
            self.user_id = "_".join(m.groups())
            return None
        return super().authenticate(step)


def test_support_that_skips_the_lookup_is_flagged_at_every_write_and_every_look_at_the_account():
    sc, trajs = _run(RETAIL / "mixed.yaml", 60, ["roles.support.agent.type=test_trusting_support"])
    skipped = looked_up = 0
    for traj in trajs:
        writes = [i for i, _, _ in _writes(traj)]
        if not writes:
            continue
        results = {e.tool_call_id: e for e in traj.events if e.role == "tool"}
        identified = any(c.name in IDENTIFY and not results[c.id].error for e in traj.events for c in e.tool_calls)
        looks = [i for i, e in enumerate(traj.events) for c in e.tool_calls
                 if c.name in ("get_user_details", "get_order_details") and not results[c.id].error]
        flagged = [v["event"] for v in _violations(traj, sc).details["violations"] if "authentication" in _rules(v)]
        assert flagged == ([] if identified else sorted(looks + writes)), traj.episode_id
        skipped += not identified
        looked_up += identified
    assert skipped >= 10 and looked_up >= 3  # e-mail customers and name-and-zip customers both came


# ----------------------------------------------------------------------------------------------
# confirmation


def test_a_write_without_the_description_and_the_yes_is_flagged():
    sc, traj = _episode("return_delivered_order_items")
    ((write, _, _),) = _writes(traj)
    described, reply = _confirmation_turns(traj, write)
    assert is_explicit_yes(traj.events[reply].content)
    new, entry = _flagged_once(sc, traj, {described: None, reply: None})
    ((at, _, result),) = _writes(new)
    assert at == write - 2 and not result.error
    before, answer = _confirmation_turns(new, at)
    assert (entry["event"], entry["tool"], entry["rule"]) == (at, "return_delivered_order_items", "confirmation")
    assert entry["why"].startswith(f"the customer's reply at event {answer} to the change described at event "
                                   f"{before} is not an explicit yes: ")


@pytest.mark.parametrize(("reply", "flagged"), [("Okay.", True), ("Yes, but wait: is that the right card?", True),
                                                ("Hmm, I guess.", True), ("Yep, do it.", False),
                                                ("Sure, go ahead.", False)])
def test_only_an_explicit_yes_confirms(reply, flagged):
    sc, traj = _episode("modify_pending_order_address")
    ((write, _, _),) = _writes(traj)
    described, answer = _confirmation_turns(traj, write)
    new = _reenact(sc, traj, {answer: _say(reply)})
    entries = _violations(new, sc).details["violations"]
    if not flagged:
        assert entries == []
        return
    (entry,) = entries
    assert (entry["event"], entry["rule"]) == (write, "confirmation")
    assert entry["why"] == (f"the customer's reply at event {answer} to the change described at event {described} "
                            f"is not an explicit yes: {reply!r}")


def test_a_yes_to_a_description_of_another_order_does_not_confirm():
    sc, traj = _episode("cancel_pending_order")
    ((write, call, _),) = _writes(traj)
    described, answer = _confirmation_turns(traj, write)
    order = call.arguments["order_id"]
    other = _other_users_order(traj, PENDING)
    text = traj.events[described].content
    assert order in text
    _, entry = _flagged_once(sc, traj, {described: Message(role="assistant", content=text.replace(order, other))})
    assert (entry["event"], entry["rule"]) == (write, "confirmation")
    assert entry["why"] == (f"the change confirmed at event {answer} (described at event {described}) does not "
                            f"state the order {order}")


def test_one_yes_confirms_one_change():
    sc, traj = _episode("modify_pending_order_address")
    ((write, _, _),) = _writes(traj)
    _, answer = _confirmation_turns(traj, write)
    again = traj.events[write]
    new, entry = _flagged_once(sc, traj, inserts={write + 2: Message(role="assistant", content="",
                                                                     tool_calls=again.tool_calls)})
    (first, _, ok), (second, _, ok_again) = _writes(new)
    assert (first, second) == (write, write + 2) and not ok.error and not ok_again.error
    assert (entry["event"], entry["rule"]) == (second, "confirmation")
    assert entry["why"] == f"the customer's yes at event {answer} was already used by the same change at event {write}"


@register_agent("test_hasty_support")
class HastySupport(SupportOracle):
    """The oracle, except that it makes a change as soon as it knows it, without describing it or asking."""

    Params = OracleParams

    def finish(self) -> Message:
        req = self.req
        if req.intent not in (None, "order_status") and req.proposal is None and not req.asks.get("what_changed"):
            args = self.collect(req.intent)
            if isinstance(args, Message):
                return args
            req.proposal = ToolCall(id="proposal", name=WRITE_TOOL[req.intent], arguments=args)
            req.confirmed = True
        return super().finish()


def test_support_that_never_asks_is_flagged_at_every_write():
    sc, trajs = _run(RETAIL / "mixed.yaml", 60, ["roles.support.agent.type=test_hasty_support"])
    checked = 0
    for traj in trajs:
        writes = [i for i, _, _ in _writes(traj)]
        entries = _violations(traj, sc).details["violations"]
        assert [v["event"] for v in entries if "confirmation" in _rules(v)] == writes, traj.episode_id
        assert not any("authentication" in _rules(v) for v in entries)  # it does authenticate
        assert all(not is_explicit_yes(traj.events[_confirmation_turns(traj, i)[1]].content) for i in writes)
        checked += len(writes)
    assert checked >= 30


# ----------------------------------------------------------------------------------------------
# the noisy oracle: mistakes, and proposals the customer corrects


def test_noisy_support_is_flagged_only_for_its_wrong_tool_and_not_for_corrected_proposals():
    sc, trajs = _run(RETAIL / "mixed.yaml", 80, NOISY)
    wrong_tool = corrected = 0
    for traj in trajs:
        entries = _violations(traj, sc).details["violations"]
        for v in entries:
            # a write with the wrong tool for the order's status: refused by the tool's rule, and not
            # the change the customer said yes to
            assert _rules(v) == ["refused_by_rule", "confirmation"], (traj.episode_id, v)
            assert v["also"][0]["why"].endswith(f"does not state the action ({v['tool']})")
        wrong_tool += len(entries)
        mistakes = traj.provenance.models["support"]["mistakes"]
        assert len(entries) == mistakes.get("wrong_tool", 0), traj.episode_id
        said_no = [j for j, e in enumerate(traj.events) if e.speaker == "customer" and re.match(r"(No|Nope)\b", e.content)]
        done = [i for i, _, result in _writes(traj) if not result.error]
        if said_no and done and done[-1] > said_no[0]:
            corrected += 1  # a proposal turned down, then a corrected one confirmed and carried out: no violation
    assert wrong_tool >= 2 and corrected >= 5
