"""Resume with real processes and files: `simworld run` killed (-9, Ctrl-C) mid-run, torn and
corrupt lines, a full disk, an unwritable directory; the re-run equals an uninterrupted run."""

import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import orjson
import pytest

import runner_plugin
from simworld.runio import iter_records, shard_paths
from simworld.scenario import load_scenario
from simworld.types import strip_timings

N = 240


def simworld(*args, check=None, **kwargs):
    proc = subprocess.run([sys.executable, "-m", "simworld", *map(str, args)], capture_output=True, text=True,
                          env=runner_plugin.subprocess_env(), timeout=120, **kwargs)
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "simworld", *map(str, args)], env=runner_plugin.subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def lines_written(run_dir):
    return sum(p.read_bytes().count(b"\n") for p in shard_paths(run_dir)) if run_dir.exists() else 0


def wait_for_lines(run_dir, proc, at_least, timeout=60):
    deadline = time.monotonic() + timeout
    while lines_written(run_dir) < at_least:
        assert proc.poll() is None, "the run finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)


def stripped(run_dir):
    return sorted(orjson.dumps(strip_timings(r), option=orjson.OPT_SORT_KEYS) for r in iter_records(run_dir))


@pytest.fixture(scope="module")
def slow_scenario(tmp_path_factory):
    """Episodes take a few ms each, so a run can be stopped mid-way."""
    d = tmp_path_factory.mktemp("scen")
    return runner_plugin.write_scenario(d / "slow.yaml", user={"type": "sleepy_user", "delay": 0.003})


@pytest.fixture(scope="module")
def reference(slow_scenario, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    simworld("run", slow_scenario, "--episodes", N, "--out", out, "-q", check=0)
    records = stripped(out)
    assert len(records) == N
    return records


def tear_last_line(run_dir):
    shard = shard_paths(run_dir)[-1]
    with open(shard, "ab") as fh:
        fh.write(b'{"schema_version":1,"episode_id":"ledger_deposit-s0-0001')  # a write cut short


@pytest.mark.parametrize("workers,kill_group", [(1, True), (2, True), (2, False)])
def test_kill_9_mid_run_then_resume_equals_uninterrupted(slow_scenario, reference, tmp_path, workers, kill_group):
    out = tmp_path / "run"
    cmd = ("run", slow_scenario, "--episodes", N, "--out", out, "--workers", workers, "-q")
    proc = start(*cmd)
    wait_for_lines(out, proc, 30)
    if kill_group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:  # only the parent: its workers must notice and stop
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    tear_last_line(out)
    before = lines_written(out)
    assert 30 <= before < N
    again = simworld(*cmd, check=0)
    assert "repaired trajectories-000001-" in again.stderr and "torn last line" in again.stderr
    assert f"{N:,} episodes" in again.stdout and "already done" in again.stdout
    assert stripped(out) == reference
    every = list(iter_records(out, latest_only=False))
    assert len(every) == N and len({r["episode_id"] for r in every}) == N  # nothing lost or duplicated
    for shard in shard_paths(out):
        assert shard.read_bytes().endswith(b"\n")
    again = simworld(*cmd, check=0)
    assert f"0 run" in again.stdout and lines_written(out) == N


def test_ctrl_c_stops_cleanly_and_resumes(slow_scenario, reference, tmp_path):
    out = tmp_path / "run"
    cmd = ("run", slow_scenario, "--episodes", N, "--out", out, "--workers", 2)
    proc = start(*cmd)
    wait_for_lines(out, proc, 20)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the foreground group
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr and "re-run the same command to resume" in stderr
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["status"] == "interrupted"
    assert all(s.read_bytes().endswith(b"\n") for s in shard_paths(out))
    simworld(*cmd, check=0)
    assert stripped(out) == reference
    assert orjson.loads((out / "manifest.json").read_bytes())["status"] == "complete"


def _finished_run(slow_scenario, tmp_path):
    """A finished run: (its directory, the command that made it, its first shard and that shard's lines)."""
    out = tmp_path / "run"
    cmd = ("run", slow_scenario, "--episodes", N, "--out", out, "-q")
    simworld(*cmd, check=0)
    shard = shard_paths(out)[0]
    return out, cmd, shard, shard.read_bytes().splitlines(keepends=True)


def test_corrupt_lines_are_rerun(slow_scenario, reference, tmp_path):
    out, cmd, shard, lines = _finished_run(slow_scenario, tmp_path)
    lines[10] = b"#" * (len(lines[10]) - 1) + b"\n"  # bit rot in the middle: a whole line unreadable
    lines[-1] = lines[-1][:40] + b"\x00garbage" + lines[-1][48:]  # the last line corrupt
    shard.write_bytes(b"".join(lines))
    assert len(stripped(out)) == N - 2
    again = simworld(*cmd, check=0)
    assert "2 run" in again.stdout or "2 run" in again.stdout.replace(",", "")
    assert stripped(out) == reference


def test_a_record_of_the_wrong_shape_is_noted_and_its_episode_rerun(slow_scenario, reference, tmp_path):
    out, cmd, shard, lines = _finished_run(slow_scenario, tmp_path)
    record = orjson.loads(lines[5])
    record["events"] = "garbage"  # valid JSON, not a trajectory
    lines[5] = orjson.dumps(record) + b"\n"
    shard.write_bytes(b"".join(lines))
    again = simworld(*cmd, check=0)
    assert f"ignored a record of episode {record['episode_id']} that is not a valid trajectory" in \
        " ".join(again.stderr.split()), again.stderr
    assert "Traceback" not in again.stderr
    assert stripped(out) == reference  # the episode ran again; its new record is the one readers take


@pytest.mark.parametrize("change", [
    lambda r: r.update(seed=-1),  # not a seed at all
    lambda r: r.update(seed=r["seed"] + 1),  # another episode's seed
    lambda r: r.update(episode_id="other-s9-000005"),  # another id: episode 5 would have no record
])
def test_a_record_that_is_not_its_episodes_own_does_not_stand_in_for_it(slow_scenario, reference, tmp_path, change):
    out, cmd, shard, lines = _finished_run(slow_scenario, tmp_path)
    record = orjson.loads(lines[5])
    change(record)
    lines[5] = orjson.dumps(record) + b"\n"
    shard.write_bytes(b"".join(lines))
    again = simworld(*cmd, check=0)
    assert "ignored a record of episode" in " ".join(again.stderr.split()), again.stdout + again.stderr
    assert "1 run" in again.stdout
    ids = {r["episode_id"] for r in iter_records(out)}
    assert {r["episode_id"] for r in map(orjson.loads, reference)} <= ids


def _fsize_limit(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("workers", [1, 2])
def test_file_size_limit_is_one_line_and_records_stay_whole(slow_scenario, reference, tmp_path, workers):
    out = tmp_path / "run"
    cmd = ("run", slow_scenario, "--episodes", N, "--out", out, "-q", "--workers", workers)
    failed = simworld(*cmd, check=2, preexec_fn=_fsize_limit(100_000))
    errors = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, failed.stderr
    assert errors[0].startswith("error: cannot write ") and errors[0].endswith("file size limit exceeded")
    for shard in shard_paths(out):
        data = shard.read_bytes()
        assert len(data) <= 100_000 and data.endswith(b"\n")
        for line in data.splitlines():
            orjson.loads(line)
    assert lines_written(out) > 0
    simworld(*cmd, check=0)
    assert stripped(out) == reference


def _namespace_mount_available():
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt 2>/dev/null || mount -t tmpfs tmpfs /tmp"],
        capture_output=True).returncode == 0


needs_mount = pytest.mark.skipif(not _namespace_mount_available(),
                                 reason="needs unshare -rm (user+mount namespaces) to mount a small tmpfs; "
                                        "the file-size-limit test covers the same error path")


@needs_mount
def test_full_disk_then_more_space(slow_scenario, reference, tmp_path):
    """A real ENOSPC: a 96 KiB tmpfs fills up; then it grows and the same command completes."""
    mnt, saved, log = tmp_path / "mnt", tmp_path / "saved", tmp_path / "log"
    mnt.mkdir()
    run = [sys.executable, "-m", "simworld", "run", str(slow_scenario), "--episodes", str(N),
           "--out", str(mnt / "run"), "-q"]
    script = f"""
        set -u
        mount -t tmpfs -o size=96k tmpfs {mnt}
        {' '.join(run)} > {log}.out1 2> {log}.err1; echo $? > {log}.rc1
        mkdir -p {saved}/full && cp {mnt}/run/* {saved}/full/
        mount -o remount,size=16m {mnt}
        {' '.join(run)} > {log}.out2 2> {log}.err2; echo $? > {log}.rc2
        mkdir -p {saved}/done && cp {mnt}/run/* {mnt}/run/.lock {saved}/done/
    """
    subprocess.run(["unshare", "-rm", "sh", "-c", script], env=runner_plugin.subprocess_env(), check=True,
                   timeout=120)
    err1 = (tmp_path / "log.err1").read_text()
    assert (tmp_path / "log.rc1").read_text().strip() == "2", err1
    assert err1.strip().count("\n") == 0 and "no space left on device" in err1 and "Traceback" not in err1
    full = saved / "full"
    data = b"".join(p.read_bytes() for p in shard_paths(full))
    assert data.endswith(b"\n") and data.count(b"\n") > 5
    for line in data.splitlines():
        orjson.loads(line)
    # The full disk kept the run from rewriting its manifest, still "running": replay must not call it running.
    assert orjson.loads((full / "manifest.json").read_bytes())["status"] == "running"
    replay = simworld("replay", full, "-q", check=0)
    not_recorded = N - len(data.splitlines())
    assert (f"note: the run is running (or its `simworld run` was killed): {not_recorded} of its episodes "
            "are not recorded yet (re-run its `simworld run` command to finish it)") in replay.stdout, replay.stdout
    assert (tmp_path / "log.rc2").read_text().strip() == "0", (tmp_path / "log.err2").read_text()
    assert stripped(saved / "done") == reference


@needs_mount
def test_read_only_output_directory(slow_scenario, tmp_path):
    mnt, log = tmp_path / "mnt", tmp_path / "log"
    mnt.mkdir()
    run = f"{sys.executable} -m simworld run {slow_scenario} --episodes 5 -q --out"
    script = f"""
        mount -t tmpfs tmpfs {mnt}
        {run} {mnt}/run > /dev/null 2>&1; echo $? > {log}.rc0
        mount -o remount,ro {mnt}
        {run} {mnt}/run > /dev/null 2> {log}.err1; echo $? > {log}.rc1
        {run} {mnt}/new > /dev/null 2> {log}.err2; echo $? > {log}.rc2
        cat {mnt}/run/trajectories-*.jsonl | wc -l > {log}.lines
    """
    subprocess.run(["unshare", "-rm", "sh", "-c", script], env=runner_plugin.subprocess_env(), check=True,
                   timeout=60)
    read = lambda suffix: (tmp_path / f"log.{suffix}").read_text().strip()  # noqa: E731
    assert read("rc0") == "0"
    for k in ("1", "2"):
        assert read("rc" + k) == "2" and read("err" + k).count("\n") == 0, read("err" + k)
        assert "Read-only file system" in read("err" + k)
    assert read("lines") == "5"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions (the read-only mount test covers it)")
def test_unwritable_output_directory(slow_scenario, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        failed = simworld("run", slow_scenario, "--episodes", 2, "--out", locked / "run", "-q", check=2)
        assert failed.stderr.count("\n") == 1 and "Permission denied" in failed.stderr
    finally:
        locked.chmod(0o700)


def test_retail_demo_killed_mid_run_resumes_to_the_same_trajectories(tmp_path):
    """The real retail scenario over two workers: kill -9 the whole run, tear a line, run it again."""
    demo = runner_plugin.TESTS.parent / "scenarios" / "retail" / "cancel_pending_order.yaml"
    n = 800
    cmd = ("run", demo, "--episodes", n, "--out", tmp_path / "run", "--workers", 2, "-q")
    proc = start(*cmd)
    wait_for_lines(tmp_path / "run", proc, 60)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    tear_last_line(tmp_path / "run")
    assert lines_written(tmp_path / "run") < n
    simworld(*cmd, check=0)
    simworld("run", demo, "--episodes", n, "--out", tmp_path / "clean", "-q", check=0)
    resumed = stripped(tmp_path / "run")
    assert len(resumed) == n and resumed == stripped(tmp_path / "clean")
    assert len(list(iter_records(tmp_path / "run", latest_only=False))) == n


def test_a_run_of_its_own_edited_scenario_yaml_is_one_line_and_writes_nothing(tmp_path):
    """The docs' "RUN/scenario.yaml reproduces the run", after someone edited the seed in it: the run's
    records were made under another scenario; nothing is appended (nor 30 "ignored a record" lines)."""
    scen = runner_plugin.write_scenario(tmp_path / "s.yaml")
    out = tmp_path / "run"
    simworld("run", scen, "--episodes", 30, "--out", out, "-q", check=0)
    own = out / "scenario.yaml"
    own.write_text(own.read_text().replace("\nseed: 0\n", "\nseed: 5\n"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    res = simworld("run", own, "--episodes", 40, "--out", out, "-q", check=2)
    assert res.stderr.count("\n") == 1 and res.stderr.startswith(f"error: {out}: its 30 records were made under "
                                                                 "scenario "), res.stderr
    assert res.stderr.endswith(f"but {own} is now {load_scenario(own).content_hash[:12]}; restore it or use a "
                               "new --out\n"), res.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_resume_removes_what_a_killed_run_left_half_written(slow_scenario, reference, tmp_path, monkeypatch):
    """A SIGKILL between write_atomic's temporary and its rename leaves `.manifest.json.tmp-PID`;
    the next run of the directory, which holds its lock, removes it (and no live process's file)."""
    from test_scoring import dead_pid, left_behind

    out, cmd, _, _ = _finished_run(slow_scenario, tmp_path)
    finals = [out / "manifest.json", out / "scenario.yaml"]
    stale = left_behind(finals, dead_pid(), monkeypatch)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = left_behind(finals, sleeper.pid, monkeypatch)
        simworld(*cmd, check=0)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not any(p.exists() for p in stale) and all(p.exists() for p in live)
    assert stripped(out) == reference


def test_fewer_episodes_after_ctrl_c_are_refused_and_every_reader_says_the_run_is_unfinished(slow_scenario, reference,
                                                                                             tmp_path):
    """The QA report: `run -n N`, Ctrl-C, `run -n 10` marked the run complete with a summary of 10
    while replay listed the rest MISSING. Now the smaller run is refused and the run stays
    interrupted until the same command (or one without -n) finishes it."""
    out = tmp_path / "run"
    cmd = ("run", slow_scenario, "--episodes", N, "--out", out, "-q")
    proc = start(*cmd)
    wait_for_lines(out, proc, 20)
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    recorded = len(list(iter_records(out)))
    manifest = (out / "manifest.json").read_bytes()
    assert orjson.loads(manifest)["status"] == "interrupted" and recorded < N
    small = simworld("run", slow_scenario, "--episodes", 10, "--out", out, "-q", check=2)
    assert small.stderr == (f"error: --episodes 10: {out} is a run of {N} episodes ({recorded} recorded) and a run "
                            f"never shrinks; resume it with --episodes {N} (or without --episodes), or use a new --out "
                            "for a run of 10\n")
    assert (out / "manifest.json").read_bytes() == manifest and len(list(iter_records(out))) == recorded
    replay = simworld("replay", out, "-q", check=0)
    assert f"note: the run is interrupted: {N - recorded} of its episodes are not recorded yet" in replay.stdout
    assert "MISSING" not in replay.stdout
    score = simworld("score", out, check=0)
    assert f"the run is interrupted: {N - recorded} of its episodes are not recorded yet" in score.stderr
    export = simworld("export", out, "--no-dedup", "--out", tmp_path / "data.jsonl", check=0)
    assert f"the run is interrupted: {N - recorded} of its episodes are not recorded yet" in export.stderr
    simworld("run", slow_scenario, "--out", out, "-q", check=0)  # the scenario says fewer: the run's N stand
    assert stripped(out) == reference
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["episodes"] == N and manifest["status"] == "complete" and manifest["summary"]["episodes"] == N
    assert "note:" not in simworld("replay", out, "-q", check=0).stdout
