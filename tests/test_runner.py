"""The batch runner in-process: run directory contract, determinism across workers and
concurrency, agent failures and their retry, crashes, directory checks, the summary."""

import errno
import os
import shutil

import orjson
import pytest
import yaml

import runner_plugin
from simworld.episode import episode_specs, run_episode_sync
from simworld.errors import SimworldError
from simworld.runio import iter_records, shard_paths
from simworld.runner import EpisodeCrash, is_scripted, resolve_scenario, run_batch, scenario_yaml
from simworld.scenario import Scenario, scenario_from_data
from simworld.summary import RunSummary, episode_stats
from simworld.types import strip_timings


def scenario(**kwargs):
    return scenario_from_data(runner_plugin.scenario_data(**kwargs))


def stripped(run_dir):
    """The run's latest records without timings, sorted by episode id: what must be reproducible."""
    return sorted((orjson.dumps(strip_timings(r), option=orjson.OPT_SORT_KEYS) for r in iter_records(run_dir)))


def test_run_directory_contract(tmp_path):
    sc = scenario()
    out = tmp_path / "run"
    result = run_batch(sc, out, episodes=25)
    assert result.status == "complete" and result.new == 25 and result.skipped == 0
    assert sorted(p.name for p in out.iterdir()) == [".lock", "manifest.json", "scenario.yaml",
                                                     "trajectories-000001-000.jsonl"]
    # The resolved scenario round-trips to the same content hash.
    assert Scenario.model_validate(yaml.safe_load((out / "scenario.yaml").read_text())).content_hash == sc.content_hash
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["status"] == "complete" and manifest["scenario"]["hash"] == sc.content_hash
    assert manifest["summary"]["episodes"] == 25 and manifest["sessions"][0]["new"] == 25
    # Each line is exactly the engine's trajectory for that spec (timings aside).
    lines = (out / "trajectories-000001-000.jsonl").read_bytes().splitlines(keepends=True)
    assert len(lines) == 25
    for spec, line in zip(episode_specs(sc, 25), lines):
        direct = run_episode_sync(sc, spec)
        assert strip_timings(orjson.loads(line)) == strip_timings(orjson.loads(direct.to_jsonl()))
    assert result.summary.episodes == 25 and result.summary.successes == 25
    assert result.summary.turns == 25 * 4 and result.summary.tool_calls == 25


@pytest.mark.parametrize("workers,concurrency", [(2, None), (3, None), (1, 4), (2, 3)])
def test_same_bytes_whatever_workers_and_concurrency(tmp_path, workers, concurrency):
    sc = scenario(variations={"task.params.amount": [1, 2, 3, 7]}, seed=11)
    run_batch(sc, tmp_path / "one", episodes=40)
    result = run_batch(sc, tmp_path / "many", episodes=40, workers=workers, concurrency=concurrency)
    assert result.new == 40
    assert len(shard_paths(tmp_path / "many")) == workers
    assert stripped(tmp_path / "one") == stripped(tmp_path / "many")
    assert len(stripped(tmp_path / "one")) == 40
    # Readers see the episodes in one order, whatever wrote the shards: exports and score files
    # of the two runs are the same bytes.
    ids = [r["episode_id"] for r in iter_records(tmp_path / "many")]
    assert ids == [r["episode_id"] for r in iter_records(tmp_path / "one")] == [s.episode_id for s in episode_specs(sc, 40)]
    other = scenario(variations={"task.params.amount": [1, 2, 3, 7]}, seed=12)
    run_batch(other, tmp_path / "other", episodes=40)
    assert stripped(tmp_path / "other") != stripped(tmp_path / "one")


def test_spawned_workers_load_plugins_and_give_the_same_bytes(tmp_path, monkeypatch):
    """Where fork is unavailable (macOS, Windows) workers are spawned: they re-import, plugins included."""
    import multiprocessing

    from simworld import runner

    monkeypatch.setenv("SIMWORLD_PLUGINS", "runner_plugin")
    monkeypatch.setattr(runner, "_mp_context", lambda: multiprocessing.get_context("spawn"))
    sc = scenario(clerk="flaky_clerk", variations={"task.params.amount": [1, 2, 3]})
    result = run_batch(sc, tmp_path / "spawned", episodes=12, workers=2)
    assert result.new == 12 and result.summary.successes == 12
    run_batch(sc, tmp_path / "one", episodes=12)
    assert stripped(tmp_path / "spawned") == stripped(tmp_path / "one")


def test_model_agents_run_concurrently_on_one_loop(tmp_path):
    sc = scenario(clerk="awaiting_clerk")
    assert not is_scripted(sc) and is_scripted(scenario())
    runner_plugin.AwaitingClerk.max_in_flight = 0
    result = run_batch(sc, tmp_path / "c", episodes=30, concurrency=6)
    assert result.new == 30 and result.summary.successes == 30
    assert runner_plugin.AwaitingClerk.max_in_flight == 6
    runner_plugin.AwaitingClerk.max_in_flight = 0
    run_batch(sc, tmp_path / "s", episodes=10, concurrency=1)
    assert runner_plugin.AwaitingClerk.max_in_flight == 1
    assert set(stripped(tmp_path / "s")) < set(stripped(tmp_path / "c"))


def test_agent_failures_are_recorded_then_retried_on_resume(tmp_path, monkeypatch):
    sc = scenario(clerk="flaky_clerk")
    out = tmp_path / "run"
    monkeypatch.setenv(runner_plugin.FAIL_ENV, "2,5")
    first = run_batch(sc, out, episodes=8, workers=2)
    assert first.summary.failed == 2 and first.summary.successes == 6
    failed = {r["episode_index"]: r for r in iter_records(out) if r["outcome"]["termination"] == "error"}
    assert sorted(failed) == [2, 5]
    assert failed[2]["outcome"]["error"] == "model unavailable after 2 retries (HTTP 503)"
    assert failed[2]["outcome"]["success"] is False
    # The model is back: a re-run retries exactly the failed episodes and appends their records.
    monkeypatch.setenv(runner_plugin.FAIL_ENV, "")
    second = run_batch(sc, out, episodes=8)
    assert (second.new, second.skipped, second.retried) == (2, 6, 2)
    assert second.summary.failed == 0 and second.summary.successes == 8
    all_records = list(iter_records(out, latest_only=False))
    assert len(all_records) == 10  # append-only: the failed records are still there
    latest = list(iter_records(out))
    assert len(latest) == 8 and all(r["outcome"]["success"] for r in latest)
    run_batch(sc, tmp_path / "clean", episodes=8)
    assert stripped(out) == stripped(tmp_path / "clean")
    third = run_batch(sc, out, episodes=8)
    assert third.new == 0 and third.skipped == 8


def test_extending_a_run_keeps_earlier_episodes(tmp_path):
    sc = scenario()
    run_batch(sc, tmp_path / "run", episodes=10)
    more = run_batch(sc, tmp_path / "run", episodes=16)
    assert (more.new, more.skipped) == (6, 10) and more.summary.episodes == 16
    run_batch(sc, tmp_path / "clean", episodes=16)
    assert stripped(tmp_path / "run") == stripped(tmp_path / "clean")


def test_a_crash_in_an_episode_stops_the_run_with_one_line(tmp_path):
    sc = scenario(clerk="broken_clerk")
    out = tmp_path / "run"
    with pytest.raises(EpisodeCrash, match=r"episode ledger_deposit-s0-000003 crashed: KeyError: 'bug in the agent'"):
        run_batch(sc, out, episodes=6)
    assert [r["episode_index"] for r in iter_records(out)] == [0, 1, 2]
    assert orjson.loads((out / "manifest.json").read_bytes())["status"] == "failed"
    with pytest.raises(EpisodeCrash, match="000003 crashed"):
        run_batch(sc, tmp_path / "w", episodes=6, workers=2)
    assert 3 not in {r["episode_index"] for r in iter_records(tmp_path / "w")}


def test_refuses_a_directory_of_another_scenario(tmp_path):
    out = tmp_path / "run"
    run_batch(scenario(), out, episodes=3)
    with pytest.raises(SimworldError, match="holds a run of a different scenario"):
        run_batch(scenario(max_turns=11), out, episodes=3)
    (out / "scenario.yaml").write_text("name: [broken")
    with pytest.raises(SimworldError, match="unreadable resolved scenario"):
        run_batch(scenario(), out, episodes=3)


@pytest.mark.parametrize("setup,message", [
    (lambda d: (d / "notes.jsonl").write_text("{}\n"), "not a simworld run directory"),
    (lambda d: (d / "trajectories-000001-000.jsonl").write_text("{}\n"), "no scenario.yaml"),
])
def test_refuses_foreign_files(tmp_path, setup, message):
    out = tmp_path / "run"
    out.mkdir()
    setup(out)
    with pytest.raises(SimworldError, match=message):
        run_batch(scenario(), out, episodes=2)


def test_output_path_problems(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(SimworldError, match="exists and is not a directory"):
        run_batch(scenario(), afile, episodes=1)
    with pytest.raises(SimworldError, match="cannot create output directory"):
        run_batch(scenario(), afile / "sub", episodes=1)


def test_a_second_run_into_the_same_directory_is_refused(tmp_path):
    import fcntl

    out = tmp_path / "run"
    run_batch(scenario(), out, episodes=1)
    fd = os.open(out / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        from simworld.runner import RunDir

        with pytest.raises(SimworldError, match="another simworld run is writing"):
            RunDir(out).open(scenario(), lock_wait_s=0.2)
    finally:
        os.close(fd)


def test_max_retries_is_set_on_model_agents_only(tmp_path):
    path = runner_plugin.write_scenario(tmp_path / "s.yaml", clerk="awaiting_clerk")
    sc = resolve_scenario(path, max_retries=7)
    assert sc.roles["clerk"].agent.max_retries == 7
    assert "max_retries" not in sc.roles["user"].agent.model_dump()
    sc = resolve_scenario(path, ["roles.clerk.agent.max_retries=1"], max_retries=7)
    assert sc.roles["clerk"].agent.max_retries == 1
    assert resolve_scenario(path, seed=42).seed == 42


def test_scenario_yaml_is_deterministic():
    sc = scenario(variations={"task.params.amount": [1, 2]})
    assert scenario_yaml(sc) == scenario_yaml(scenario(variations={"task.params.amount": [1, 2]}))


def test_summary_groups_and_failures():
    def record(i, group, agreement, utility, termination="agreement", error=None):
        return {"episode_index": i, "events": [
            {"role": "user", "speaker": "buyer", "tool_calls": [{"id": "a", "name": "offer", "arguments": {}}]},
            {"role": "tool", "speaker": "buyer", "content": "{}"},
            {"role": "user", "speaker": "world", "content": "notice"},
            {"role": "assistant", "speaker": "seller", "content": "ok"}],
            "outcome": {"success": agreement, "termination": termination, "error": error, "invalid_moves": 1,
                        "tool_errors": 0, "metrics": {"group": group, "agreement": agreement, "utility": utility,
                                                      "note": "text is not averaged"}}}

    summary = RunSummary()
    for stats in [episode_stats(record(0, "tough-vs-tough", False, 0.0)),
                  episode_stats(record(1, "tough-vs-tough", True, 0.5)),
                  episode_stats(record(2, "soft-vs-tough", True, 0.9)),
                  episode_stats(record(3, "soft-vs-tough", False, 0.0, "error", "HTTP 429 after 3 retries"))]:
        summary.add(stats)
    d = summary.to_dict()
    assert d["episodes"] == 4 and d["turns"] == 8 and d["tool_calls"] == 4 and d["invalid_moves"] == 4
    assert d["failed"] == 1 and d["terminations"] == {"agreement": 3, "error": 1}
    assert d["groups"]["tough-vs-tough"] == {"episodes": 2, "success_rate": 0.5, "agreement": 0.5, "utility": 0.25}
    assert d["groups"]["soft-vs-tough"]["utility"] == 0.45
    from rich.console import Console

    console = Console(record=True, width=100)
    summary.render(console)
    text = console.export_text()
    assert "per group (means)" in text and "tough-vs-tough" in text and "HTTP 429 after 3 retries (1)" in text
    assert "note" not in text


def _scenario_files():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "scenarios"
    return sorted(root.glob("*/*.yaml"))


@pytest.mark.parametrize("path", _scenario_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_trajectory_lines_are_pydantics_json_and_their_stats_match(path):
    """`Trajectory.to_jsonl()` (orjson over a Python-mode dump) is byte for byte pydantic's JSON, and
    the runner's summary statistics of a trajectory equal those read back from its line, on every
    scenario."""
    from simworld.summary import trajectory_stats

    sc = resolve_scenario(path)
    for spec in episode_specs(sc, 6):
        traj = run_episode_sync(sc, spec)
        assert traj.to_jsonl() == traj.model_dump_json().encode() + b"\n"
        assert trajectory_stats(traj) == episode_stats(orjson.loads(traj.to_jsonl()))


def test_group_table_stays_on_one_screen():
    from rich.console import Console

    summary = RunSummary()
    metrics = {"agreement": 1, "agreement_round": 3, "rounds": 3, "utility_buyer": 0.5, "utility_seller": 0.5,
               "pareto_distance": 0.1, "nash_distance": 0.2, "welfare_ratio": 0.9}
    for i in range(30):
        record = {"episode_index": i, "events": [], "outcome": {
            "success": True, "termination": "agreement", "metrics": {"group": f"buyer=s{i % 25} vs seller=t", **metrics}}}
        summary.add(episode_stats(record))
    assert summary.metric_names() == list(metrics)  # the order the episodes reported them in
    narrow = Console(record=True, width=80)
    summary.render(narrow)
    text = narrow.export_text()
    assert "per group (means); 5 more groups and 5 more metrics in manifest.json" in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert len(text.splitlines()) <= 40
    wide = Console(record=True, width=160)
    summary.render(wide)
    assert "per group (means); 5 more groups in manifest.json" in wide.export_text()
    assert len(summary.to_dict()["groups"]) == 25


@pytest.mark.parametrize("content", [b"[1, 2]", b'{"episodes": "y"}', b'{"sessions": 5}', b"", b"\xff\x00"])
def test_a_damaged_manifest_is_set_aside_and_the_run_resumes(tmp_path, content):
    sc = scenario()
    out = tmp_path / "run"
    run_batch(sc, out, episodes=6)
    (out / "manifest.json").write_bytes(content)
    result = run_batch(sc, out, episodes=8)
    assert result.status == "complete" and result.new == 2 and result.skipped == 6
    assert any(r.startswith("manifest.json: unreadable") for r in result.repaired), result.repaired
    assert (out / "manifest.json.damaged").read_bytes() == content
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["episodes"] == 8 and manifest["status"] == "complete"
    assert len(list(iter_records(out))) == 8


def _files(run_dir):
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def test_a_reader_sees_the_shards_as_they_were_when_it_started(tmp_path, monkeypatch):
    """Records a resume appends while `score` or `export` is between its two passes (retried
    episodes, into a shard that was still empty; a shard made after) are not read beside the records
    they supersede: each episode is read once."""
    sc = scenario(clerk="flaky_clerk")
    out, retried = tmp_path / "run", tmp_path / "retried"
    monkeypatch.setenv(runner_plugin.FAIL_ENV, "2,5")
    run_batch(sc, out, episodes=8)  # one shard: one record per episode, in order, two of them failed
    monkeypatch.setenv(runner_plugin.FAIL_ENV, "")
    shutil.copytree(out, retried)
    run_batch(sc, retried, episodes=8)
    new_lines = (retried / "trajectories-000002-000.jsonl").read_bytes()
    assert new_lines.count(b"\n") == 2
    before = list(iter_records(out))
    resumed_shard = out / "trajectories-000002-000.jsonl"
    resumed_shard.touch()  # the resume has opened its shard and not written yet
    reader = iter_records(out)
    first = next(reader)  # the reader's first pass is over
    with open(resumed_shard, "ab") as fh:
        fh.write(new_lines)
    with open(out / "trajectories-000001-000.jsonl", "ab") as fh:
        fh.write(new_lines)
    (out / "trajectories-000003-000.jsonl").write_bytes(new_lines)
    assert [first, *reader] == before
    # A reader started now sees the retried records, each episode once.
    after = list(iter_records(out))
    assert [r["episode_index"] for r in after] == list(range(8))
    assert all(r["outcome"]["success"] for r in after)


def _failing_shard_fsync(monkeypatch):
    real = os.fsync

    def fsync(fd):
        if "trajectories-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EIO, "Input/output error")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to tell a shard's descriptor")
def test_a_shard_whose_last_fsync_fails_fails_the_run(tmp_path, monkeypatch, workers):
    """The disk reports a write-back error at the fsync when the shard is closed: the records may not
    be on disk, so the run says so (one line naming the shard, status failed), whatever the workers."""
    out = tmp_path / "run"
    _failing_shard_fsync(monkeypatch)
    with pytest.raises(SimworldError) as raised:
        run_batch(scenario(), out, episodes=6, workers=workers)
    shards = [f"cannot write {out / f'trajectories-000001-00{k}.jsonl'}: Input/output error" for k in range(workers)]
    assert str(raised.value) in shards  # (the worker that fails first is named)
    assert raised.value.exit_code == 2
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["status"] == "failed" and manifest["sessions"][-1]["status"] == "failed"


def test_a_failing_close_does_not_hide_the_error_already_raised(tmp_path, monkeypatch):
    _failing_shard_fsync(monkeypatch)
    with pytest.raises(EpisodeCrash, match="000003 crashed"):
        run_batch(scenario(clerk="broken_clerk"), tmp_path / "run", episodes=6)


@pytest.mark.parametrize("edit", [{"seed": 5}, {"max_turns": 11}, {"today": "2025-01-15"}])
def test_a_run_whose_scenario_yaml_was_edited_is_refused_before_anything_is_written(tmp_path, edit):
    """`simworld run RUN/scenario.yaml --out RUN` after RUN/scenario.yaml was edited: its records were
    made under another scenario; appending to them would mix two scenarios in one run."""
    out = tmp_path / "run"
    sc = scenario()
    run_batch(sc, out, episodes=6)
    with open(out / "trajectories-000001-000.jsonl", "ab") as fh:
        fh.write(b'{"schema_version":1,"episode_id":"ledger')  # a torn tail: not cut either
    data = yaml.safe_load((out / "scenario.yaml").read_text())
    (out / "scenario.yaml").write_text(yaml.safe_dump({**data, **edit}, sort_keys=False))
    before = _files(out)
    edited = resolve_scenario(out / "scenario.yaml")
    with pytest.raises(SimworldError) as raised:
        run_batch(edited, out, episodes=9)
    assert str(raised.value) == (f"{out}: its 6 records were made under scenario {sc.content_hash[:12]}, but "
                                 f"{out / 'scenario.yaml'} is now {edited.content_hash[:12]}; restore it or use "
                                 "a new --out")
    assert _files(out) == before
    (out / "scenario.yaml").write_bytes(scenario_yaml(sc))  # restored: the run goes on
    result = run_batch(sc, out, episodes=9)
    assert (result.new, result.skipped) == (3, 6)


def test_many_records_that_are_not_their_episodes_own_are_one_line_each_up_to_a_few(tmp_path):
    sc = scenario()
    out = tmp_path / "run"
    run_batch(sc, out, episodes=12)
    shard = out / "trajectories-000001-000.jsonl"
    records = [orjson.loads(line) for line in shard.read_bytes().splitlines()]
    for r in records[:9]:
        r["seed"] += 1  # another episode's seed
    shard.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    result = run_batch(sc, out, episodes=12)
    assert result.new == 9
    assert len(result.repaired) == 6 and all("ignored a record of episode" in r for r in result.repaired[:5])
    assert result.repaired[5] == "4 more records ignored as above (their episodes run again)"


# -- a run's episode count never shrinks: manifest, status, summary and records agree


def test_fewer_episodes_than_the_run_has_are_refused_before_anything_is_written(tmp_path):
    """`run -n 30` then `run -n 12`: one line, nothing written (not even a torn tail cut); the
    scenario's default (10) resumes the run as the 30 it is, and manifest, summary and records agree."""
    sc = scenario()
    out = tmp_path / "run"
    run_batch(sc, out, episodes=30)
    with open(shard_paths(out)[0], "ab") as fh:
        fh.write(b'{"schema_version":1,"episode_id":"ledger')  # a torn tail the refused run must leave
    before = _files(out)
    with pytest.raises(SimworldError, match=r"^--episodes 12: .+ is a run of 30 episodes \(all recorded\) and a run "
                                            r"never shrinks; resume it with --episodes 30 \(or without --episodes\), "
                                            r"or use a new --out for a run of 12$"):
        run_batch(sc, out, episodes=12)
    assert _files(out) == before
    result = run_batch(sc, out)  # the scenario says 10
    assert result.status == "complete" and result.requested == 30 and result.new == 0 and result.skipped == 30
    assert any("torn last line" in note for note in result.repaired)
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["episodes"] == 30 and manifest["status"] == "complete"
    assert manifest["summary"]["episodes"] == 30 == len(list(iter_records(out)))


def test_with_a_damaged_manifest_the_records_say_how_many_episodes_the_run_has(tmp_path):
    sc = scenario()
    out = tmp_path / "run"
    run_batch(sc, out, episodes=20)
    (out / "manifest.json").write_bytes(b"{torn")
    with pytest.raises(SimworldError, match=r"is a run of 20 episodes \(all recorded\)"):
        run_batch(sc, out, episodes=8)
    assert (out / "manifest.json").read_bytes() == b"{torn"  # set aside only by a run that goes ahead
    result = run_batch(sc, out)
    assert result.status == "complete" and result.requested == 20 and result.new == 0
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["episodes"] == 20 and manifest["summary"]["episodes"] == 20


def test_resuming_without_episodes_finishes_the_run_an_interrupted_session_asked_for(tmp_path):
    sc = scenario()  # 10 episodes by default
    out = tmp_path / "run"
    run_batch(sc, out, episodes=6)
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    (out / "manifest.json").write_bytes(orjson.dumps({**manifest, "episodes": 16, "status": "interrupted"}))
    result = run_batch(sc, out)
    assert result.status == "complete" and result.requested == 16 and result.new == 10 and result.skipped == 6
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["episodes"] == 16 and manifest["summary"]["episodes"] == 16 == len(list(iter_records(out)))
