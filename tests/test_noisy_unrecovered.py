"""noisy_oracle's unrecovered mistakes (`unrecovered_rate`): each kind is caught by the scorer meant
to catch it and scores below the oracle's episode of the same task and seed; runs stay
deterministic; the default makes none; and DPO pairs built against the oracle have rejected sides
that failed the task, not only tool calls that were then fixed. Also: a recoverable proposal mistake
is recovered whatever part of the change the customer's correction restates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import test_export_worlds as worlds
from simworld.agents.retail.noisy import UNRECOVERED
from simworld.agents.retail.oracle import WRITE_TOOL
from simworld.episode import episode_specs, run_episode_sync
from simworld.registry import load_builtins
from simworld.scenario import load_scenario, scenario_from_data
from simworld.scoring.base import ScoringContext, score_trajectory, summary_value
from simworld.types import strip_timings

load_builtins()
ROOT = Path(__file__).resolve().parent.parent
MIXED = ROOT / "scenarios" / "retail" / "mixed.yaml"
CHECKS = ("state_match", "outputs_stated", "collateral_damage", "policy_violations")


def _scenario(task: str | None, support: dict):
    overrides = {"roles.support.agent": support}
    if task is not None:
        overrides["task.type"] = task
    return load_scenario(MIXED, overrides=overrides)


def _noisy(task: str | None, rate: float = 1.0, error_rate: float = 0.0):
    return _scenario(task, {"type": "noisy_oracle", "error_rate": error_rate, "unrecovered_rate": rate})


def _unrecovered(traj) -> dict[str, int]:
    mistakes = traj.provenance.models["support"]["mistakes"]
    return {k: v for k, v in mistakes.items() if k in UNRECOVERED}


def _episode_with(kind: str, task: str, tries: int = 60):
    """The first episode of `task` in which the noisy oracle made exactly one unrecovered mistake, of
    `kind`, with the oracle's episode of the same task and seed, and both scored."""
    noisy, oracle = _noisy(task), _scenario(task, {"type": "oracle"})
    for spec in episode_specs(noisy, tries, noisy.seed):
        bad = run_episode_sync(noisy, spec)
        if _unrecovered(bad) != {kind: 1}:
            continue
        good = run_episode_sync(oracle, spec)
        assert good.task == bad.task and good.outcome.success, good.episode_id
        return (good, score_trajectory(good, oracle.scoring, ScoringContext(oracle)),
                bad, score_trajectory(bad, noisy.scoring, ScoringContext(noisy)))
    pytest.fail(f"no {task} episode with only a {kind} in {tries}")


def _writes(traj):
    """The support side's writes, as (tool, arguments), in the order made."""
    writes = set(WRITE_TOOL.values())
    return [(c.name, c.arguments) for e in traj.events if e.speaker == "support" for c in e.tool_calls
            if c.name in writes]


def _caught_only_by(good_scores, bad_scores, caught: set[str]) -> None:
    """The bad episode scores lower overall, lower on each scorer in `caught`, and as well as the
    oracle on the other checks."""
    assert summary_value(bad_scores) < summary_value(good_scores)
    for name in CHECKS:
        if name not in good_scores:
            continue
        assert good_scores[name].passed, (name, good_scores[name])
        if name in caught:
            assert not bad_scores[name].passed and bad_scores[name].value < good_scores[name].value, name
        else:
            assert bad_scores[name].passed, (name, bad_scores[name].details)


def test_a_write_without_a_yes_is_a_confirmation_violation():
    good, gs, bad, bs = _episode_with("unconfirmed_write", "cancel_pending_order")
    _caught_only_by(gs, bs, {"policy_violations"})
    (violation,) = bs["policy_violations"].details["violations"]
    assert violation["tool"] == "cancel_pending_order" and violation["rule"] == "confirmation"
    assert "not an explicit yes" in violation["why"]
    assert bad.outcome.success  # the right change, made without asking: only the policy check sees it
    proposals = [e for e in bad.events if e.speaker == "support" and "proceed" in e.content.lower()]
    assert not proposals


@pytest.mark.parametrize("task, field", [("cancel_pending_order", "cancel_reason"),
                                         ("modify_user_address", "address"),
                                         ("modify_pending_order_address", "address")])
def test_a_wrong_write_the_customer_did_not_confirm_shows_in_the_state_diff(task, field):
    good, gs, bad, bs = _episode_with("wrong_write", task)
    _caught_only_by(gs, bs, {"state_match"})
    (diff,) = bs["state_match"].details["diff"]
    assert diff["field"] == field and diff["expected"] != diff["actual"]
    ((tool, right),), ((wrong_tool, wrong),) = _writes(good), _writes(bad)
    assert tool == wrong_tool and right != wrong
    if field == "cancel_reason":  # the other reason of the two
        assert {diff["expected"], diff["actual"]} == {"no longer needed", "ordered by mistake"}
        assert diff["actual"] == wrong["reason"]
    else:  # the street number's digits swapped, the rest as confirmed
        assert diff["actual"]["address1"] == wrong["address1"] != right["address1"]
        assert sorted(diff["actual"]["address1"]) == sorted(right["address1"])
        assert {k: v for k, v in diff["actual"].items() if k != "address1"} == \
            {k: v for k, v in diff["expected"].items() if k != "address1"}


@pytest.mark.parametrize("task", ["return_delivered_order_items", "modify_pending_order_payment",
                                  "exchange_delivered_order_items"])
def test_a_wrong_write_of_items_or_payment_changes_the_state(task):
    good, gs, bad, bs = _episode_with("wrong_write", task)
    assert summary_value(bs) < summary_value(gs)
    assert not bs["state_match"].passed and bs["state_match"].details["diff"]
    assert not bad.outcome.success and bad.outcome.tool_errors == 0  # the tool took it
    assert bs["outputs_stated"].passed  # it stated what it meant to do
    ((tool, right),), ((wrong_tool, wrong),) = _writes(good), _writes(bad)
    assert tool == wrong_tool and right["order_id"] == wrong["order_id"] and right != wrong


@pytest.mark.parametrize("task", ["cancel_pending_order", "return_delivered_order_items", "order_status",
                                  "exchange_delivered_order_items"])
def test_a_wrong_amount_or_status_stated_misses_a_required_output(task):
    good, gs, bad, bs = _episode_with("wrong_output", task)
    _caught_only_by(gs, bs, {"outputs_stated"})
    missing = bs["outputs_stated"].details["missing"]
    assert missing and set(missing) <= set(bad.task.required_outputs)
    assert bad.outcome.state_match in (True, None)  # the change itself is right
    # the oracle's answer holds each missing output; the noisy one's last answer states something else
    said = [e.content for e in bad.events if e.speaker == "support" and e.content]
    told = [e.content for e in good.events if e.speaker == "support" and e.content]
    assert said[-1] != told[-1]


@pytest.mark.parametrize("task, caught", [("modify_pending_order_items", {"state_match", "outputs_stated"}),
                                          ("modify_pending_order_address", {"state_match"}),
                                          ("order_status", {"outputs_stated"})])
def test_a_needless_transfer_leaves_a_doable_request_undone(task, caught):
    good, gs, bad, bs = _episode_with("needless_transfer", task)
    _caught_only_by(gs, bs, caught if bad.task.required_outputs else caught - {"outputs_stated"})
    assert bad.outcome.termination == "transfer" and good.outcome.termination != "transfer"
    assert bad.events[-2].tool_calls[0].name == "transfer_to_human_agents"
    if "state_match" in caught:
        assert bs["state_match"].details["diff"] and not _writes(bad)


@pytest.mark.parametrize("task, table", [("modify_pending_order_address", "users"),
                                         ("modify_user_address", "orders")])
def test_an_unasked_change_is_collateral_damage(task, table):
    good, gs, bad, bs = _episode_with("collateral_change", task)
    _caught_only_by(gs, bs, {"state_match", "collateral_damage"})
    changed = bs["collateral_damage"].details["changed"]
    assert [(c["table"], c["field"]) for c in changed] == [(table, "address")]
    # proposed and confirmed with the asked change: the policy check has nothing against it
    assert bs["policy_violations"].passed
    (asked,), (made, extra) = _writes(good), _writes(bad)
    assert made == asked and extra[0] != asked[0]  # the asked change, then another tool's
    assert {k: v for k, v in extra[1].items() if k not in ("order_id", "user_id")} == \
        {k: v for k, v in asked[1].items() if k not in ("order_id", "user_id")}  # the same new address


def test_each_kind_scores_below_the_oracle_on_the_same_seeds():
    # A whole mixed batch at rate 1: every episode with exactly one unrecovered mistake scores below the oracle's.
    noisy, oracle = _noisy(None), _scenario(None, {"type": "oracle"})
    seen = dict.fromkeys(UNRECOVERED, 0)
    for spec in episode_specs(noisy, 80, noisy.seed):
        bad = run_episode_sync(noisy, spec)
        kinds = _unrecovered(bad)
        if len(kinds) != 1 or sum(kinds.values()) != 1:
            continue
        good = run_episode_sync(oracle, spec)
        (kind,) = kinds
        seen[kind] += 1
        assert summary_value(score_trajectory(bad, noisy.scoring, ScoringContext(noisy))) < \
            summary_value(score_trajectory(good, oracle.scoring, ScoringContext(oracle))), (kind, spec.episode_id)
        assert bad.provenance.models["support"]["unrecovered"] == 1
    assert all(n >= 2 for n in seen.values()), seen


def test_the_same_seed_gives_the_same_trajectory():
    sc = _noisy(None, rate=0.4, error_rate=0.3)
    specs = episode_specs(sc, 30, sc.seed)
    first = [strip_timings(orjson.loads(run_episode_sync(sc, s).to_jsonl())) for s in specs]
    again = [strip_timings(orjson.loads(run_episode_sync(sc, s).to_jsonl())) for s in specs]
    assert first == again
    made = sum(t["provenance"]["models"]["support"]["unrecovered"] for t in first)
    assert made >= 5, made


def test_rate_zero_makes_none_and_changes_nothing():
    default = _scenario(None, {"type": "noisy_oracle", "error_rate": 0.4})
    zero = _scenario(None, {"type": "noisy_oracle", "error_rate": 0.4, "unrecovered_rate": 0.0})
    for spec in episode_specs(default, 40, default.seed):
        a, b = run_episode_sync(default, spec), run_episode_sync(zero, spec)
        assert a.events == b.events and a.outcome == b.outcome
        prov = a.provenance.models["support"]
        assert b.provenance.models["support"] == prov
        assert set(prov) == {"mistakes", "recovered"} and not _unrecovered(a)


def test_dpo_pairs_against_the_oracle_have_rejected_sides_that_failed_the_task(tmp_path):
    from simworld.runner import run_batch

    oracle_run, noisy_run, out = tmp_path / "oracle", tmp_path / "noisy", tmp_path / "dpo.jsonl"
    run_batch(_scenario(None, {"type": "oracle"}), oracle_run, episodes=40)
    run_batch(_noisy(None, rate=0.5, error_rate=0.2), noisy_run, episodes=40)
    env = {"PYTHONPATH": str(ROOT / "tests"), "PATH": "/usr/bin:/bin"}
    import os

    res = subprocess.run([sys.executable, "-m", "simworld", "export", str(oracle_run), str(noisy_run),
                          "--format", "dpo", "--out", str(out)], capture_output=True, text=True,
                         env={**os.environ, **env}, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    pairs = worlds.read_samples(out)
    assert pairs
    failed = []
    for pair in pairs:
        chosen, rejected = pair["provenance"]["chosen"], pair["provenance"]["rejected"]
        assert worlds.provenance_map(chosen, "agents")["support"] == "oracle"
        assert worlds.provenance_map(rejected, "agents")["support"].startswith("noisy_oracle")
        assert pair["scores"]["chosen"]["value"] > pair["scores"]["rejected"]["value"]
        lower, higher = worlds.scorers(pair["scores"]["rejected"]), worlds.scorers(pair["scores"]["chosen"])
        if worlds.provenance_map(rejected, "models")["support"]["unrecovered"]:
            assert any(lower[name] < higher[name] for name in CHECKS if name in higher)
        if not rejected["success"]:
            failed.append(pair)
    # Rejected sides that failed the task: the change not made or made wrong, the answer wrong.
    assert len(failed) >= 5, len(failed)
    assert all(p["provenance"]["chosen"]["success"] for p in failed)
    assert all(worlds.provenance_map(p["provenance"]["rejected"], "models")["support"]["unrecovered"] for p in failed)
    assert any(worlds.scorers(p["scores"]["rejected"])["state_match"] == 0 for p in failed)
    assert any(worlds.scorers(p["scores"]["rejected"]).get("outputs_stated", 1) < 1 for p in failed)


def test_a_turned_down_proposal_is_proposed_again_whole_whatever_part_the_customer_restates():
    # The recoverable proposal mistake leaves an item out; the customer says no and restates only the
    # new options (as it does when an old item's id is also a new one's). Before, the items stayed
    # one short and the same wrong proposal came back until the conversation ran out (1 in 1,500
    # mixed episodes at error_rate 0.5).
    import numpy as np

    from simworld.agents.retail.noisy import NoisyOracleParams, NoisySupportOracle
    from simworld.agents.retail.oracle import RequestState
    from simworld.types import ToolCall

    def item(item_id, options, price):
        return {"name": "Smart Thermostat", "product_id": "4056465020", "item_id": item_id, "price": price,
                "options": dict(zip(("compatibility", "color", "power"), options))}

    old = [item("1333414210", ("Apple", "silver", "AC adapter"), 220.49),
           item("6630226336", ("universal", "black", "AC adapter"), 312.99)]
    new = [old[1], item("4953074738", ("Amazon", "black", "battery"), 272.49)]
    agent = NoisySupportOracle(NoisyOracleParams(type="noisy_oracle", error_rate=1.0), "support",
                               np.random.default_rng(0))
    agent.user = {"payment_methods": {"credit_card_1041275": {"source": "credit_card", "id": "credit_card_1041275"}}}
    agent.orders = {"#W1707526": {"order_id": "#W1707526", "items": old, "status": "pending"}}
    agent.req = RequestState(intent="modify_items", order_id="#W1707526", items=list(old), new_items=list(new),
                             payment_id="credit_card_1041275", amount="40.50")
    args = {"order_id": "#W1707526", "item_ids": [i["item_id"] for i in old],
            "new_item_ids": [i["item_id"] for i in new], "payment_method_id": "credit_card_1041275"}
    wrong = agent.tamper(args)
    assert wrong["item_ids"] == args["item_ids"][:1] and agent.req.items == old[:1]
    agent.req.proposal = ToolCall(id="proposal", name="modify_pending_order_items", arguments=wrong)
    agent.absorb_customer("No, that's not right. I want the Smart Thermostat in universal, black and AC adapter "
                          "and the Smart Thermostat in Amazon, black and battery.")
    assert agent.req.proposal is None and agent.recovered == 1
    assert agent.req.items == old  # both items again; the new ones are read from the correction
    assert agent.req.new_items is None and "Amazon" in agent.req.new_items_text
