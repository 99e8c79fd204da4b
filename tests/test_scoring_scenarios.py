"""Scorers on real runs of the shipped scenarios: pass^k over task success, policy violations on any
task, readable collateral damage, the negotiation value against the Nash point, the piped table."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from simworld.episode import Episode, episode_specs
from simworld.runio import iter_records
from simworld.runner import resolve_scenario, run_batch
from simworld.scoring import ScoringContext, score_trajectory
from simworld.scoring.report import score_run
from simworld.types import Message, ToolCall, Trajectory
from test_replay import cli

ROOT = Path(__file__).resolve().parent.parent
RETAIL = ROOT / "scenarios" / "retail"
NEGOTIATION = sorted((ROOT / "scenarios" / "negotiation").glob("*.yaml"))
NOISY = ["roles.support.agent.type=noisy_oracle", "roles.support.agent.error_rate=0.5"]


def _act(agent: Any, view: Any) -> Any:
    """A scripted agent's turn (its coroutine never awaits)."""
    coro = agent.act(view)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("a scripted agent awaited")


def _drive(ep: Episode, first_move: dict[str, Message]) -> Trajectory:
    """Run `ep` with its agents, except that each role in `first_move` makes that move at its first turn."""
    pending = dict(first_move)
    while not ep.done:
        role = ep.current
        ep.step(pending.pop(role) if role in pending else _act(ep.agents[role], ep.view(role)))
    return ep.trajectory()


def _call(name: str, **arguments: Any) -> Message:
    return Message(role="assistant", content="", tool_calls=[ToolCall(id="x", name=name, arguments=arguments)])


def _score(traj: Trajectory, sc: Any, name: str) -> Any:
    return score_trajectory(traj, [name], ScoringContext(sc))[name]


@pytest.fixture(scope="module")
def noisy_mixed(tmp_path_factory):
    """The QA run: every retail task type with the noisy support agent at error rate 0.5."""
    out = tmp_path_factory.mktemp("noisy") / "run"
    run_batch(resolve_scenario(RETAIL / "mixed.yaml", NOISY), out, episodes=40)
    summary, path = score_run(out)
    lines = {x["episode_id"]: x for x in map(orjson.loads, path.read_bytes().splitlines())}
    return out, summary.as_dict(), lines


# ----------------------------------------------------------------------------------------------
# pass^k counts task success


def test_pass_k_counts_task_success_not_every_scorer_passing(noisy_mixed):
    out, d, lines = noisy_mixed
    success = sum(x["success"] for x in lines.values()) / len(lines)
    passed = sum(x["passed"] for x in lines.values()) / len(lines)
    assert passed < success  # recovered tool errors fail tool_validity, yet the tasks succeed
    assert d["pass_k"]["pass^1"] == pytest.approx(success) != pytest.approx(passed)
    assert d["total"]["pass_rate"] == pytest.approx(passed)
    assert "success" in d["pass_k_of"]
    res = cli("score", str(out))
    assert res.returncode == 0, res.stderr
    assert re.search(r"pass\^k \(all k tries of a task succeed; 40 tasks\): pass\^1 "
                     + f"{success:.3f}", res.stdout), res.stdout[-400:]


# ----------------------------------------------------------------------------------------------
# policy violations on any task


WRITES = {"cancel_pending_order", "return_delivered_order_items", "modify_pending_order_address",
          "modify_pending_order_payment", "modify_pending_order_items", "exchange_delivered_order_items",
          "modify_user_address"}


def test_a_forbidden_write_on_an_ordinary_task_is_a_violation(noisy_mixed):
    out, _, lines = noisy_mixed
    forbidden = mistakes = 0
    for rec in iter_records(out):
        events = rec["events"]
        results = {e["tool_call_id"]: e for e in events if e["role"] == "tool"}
        rejected = [(i, results[c["id"]]["content"]) for i, e in enumerate(events) for c in e["tool_calls"]
                    if c["name"] in WRITES and results[c["id"]]["error"]]
        # what the noisy agent does against the rules: the wrong tool for the order's status
        rule = [i for i, text in rejected if "cannot be returned" in text or "cannot be exchanged" in text
                or "cannot be cancelled" in text or "cannot be modified" in text]
        pv = lines[rec["episode_id"]]["scores"]["policy_violations"]
        assert [v["event"] for v in pv["details"]["violations"]] == rule, rec["episode_id"]
        assert pv["details"]["rejected_writes"] == len(rejected) - len(rule)
        assert pv["passed"] == (not rule) and pv["value"] == pytest.approx(1 / (1 + len(rule)))
        forbidden += len(rule)
        mistakes += len(rejected) - len(rule)
    # the run holds both: returns of pending orders, and writes with a typo'd id or bad arguments
    assert forbidden >= 1 and mistakes >= 5
    # each violation says which rule, in the tool's own words
    whys = [v["why"] for x in lines.values() for v in x["scores"]["policy_violations"]["details"]["violations"]]
    assert whys and all(re.match(r"non-\w+ order cannot be (returned|exchanged|cancelled|modified)", w) for w in whys), whys


REFUSALS = ["cancel_not_pending", "return_not_delivered", "return_to_other_card", "exchange_other_product",
            "modify_to_unavailable", "gift_card_too_small"]


def _forbidden_write(request: dict[str, Any]) -> Message:
    """The write a policy_refusal request asks for."""
    order, pay = request["order_id"], (request.get("payment_method") or {}).get("id")
    items = [i["item_id"] for i in request["items"]]
    new_items = [i["item_id"] for i in request["new_items"]]
    return {
        "cancel": lambda: _call("cancel_pending_order", order_id=order, reason=request["reason"]),
        "return": lambda: _call("return_delivered_order_items", order_id=order, item_ids=items,
                                payment_method_id=pay),
        "exchange": lambda: _call("exchange_delivered_order_items", order_id=order, item_ids=items,
                                  new_item_ids=new_items, payment_method_id=pay),
        "modify_items": lambda: _call("modify_pending_order_items", order_id=order, item_ids=items,
                                      new_item_ids=new_items, payment_method_id=pay),
        "modify_payment": lambda: _call("modify_pending_order_payment", order_id=order, payment_method_id=pay),
    }[request["intent"]]()


@pytest.mark.parametrize("kind", REFUSALS)
def test_a_policy_refusal_write_counts_the_same_on_any_task(kind):
    sc = resolve_scenario(RETAIL / "policy_refusal.yaml", [f"task.params.kinds=[{kind}]"])
    ep = Episode(sc, episode_specs(sc, 1)[0])
    request = ep.task.private["user"]["requests"][0]
    traj = _drive(ep, {"support": _forbidden_write(request)})
    result = next(e for e in traj.events if e.role == "tool")
    assert result.error and "not found" not in result.content  # the tool refused it by its rules
    pv = _score(traj, sc, "policy_violations")
    assert [v["why"] for v in pv.details["violations"]] == ["write on a request the policy forbids"]
    # the same write on a task that need not be refused is still the one violation
    ordinary = traj.model_copy(update={"task": traj.task.model_copy(update={"should_refuse": False})})
    pv = _score(ordinary, sc, "policy_violations")
    assert [v["why"] for v in pv.details["violations"]] == [result.content.removeprefix("Error: ")]
    assert not pv.passed and pv.details["rejected_writes"] == 0


# ----------------------------------------------------------------------------------------------
# collateral damage


def test_collateral_damage_shows_the_address_it_replaced():
    sc = resolve_scenario(RETAIL / "mixed.yaml", ["task.type=cancel_pending_order"])  # support may change addresses
    ep = Episode(sc, episode_specs(sc, 1)[0])
    user = ep.task.goal["user_id"]
    new = {"address1": "1 Main St", "address2": "", "city": "Springfield", "state": "IL", "country": "USA",
           "zip": "62701"}
    old = ep.world.user_json(ep.state, ep.world.user_row(user))["address"]
    traj = _drive(ep, {"support": _call("modify_user_address", user_id=user, **new)})
    assert not next(e for e in traj.events if e.role == "tool").error
    cd = _score(traj, sc, "collateral_damage")
    assert not cd.passed
    (change,) = [c for c in cd.details["changed"] if c["table"] == "users"]
    assert change == {"table": "users", "row": user, "field": "address", "before": old, "after": new}
    # as the state diff shows the same field
    (diff,) = [x for x in traj.outcome.diff if x.table == "users"]
    assert (diff.expected, diff.actual) == (change["before"], change["after"])


# ----------------------------------------------------------------------------------------------
# negotiation


def _nash_deal(sc: Any, index: int) -> Trajectory:
    """The first speaker offers the task's Nash terms; the counterpart accepts."""
    ep = Episode(sc, episode_specs(sc, index + 1)[index], make_agents=False)
    opener = ep.current
    other = next(r for r in sc.roles if r != opener)
    ep.step(Message(role="assistant", content="A fair deal.", tool_calls=[
        ToolCall(id="x", name="make_offer", arguments=ep.task.goal["nash"]["terms"])]))
    assert ep.current == other
    ep.step(Message(role="assistant", content="Agreed.", tool_calls=[ToolCall(id="y", name="accept_offer")]))
    assert ep.done
    return ep.trajectory()


@pytest.mark.parametrize("path", NEGOTIATION, ids=lambda p: p.stem)
def test_negotiation_value_is_relative_to_the_nash_point(tmp_path, path):
    sc = resolve_scenario(path)
    run_batch(sc, tmp_path / "run", episodes=24)
    values = []
    for rec in iter_records(tmp_path / "run"):
        traj = Trajectory.model_validate(rec)
        s = _score(traj, sc, "negotiation")
        m = traj.outcome.metrics
        assert s.details["pareto_optimal"] == m["solution"]["pareto_optimal"]
        if not m["agreement"]:
            assert s.value == 0.0 and not s.passed
            continue
        nash = traj.task.goal["nash"]["utilities"]
        gains = [max(0.0, min(1.0, (u - m["reservations"][r]) / (nash[r] - m["reservations"][r])))
                 for r, u in m["utilities"].items()]
        assert s.value == pytest.approx(math.prod(gains) ** 0.5, abs=1e-6)
        values.append(s.value)
    assert values and max(values) < 1.0
    # the Nash deal itself, struck at once: Pareto-efficient, fair, and the best any deal scores
    for index in range(3):
        traj = _nash_deal(sc, index)
        s = _score(traj, sc, "negotiation")
        assert s.passed and s.details["pareto_optimal"] is True and s.details["reference"] == "nash"
        assert s.value == pytest.approx(1.0, abs=1e-4)
    assert s.value >= max(values)


# ----------------------------------------------------------------------------------------------
# the score table


def _table_rows(text: str) -> list[list[str]]:
    """Cells of a rich table's body rows; a folded cell's lines are joined back."""
    rows: list[list[str]] = []
    body = False
    for line in text.splitlines():
        if line.startswith(("┡", "├")):
            body = True
            continue
        if not body or not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip("│").split("│")]
        if cells[2]:  # the episodes column: a new row starts
            rows.append(cells)
        else:
            rows[-1] = [a + b for a, b in zip(rows[-1], cells)]
    return rows


def test_piped_score_table_keeps_every_agent_label_whole(tmp_path):
    out = tmp_path / "run"
    run_batch(resolve_scenario(RETAIL / "noisy_support.yaml"), out, episodes=40)
    res = cli("score", str(out))
    assert res.returncode == 0, res.stderr
    summary = orjson.loads((out / "scores" / "summary.json").read_bytes())
    expected = [(r["task_type"], r["agent"]) for r in summary["rows"]] + [("all", "")]
    agents = {a for _, a in expected if a}
    assert {"noisy_oracle(error_rate=0.1)", "noisy_oracle(error_rate=0.4)"} <= agents
    assert "…" not in res.stdout
    rows = _table_rows(res.stdout)
    assert [(r[0], r[1]) for r in rows] == expected  # one row each, labels in full
    assert len(rows[0]) == 6 + len(summary["total"]["scorers"])  # every scorer column is there
    # a narrow terminal drops scorer columns (named below the table) and folds labels, never cuts them
    from rich.console import Console

    from simworld.commands.score import render_summary

    for width in (100, 60):
        buf = io.StringIO()
        render_summary(summary, Console(width=width, file=buf))
        text = buf.getvalue()
        assert max(len(line) for line in text.splitlines()) <= width
        assert [(r[0], r[1]) for r in _table_rows(text)] == expected, width
        assert "not shown for want of width: " in text
