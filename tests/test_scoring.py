"""Scorers on real runs: each finds what it should, pass^k, and `simworld score` output."""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import random
import subprocess
import sys

import orjson
import pytest

import test_export_worlds as worlds
from simworld import registry
from simworld.errors import UnknownName
from simworld.registry import register_scorer
from simworld.runio import iter_records, temp_name
from simworld.scoring import Score, ScoringContext, score_trajectory
from simworld.scoring.base import ScorerFailure
from simworld.scoring.report import SCORES_DIR, score_run
from simworld.summary import pass_hat_k
from simworld.types import Trajectory
from test_replay import cli

BUILTIN = ["state_match", "outputs_stated", "collateral_damage", "tool_validity", "policy_violations",
           "negotiation", "heuristics"]


def test_the_builtin_scorers_are_registered():
    registry.load_builtins()
    assert set(BUILTIN) <= set(registry.SCORERS)


@pytest.mark.parametrize("case", worlds.scenario_cases())
def test_scores_are_in_range_for_every_scenario(tmp_path, case):
    sc = worlds.scenario_of(case)
    run = worlds.make_run(tmp_path / "run", sc, 3)
    summary, path = score_run(run)
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert len(lines) == 3
    for line in lines:
        for name, s in line["scores"].items():
            assert 0.0 <= s["value"] <= 1.0 and isinstance(s["passed"], bool), name
        assert line["passed"] == (line["success"] and all(s["passed"] for s in line["scores"].values()))


@pytest.fixture(scope="module")
def sloppy(tmp_path_factory):
    data = worlds.scenario_cases()[1].values[0]
    run = worlds.make_run(tmp_path_factory.mktemp("sloppy") / "run", data, 4)
    return [Trajectory.model_validate(r) for r in iter_records(run)], worlds.scenario_of(data)


def _scores(traj, sc, *names):
    return score_trajectory(traj, names, ScoringContext(sc))


def test_sloppy_clerk_is_caught_by_every_relevant_scorer(sloppy):
    trajs, sc = sloppy
    for traj in trajs:
        s = _scores(traj, sc, *BUILTIN)
        assert "negotiation" not in s  # not a negotiation: not applicable
        # amount="lots" violates the schema, transfer_all is no tool of the clerk
        tv = s["tool_validity"]
        assert not tv.passed and tv.details["calls"] == 4
        problems = {p["tool"]: p["problem"] for p in tv.details["invalid"]}
        assert "amount" in problems["deposit"] and problems["transfer_all"] == "unknown tool"
        assert tv.value == pytest.approx(0.5)
        h = s["heuristics"]
        assert len(h.details["invalid"]) == 1 and len(h.details["repeated"]) == 0 and not h.passed
        target = traj.task.goal["account"]
        cd = s["collateral_damage"]
        extra = [d for d in cd.details["changed"]]
        deposit_ok = any(e.tool_calls and e.tool_calls[0].arguments.get("account") == (target + 1) % 50
                         and not traj.events[i + 1].error for i, e in enumerate(traj.events))
        # transfer_all is no tool of the clerk; a deposit into a frozen account is a write the world's
        # rule refused; the schema-invalid deposit (amount="lots") is a mistake, not a violation
        pv = s["policy_violations"]
        found = [(v["tool"], v["why"]) for v in pv.details["violations"]]
        frozen = [] if deposit_ok else [("deposit", "account is frozen")]
        assert found == frozen + [("transfer_all", "tool not available to the role")] and not pv.passed
        assert pv.details["rejected_writes"] == 1
        if deposit_ok:  # the second account was not frozen: the extra deposit landed
            assert not cd.passed and [(d["row"], d["field"]) for d in extra] == [(str((target + 1) % 50), "balance")]
            assert extra[0]["after"] == extra[0]["before"] + 1
            assert not s["state_match"].passed and s["state_match"].details["diff"]
        else:
            assert cd.passed and s["state_match"].passed
        assert s["outputs_stated"].passed


def test_perfect_episodes_pass_every_scorer(tmp_path):
    run = worlds.make_run(tmp_path / "run", worlds.ledger_data(), 5)
    summary, _ = score_run(run)
    total = summary.as_dict()["total"]
    assert total["pass_rate"] == 1.0 and total["mean_value"] == 1.0


def test_state_match_reports_the_field_diff(sloppy):
    trajs, sc = sloppy
    failing = [t for t in trajs if t.outcome.state_match is False]
    assert failing, "at least one sloppy episode lands its extra deposit"
    s = _scores(failing[0], sc, "state_match")["state_match"]
    assert s.value == 0.0 and s.details["diff"][0]["table"] == "accounts"


def test_outputs_stated_counts_missing_outputs(sloppy):
    trajs, sc = sloppy
    rec = orjson.loads(trajs[0].to_jsonl())
    for ev in rec["events"]:
        if ev["role"] == "assistant" and ev["content"].startswith("Done"):
            ev["content"] = "Done."
    s = _scores(Trajectory.model_validate(rec), sc, "outputs_stated")["outputs_stated"]
    assert s.value == 0.0 and s.details["missing"] == trajs[0].task.required_outputs


def test_heuristics_flags_back_to_back_repeats_and_empty_turns(sloppy):
    trajs, sc = sloppy
    rec = orjson.loads(trajs[0].to_jsonl())
    last = max(i for i, e in enumerate(rec["events"]) if e["role"] == "assistant" and e["content"])
    rec["events"].insert(last + 1, dict(rec["events"][last]))
    rec["events"].insert(last + 1, {**rec["events"][last], "content": "", "tool_calls": []})
    rec["events"].insert(last + 1, dict(rec["events"][last]))
    s = _scores(Trajectory.model_validate(rec), sc, "heuristics")["heuristics"]
    # copy, empty, copy: both copies repeat the turn before them (an empty turn does not break a loop)
    assert s.details["repeated"] == [last + 1, last + 3] and s.details["empty"] == [last + 2]


def test_negotiation_scorer_on_both_negotiation_worlds(tmp_path):
    for case in worlds.scenario_cases():
        sc = worlds.scenario_of(case.values[0])
        if sc.world.type not in ("haggle", "bargaining"):
            continue
        run = worlds.make_run(tmp_path / sc.name, sc, 4)
        for traj in (Trajectory.model_validate(r) for r in iter_records(run)):
            s = _scores(traj, sc, "negotiation")["negotiation"]
            m = traj.outcome.metrics
            # haggle writes reservation_<role>; the bargaining world a `reservations` mapping
            res = {r: m.get(f"reservation_{r}", (m.get("reservations") or {}).get(r, 0.0)) for r in m.get("utilities", {})}
            assert s.passed == bool(m["agreement"] and all(u >= res[r] - 1e-9 for r, u in m["utilities"].items()))
            if m["agreement"]:
                # gains over walking away relative to the Nash point's (haggle records none: best case 1)
                nash = (traj.task.goal.get("nash") or {}).get("utilities")
                assert s.details["reference"] == ("nash" if sc.world.type == "bargaining" else "best case")
                best = nash or dict.fromkeys(res, 1.0)
                gains = [max(0.0, min(1.0, (u - res[r]) / (best[r] - res[r]))) for r, u in m["utilities"].items()]
                assert s.value == pytest.approx(math.prod(gains) ** (1 / len(gains)), abs=1e-6)
            else:
                assert s.value == 0.0
            assert sum(s.details["offers"].values()) == sum(
                1 for e in traj.events for c in e.tool_calls if c.name == "make_offer")


def test_pass_hat_k_matches_brute_force():
    rng = random.Random(3)
    tasks = [(n, rng.randint(0, n)) for n in (rng.randint(1, 6) for _ in range(30))]
    for k in range(1, 5):
        brute = []
        for n, c in tasks:
            if n < k:
                continue
            outcomes = [True] * c + [False] * (n - c)
            subsets = list(itertools.combinations(range(n), k))
            brute.append(sum(all(outcomes[i] for i in s) for s in subsets) / len(subsets))
        assert pass_hat_k(tasks, k) == pytest.approx(sum(brute) / len(brute))
    assert pass_hat_k([(1, 1)], 2) is None
    assert math.isclose(pass_hat_k([(4, 2)], 2), 1 / 6)


def test_pass_k_counts_only_repeats_not_tasks_alike_by_chance(tmp_path):
    # 50 accounts and 40 episodes: some episodes draw the same instance id (the same account) by
    # chance. They are not tries of one task: without repeats there is pass^1 only, over 40 tasks.
    run = worlds.make_run(tmp_path / "run", worlds.scenario_cases()[1].values[0], 40)
    summary, _ = score_run(run)
    d = summary.as_dict()
    ids = {r["task"]["instance_id"] for r in iter_records(run)}
    assert len(ids) < 40  # alike by chance
    assert d["tasks"] == 40 and list(d["pass_k"]) == ["pass^1"]
    assert d["pass_k"]["pass^1"] == pytest.approx(d["total"]["success_rate"])


def test_injected_arguments_and_unknown_names(monkeypatch):
    seen = {}
    registry.load_builtins()
    monkeypatch.setattr(registry, "SCORERS", dict(registry.SCORERS))  # the probes stay in this test

    @register_scorer("_probe")
    def probe(traj, task, outcome, events, kinds, world, ctx):
        seen.update(traj=traj.episode_id, task=task.type, n=len(events), kinds=kinds, world=type(world).__name__)
        return Score(value=0.5, passed=False)

    sc = worlds.scenario_of(worlds.ledger_world.scenario_data())
    from simworld.episode import episode_specs, run_episode_sync

    traj = run_episode_sync(sc, episode_specs(sc, 1)[0])
    out = score_trajectory(traj, ["_probe"], ScoringContext(sc))
    assert out["_probe"].value == 0.5
    assert seen["kinds"] == {"user": "user", "clerk": "assistant"} and seen["world"] == "LedgerWorld"
    with pytest.raises(UnknownName, match="did you mean 'state_match'"):
        score_trajectory(traj, ["state_mach"], ScoringContext(sc))

    @register_scorer("_bad")
    def bad(trajectory):
        return None

    with pytest.raises(ScorerFailure, match="scorer '_bad' asks for trajectory, which simworld cannot inject"):
        score_trajectory(traj, ["_bad"], ScoringContext(sc))
    with pytest.raises(ValueError):
        Score(value=1.5, passed=True)


def _tree_digest(run):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.glob("trajectories-*.jsonl")}


def test_cli_score_writes_beside_the_run_and_prints_the_table(tmp_path):
    run = worlds.make_run(tmp_path / "run", worlds.scenario_cases()[1].values[0], 6)
    before = _tree_digest(run)
    res = cli("score", str(run))
    assert res.returncode == 0, res.stderr
    assert "scores by task type and agent" in res.stdout and "ledger_sloppy" in res.stdout
    assert "pass^1" in res.stdout
    assert _tree_digest(run) == before  # shards untouched
    assert sorted(p.name for p in run.glob("*.jsonl")) == sorted(before)  # nothing else .jsonl in RUN
    scores = run / SCORES_DIR / "scores.jsonl"
    summary = orjson.loads((run / SCORES_DIR / "summary.json").read_bytes())
    assert len(scores.read_bytes().splitlines()) == 6 and summary["total"]["episodes"] == 6
    # with every task tried once, pass^1 is all there is: the line says how to get more
    assert ("run with --set repeats=K" in res.stdout) == (list(summary["pass_k"]) == ["pass^1"])
    one = cli("score", str(run), "--scorer", "tool_validity")
    assert one.returncode == 0
    sub = [orjson.loads(x) for x in (run / SCORES_DIR / "scores-tool_validity.jsonl").read_bytes().splitlines()]
    assert all(set(x["scores"]) == {"tool_validity"} for x in sub)
    assert len(scores.read_bytes().splitlines()) == 6  # the full scores stay


def test_cli_score_errors_are_one_line(tmp_path):
    run = worlds.make_run(tmp_path / "run", worlds.ledger_world.scenario_data(), 1)
    for args, needle in ((["score", str(run), "--scorer", "state_mach"], "did you mean 'state_match'"),
                         (["score", str(tmp_path / "missing")], "not a run directory")):
        res = cli(*args)
        assert res.returncode == 2 and needle in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


def test_score_names_every_line_it_could_not_read(tmp_path):
    run = worlds.make_run(tmp_path / "run", worlds.ledger_world.scenario_data(), 4)
    shard = next(run.glob("trajectories-*.jsonl"))
    lines = shard.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2][:120] + b"\n"
    shard.write_bytes(b"".join(lines))
    res = cli("score", str(run))
    assert res.returncode == 0, res.stderr
    assert "scored 3 episodes" in res.stdout
    assert f"skipped record {shard.name} line 3: not a JSON record" in res.stdout
    summary = orjson.loads((run / SCORES_DIR / "summary.json").read_bytes())
    assert f"{shard.name} line 3: not a JSON record" in summary["bad_records"]


def test_an_interrupted_or_failing_score_leaves_the_old_scores_and_no_temporary_file(tmp_path, monkeypatch):
    import simworld.scoring.report as report

    run = worlds.make_run(tmp_path / "run", worlds.ledger_world.scenario_data(), 6)
    score_run(run)
    before = {p.name: p.read_bytes() for p in (run / SCORES_DIR).iterdir()}
    assert set(before) == {"scores.jsonl", "summary.json"}
    real, calls = report.score_line, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(report, "score_line", interrupted)
    with pytest.raises(KeyboardInterrupt):
        score_run(run)
    assert {p.name: p.read_bytes() for p in (run / SCORES_DIR).iterdir()} == before


def test_scores_and_summary_replace_their_old_versions_together_or_not_at_all(tmp_path):
    """The second rename failing (the summary's path became a directory) puts the first file back:
    the score lines never disagree with the summary beside them."""
    run = worlds.make_run(tmp_path / "run", worlds.ledger_world.scenario_data(), 4)
    score_run(run)
    scores = run / SCORES_DIR
    (scores / "scores.jsonl").write_bytes(b"old lines\n")
    (scores / "summary.json").unlink()
    (scores / "summary.json").mkdir()
    res = cli("score", str(run))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip() == f"error: cannot write scores under {scores}: it exists and is not a regular file"
    assert (scores / "scores.jsonl").read_bytes() == b"old lines\n"
    assert sorted(p.name for p in scores.iterdir()) == ["scores.jsonl", "summary.json"]  # no temporaries
    (scores / "summary.json").rmdir()
    score_run(run)
    assert (scores / "scores.jsonl").read_bytes() != b"old lines\n" and (scores / "summary.json").is_file()
    assert sorted(p.name for p in scores.iterdir()) == ["scores.jsonl", "summary.json"]


def test_score_into_a_scores_path_that_is_a_file_is_one_line(tmp_path):
    run = worlds.make_run(tmp_path / "run", worlds.ledger_world.scenario_data(), 2)
    (run / SCORES_DIR).write_text("not a directory")
    res = cli("score", str(run))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == f"error: cannot write scores under {run / SCORES_DIR}: it is not a directory"


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def left_behind(finals, pid, monkeypatch):
    """The hidden files process `pid`, killed mid-write, leaves beside `finals`: its temporaries and the
    old versions `install_together` keeps until all files are in place."""
    made = []
    with monkeypatch.context() as m:
        m.setattr(os, "getpid", lambda: pid)
        for final in finals:
            for kind in ("tmp", "old"):
                made.append(temp_name(final, kind))
                made[-1].parent.mkdir(parents=True, exist_ok=True)
                made[-1].write_bytes(b"partial\n")
    return made


def test_score_removes_what_a_killed_score_left_and_nothing_of_a_live_process(tmp_path, monkeypatch):
    run = worlds.make_run(tmp_path / "run", worlds.ledger_world.scenario_data(), 4)
    scores = run / SCORES_DIR
    finals = [scores / "scores.jsonl", scores / "summary.json"]
    dead = dead_pid()
    stale = left_behind(finals, dead, monkeypatch)
    not_ours = left_behind([scores / "notes.txt"], dead, monkeypatch)
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a score still at work
    try:
        live = left_behind(finals, writer.pid, monkeypatch)
        assert len(stale) == len(live) == 4
        score_run(run)
    finally:
        writer.kill()
        writer.wait()
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"partial\n" for p in live + not_ours)
    assert (scores / "scores.jsonl").is_file() and (scores / "summary.json").is_file()


def test_score_of_an_unfinished_run_notes_it_and_scores_what_is_recorded(tmp_path):
    run = worlds.make_run(tmp_path / "run", worlds.ledger_world.scenario_data(), 4)
    res = cli("score", str(run))
    assert res.returncode == 0 and "note:" not in res.stderr, res.stderr
    manifest = orjson.loads((run / "manifest.json").read_bytes())
    (run / "manifest.json").write_bytes(orjson.dumps({**manifest, "status": "interrupted", "episodes": 10}))
    res = cli("score", str(run))
    assert res.returncode == 0 and "scored 4 episodes" in res.stdout, res.stderr
    assert res.stderr == (f"note: {run}: the run is interrupted: 6 of its episodes are not recorded yet (re-run "
                          "its `simworld run` command to finish it)\n")
