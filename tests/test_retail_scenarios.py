"""Every scenario under scenarios/retail validates and runs, with every outcome checked.

Each YAML is loaded as a user would load it, run for a batch of episodes with its own seed and
variations, and every trajectory's outcome is checked: the final state is the expected one, the
required outputs were stated, the customer ended the conversation, and (for the oracle) no tool
call failed. The README demo runs end to end through the real CLI and is scored and replayed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from simworld.episode import episode_specs, run_episode_sync
from simworld.registry import SCORERS, TASKS, load_builtins
from simworld.runio import iter_records
from simworld.scenario import load_scenario

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((REPO / "scenarios" / "retail").glob("*.yaml"))
EPISODES = 40
load_builtins()


def test_there_is_a_scenario_per_task_type():
    names = {p.stem for p in SCENARIOS}
    assert set(TASKS["retail"]) <= names
    covered = set()
    for path in SCENARIOS:
        sc = load_scenario(path)
        covered.add(sc.task.type)
        covered.update(sc.variations.get("task.type", []))
    assert covered == set(TASKS["retail"])
    agents = {load_scenario(p).roles["support"].agent.type for p in SCENARIOS}
    assert agents == {"oracle", "noisy_oracle"}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_validates_and_every_episode_checks_out(path):
    sc = load_scenario(path)
    assert sc.first_speaker == "customer"
    assert {r: (s.kind, s.agent.type) for r, s in sc.roles.items() if r == "customer"} == {
        "customer": ("user", "customer")}
    assert sc.roles["support"].kind == "assistant"
    assert set(sc.scoring) <= set(SCORERS) and "state_match" in sc.scoring
    noisy = sc.roles["support"].agent.type == "noisy_oracle"
    specs = episode_specs(sc, EPISODES)
    drawn = {p: {s.variation[p] for s in specs} for p in sc.variations}
    for p, values in sc.variations.items():
        assert len(drawn[p]) >= min(len(values), 2), (p, drawn[p])  # variations really vary
    succeeded = 0
    for spec in specs:
        t = run_episode_sync(sc, spec)
        out = t.outcome
        assert out.termination == "user_stop", (spec, out)
        assert out.invalid_moves == 0 and out.error is None
        assert len(t.events) <= sc.max_turns * 3
        if noisy:
            succeeded += out.success
            continue
        assert out.success and out.state_match is True and out.outputs_stated is not False, (spec, out)
        assert out.tool_errors == 0
        assert t.final_state_hash == t.task.expected_state_hash
        if t.task.should_refuse:  # refused: nothing written at all
            assert not any(c.name.startswith(("cancel", "modify", "return", "exchange"))
                           for e in t.events for c in e.tool_calls)
    if noisy:
        assert succeeded >= 0.9 * EPISODES


def test_refusals_leave_the_world_untouched():
    sc = load_scenario(REPO / "scenarios" / "retail" / "policy_refusal.yaml")
    kinds = set()
    for spec in episode_specs(sc, 60):
        t = run_episode_sync(sc, spec)
        assert t.outcome.success and t.task.should_refuse
        assert t.outcome.diff == [] and t.outcome.state_match is True
        kinds.add(t.task.private["user"]["requests"][0]["refusal_reason"])
    assert len(kinds) == 6  # every kind of forbidden request came up


def test_readme_demo_runs_scores_and_replays(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "simworld"]
    run = subprocess.run(cmd + ["run", "scenarios/retail/cancel_pending_order.yaml", "--episodes", "200",
                                "--out", str(out), "-q"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "200 / 200 (100.0%)" in run.stdout
    records = list(iter_records(out))
    assert len(records) == 200 and all(r["outcome"]["success"] for r in records)
    assert len({r["episode_id"] for r in records}) == 200
    score = subprocess.run(cmd + ["score", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert score.returncode == 0, score.stdout + score.stderr
    summary = orjson.loads((out / "scores" / "summary.json").read_bytes())
    assert summary["total"]["episodes"] == 200
    assert all(v == 1.0 for v in summary["rows"][0]["scorers"].values()), summary["rows"][0]
    replay = subprocess.run(cmd + ["replay", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert replay.returncode == 0, replay.stdout + replay.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_a_world_too_small_for_the_task_is_a_user_error_not_a_crash(tmp_path, workers):
    proc = subprocess.run([sys.executable, "-m", "simworld", "run", "scenarios/retail/exchange_delivered_order_items.yaml",
                           "--episodes", "4", "--workers", str(workers), "--out", str(tmp_path / "run"),
                           "--set", "world.params.n_orders=2", "--set", "world.params.status_mix=[1,0,0,0]"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no eligible order with status" in lines[0] and "crashed" not in lines[0], lines
