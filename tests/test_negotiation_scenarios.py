"""The shipped negotiation scenarios: they load, run to the end, vary, and yield per-party samples."""

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from simworld.episode import episode_specs, run_episode_sync
from simworld.perspective import perspective
from simworld.runio import iter_records
from simworld.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios" / "negotiation").glob("*.yaml"))
ENDINGS = {"agreement", "walk_away", "no_agreement"}


def test_the_three_scenarios_exist():
    assert {p.stem for p in SCENARIOS} >= {"used_car", "supplier_contract", "refund_dispute"}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_runs_many_episodes(path):
    sc = load_scenario(path)
    parties = list(sc.world.params["parties"])
    assert set(parties) == set(sc.roles) and all(r.kind == "assistant" for r in sc.roles.values())
    assert len(sc.world.params["issues"]) >= 3
    assert {"first_speaker", f"roles.{parties[0]}.agent", f"roles.{parties[1]}.agent"} <= set(sc.variations)
    assert any(path.endswith(".reservation") for path in sc.variations)
    endings, openers, groups = Counter(), Counter(), Counter()
    for spec in episode_specs(sc, 40):
        t = run_episode_sync(sc, spec)
        o = t.outcome
        assert o.termination in ENDINGS and o.invalid_moves == 0 and o.tool_errors == 0 and o.error is None
        assert o.success == o.metrics["agreement"]
        endings[o.termination] += 1
        openers[t.events[0].speaker] += 1
        groups[o.metrics["group"]] += 1
        m = o.metrics
        for key in ("agreement_round", "rounds", "pareto_distance", "nash_distance", "welfare_ratio", "agreed_outcome",
                    "surplus_share", "offers", "concessions", "conceded", "invalid_moves", "solution"):
            assert key in m
        for role in parties:
            assert 0.0 <= m[f"utility_{role}"] <= 1.0 and m["utilities"][role] == m[f"utility_{role}"]
            # One training sample per side: the party's own turns as assistant, the other side as user.
            view = perspective(t.events, role, t.system[role])
            assert view[0].role == "system" and f"You negotiate as the {role.replace('_', ' ')}" in view[0].content
            assert sc.roles[role].persona.split()[0] in view[0].content
            assert [m.role for m in view[1:]].count("assistant") >= 1
            assert any(m.role == "user" for m in view)
        assert t.task.goal["zopa"] in (True, False) and t.task.goal["outcome_space"] == m["solution"]["outcome_space"]
    assert endings["agreement"] >= 10, endings
    assert len(openers) == 2 and len(groups) >= 10


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_is_deterministic(path):
    sc = load_scenario(path)
    specs = episode_specs(sc, 5)
    first = [run_episode_sync(sc, s).model_dump(mode="json") for s in specs]
    again = [run_episode_sync(sc, s).model_dump(mode="json") for s in specs]
    for a, b in zip(first, again):
        a["provenance"].pop("timings"), b["provenance"].pop("timings")
        assert orjson.dumps(a) == orjson.dumps(b)


def test_cli_run_summarises_per_strategy_pairing(tmp_path):
    out = tmp_path / "car"
    proc = subprocess.run([sys.executable, "-m", "simworld", "run", str(ROOT / "scenarios/negotiation/used_car.yaml"),
                           "--episodes", "60", "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, COLUMNS="250"), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "buyer=boulware vs seller=" in proc.stdout, proc.stdout
    records = list(iter_records(out))
    assert len(records) == 60
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    groups = manifest["summary"]["groups"]
    assert len(groups) >= 10
    for stats in groups.values():
        assert {"utility_buyer", "utility_seller", "pareto_distance", "rounds"} <= set(stats)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_a_partys_system_prompt_names_only_tools_it_has(path):
    # The used-car seller was told what check_market_price knows without having the tool.
    from simworld.episode import Episode

    sc = load_scenario(path)
    ep = Episode(sc, episode_specs(sc, 1)[0], make_agents=False)
    names = set(ep.world.tools)
    assert names
    for role, role_spec in ep.sc.roles.items():
        named = {n for n in names if re.search(rf"\b{re.escape(n)}\b", ep.system[role])}
        assert named <= set(role_spec.tools), (role, named - set(role_spec.tools))
