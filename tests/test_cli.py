"""The `simworld` command line end to end (real subprocesses): run, list, schema, plugins, progress,
bad input as one line, and a `--help` that imports nothing heavy."""

import importlib.util
import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import jsonschema
import orjson
import pytest

import runner_plugin
from simworld.cli import COMMANDS
from simworld.runio import iter_records

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("numba", "gymnasium", "pettingzoo", "litellm", "openai", "torch", "transformers", "trl")


def simworld(*args, check=None, env=None, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "simworld", *map(str, args)], capture_output=True, text=True,
                          env=env or runner_plugin.subprocess_env(), cwd=cwd, timeout=120)
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return proc


@pytest.fixture()
def ledger_yaml(tmp_path):
    return runner_plugin.write_scenario(tmp_path / "ledger.yaml")


PRESENT = [name for name, (module, _) in COMMANDS.items() if importlib.util.find_spec(module) is not None]


@pytest.mark.parametrize("args", [["--help"], *[[name, "--help"] for name in PRESENT]])
def test_help_imports_nothing_heavy(args):
    code = ("import sys\nfrom simworld.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in %r if m in sys.modules))" % (args, HEAVY))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []", proc.stdout[-400:]
    assert "Usage:" in proc.stdout


DEMO = REPO / "scenarios" / "retail" / "cancel_pending_order.yaml"


def test_readme_demo_command(tmp_path):
    """`simworld run scenarios/retail/cancel_pending_order.yaml --episodes 200 --out runs/demo`, as the README says."""
    (tmp_path / "scenarios").symlink_to(REPO / "scenarios")
    proc = subprocess.run([sys.executable, "-m", "simworld", "run", "scenarios/retail/cancel_pending_order.yaml",
                           "--episodes", "200", "--out", "runs/demo"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "200 / 200 (100.0%)" in proc.stdout and "user_stop 200" in proc.stdout
    out = tmp_path / "runs" / "demo"
    records = list(iter_records(out))
    assert len(records) == 200 and {r["episode_index"] for r in records} == set(range(200))
    for r in records:
        assert r["outcome"]["success"] and r["outcome"]["state_match"] and r["outcome"]["outputs_stated"]
        assert r["task"]["type"] == "cancel_pending_order"
        assert any(c["name"] == "cancel_pending_order" for e in r["events"] for c in e["tool_calls"])
    assert len({r["variation"]["roles.customer.agent.style"] for r in records}) == 3
    summary = orjson.loads((out / "manifest.json").read_bytes())["summary"]
    assert summary["episodes"] == 200 and summary["success_rate"] == 1.0
    assert summary["tool_calls"] == sum(len(e["tool_calls"]) for r in records for e in r["events"])
    # docs/cli.md shows this command's summary: its numbers are this run's (the timing aside).
    documented = (REPO / "docs" / "cli.md").read_text().split("The output ends with a summary:\n\n```\n")[1]
    head, *rows = documented.split("```")[0].splitlines()
    printed = [line.rstrip() for line in proc.stdout.splitlines()]
    assert printed[0].startswith(head.split(" run in ")[0] + " run in ")
    assert printed[1:] == rows


def test_run_end_to_end(ledger_yaml, tmp_path):
    out = tmp_path / "runs" / "demo"
    proc = simworld("run", ledger_yaml, "--episodes", 60, "--out", out, "--seed", 3, check=0)
    for label in ("episodes", "success", "tool calls", "turns", "invalid moves", "tool errors", "terminations"):
        assert label in proc.stdout
    assert "60 / 60 (100.0%)" in proc.stdout and "user_stop 60" in proc.stdout
    assert "episodes/s" in proc.stdout
    assert proc.stderr == ""  # not a TTY: no progress bar
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["trajectories-000001-000.jsonl"]
    records = list(iter_records(out))
    assert len(records) == 60 and all(r["outcome"]["success"] for r in records)
    assert {r["episode_id"].split("-")[1] for r in records} == {"s3"}
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["seed"] == 3 and manifest["sessions"][0]["command"][:2] == ["simworld", "run"]
    # The same command again: nothing to do. Another scenario into the same directory: refused.
    again = simworld("run", ledger_yaml, "--episodes", 60, "--out", out, "--seed", 3, check=0)
    assert "0 run" in again.stdout and "60 already done" in again.stdout
    other = simworld("run", ledger_yaml, "--episodes", 60, "--out", out, "--seed", 4, check=2)
    assert other.stderr.count("\n") == 1 and "holds a run of a different scenario" in other.stderr
    # The resolved scenario in the run directory runs as it is, to the same trajectories.
    copy = tmp_path / "copy"
    simworld("run", out / "scenario.yaml", "--episodes", 60, "--out", copy, "--workers", 2, check=0)
    key = lambda r: r["episode_id"]  # noqa: E731
    from simworld.types import strip_timings

    assert sorted(map(strip_timings, iter_records(copy)), key=key) == sorted(map(strip_timings, records), key=key)


def test_set_overrides_and_bad_input_are_one_line(ledger_yaml, tmp_path):
    out = tmp_path / "o"
    ok = simworld("run", ledger_yaml, "-n", 5, "--out", out, "--set", "task.params.amount=9", check=0)
    assert "5 / 5" in ok.stdout
    assert all(r["task"]["gold_plan"][0]["arguments"]["amount"] == 9 for r in iter_records(out))
    cases = [
        (("run", tmp_path / "missing.yaml", "--out", tmp_path / "x"), "no such scenario file"),
        (("run", ledger_yaml, "--out", tmp_path / "x", "--set", "max_turns"), "expected dotted.path=value"),
        (("run", ledger_yaml, "--out", tmp_path / "x", "--set", "max_turns=lots"),
         "max_turns (from --set max_turns):"),
        (("run", ledger_yaml, "--out", tmp_path / "x", "--set", "roles.clerk.agent.type=ledger_clark"),
         "did you mean 'ledger_clerk'?"),
        (("run", ledger_yaml, "--out", ledger_yaml), "exists and is not a directory"),
        (("run", ledger_yaml, "--out", tmp_path / "x", "--episodes", "-1"), "Invalid value"),
        (("run", ledger_yaml, "--out", tmp_path / "x", "--workers", "0"), "Invalid value"),
        (("list", "planets"), "Invalid value"),
    ]
    for args, message in cases:
        proc = simworld(*args, check=2)
        assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr, (args, proc.stderr)


def test_broken_plugin_is_one_line(ledger_yaml, tmp_path):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('half-written plugin')\n")
    env = runner_plugin.subprocess_env(SIMWORLD_PLUGINS="runner_plugin,broken_plugin")
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)
    proc = simworld("validate", ledger_yaml, check=2, env=env)
    assert proc.stderr.strip() == ("error: SIMWORLD_PLUGINS: cannot import plugin module 'broken_plugin': "
                                   "RuntimeError: half-written plugin")


def test_list_shows_registries_and_scenario_files(tmp_path):
    (tmp_path / "scenarios" / "bank").mkdir(parents=True)
    runner_plugin.write_scenario(tmp_path / "scenarios" / "bank" / "deposit.yaml")
    (tmp_path / "scenarios" / "bank" / "broken.yaml").write_text("name: [")
    proc = simworld("list", check=0, cwd=tmp_path)
    out = proc.stdout
    for header in ("worlds", "tasks", "tools", "agents", "scorers", "scenarios"):
        assert f"\n{header}\n" in "\n" + out
    assert "ledger/deposit" in out and "flaky_clerk" in out and "sleepy_user" in out
    assert "ledger.deposit" in out and "write" in out and "account_id -> balance" in out
    assert "scenarios/bank/deposit.yaml" in out and "ledger_deposit" in out and "ledger/deposit" in out
    assert "scenarios/bank/broken.yaml" in out and "unreadable" in out
    tools = simworld("list", "tools", check=0, cwd=tmp_path).stdout
    assert any(line.startswith("ledger.deposit ") for line in tools.splitlines()) and "worlds" not in tools
    agents = simworld("list", "agents", check=0).stdout
    assert any(line.startswith("sleepy_user") and "params: delay" in line for line in agents.splitlines())


def test_schema_is_a_json_schema_that_checks_scenarios(tmp_path):
    schema = json.loads(simworld("schema", check=0).stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(runner_plugin.scenario_data(), schema)
    bad = runner_plugin.scenario_data()
    bad["max_turn"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    simworld("schema", "--output", tmp_path / "s.json", check=0)
    assert json.loads((tmp_path / "s.json").read_text()) == schema


def test_progress_bar_on_a_terminal(tmp_path):
    scen = runner_plugin.write_scenario(tmp_path / "slow.yaml", user={"type": "sleepy_user", "delay": 0.002})
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "simworld", "run", str(scen), "-n", "150", "--out",
                             str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=slave, env={**runner_plugin.subprocess_env(),
                                                                      "COLUMNS": "120", "TERM": "xterm"})
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(timeout=60)
    os.close(master)
    assert proc.returncode == 0
    text = seen.decode(errors="replace")
    assert "episodes/s" in text and "150/150" in text
    quiet = subprocess.run([sys.executable, "-m", "simworld", "run", str(scen), "-n", "5", "-q", "--out",
                            str(tmp_path / "q")], capture_output=True, env=runner_plugin.subprocess_env())
    assert quiet.returncode == 0 and quiet.stderr == b""


@pytest.mark.parametrize("command", ["score", "export"])
def test_sigterm_stops_score_and_export_as_ctrl_c_does(tmp_path, command):
    """`kill`, `timeout` and a CI job's end send SIGTERM: the command cleans up its temporaries, the
    previous output stays whole, and it says it was interrupted."""
    import signal
    import time

    import test_export_worlds as worlds

    run = worlds.make_run(tmp_path / "run", worlds.ledger_data(), 1500)
    out = tmp_path / "o.jsonl"
    args = ["score", run] if command == "score" else ["export", run, "--out", out, "--no-dedup"]
    simworld(*args, check=0)
    folder = run / "scores" if command == "score" else tmp_path
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    proc = subprocess.Popen([sys.executable, "-m", "simworld", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=runner_plugin.subprocess_env())
    deadline = time.monotonic() + 60
    while not any(".tmp-" in p.name for p in folder.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "finished before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().endswith("Interrupted.") and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before  # whole, no temporaries


def test_run_out_that_an_unset_variable_makes_is_refused(ledger_yaml, tmp_path):
    """`--out "$DIR"` with DIR unset is empty (the run would go into the current directory, perhaps a
    checkout); `--out "runs/$NAME"` is the folder of all runs: refused before anything is written.
    An empty directory, and a run directory to resume, are still run into."""
    work = tmp_path / "work"
    (work / "runs" / "old").mkdir(parents=True)
    (work / "notes.txt").write_text("mine\n")
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    for out, message in (("", "error: --out is empty: name the run directory"),
                         ("runs/", "error: --out runs/: holds old and no simworld run"),
                         (".", "error: --out .: holds notes.txt, runs and no simworld run")):
        proc = simworld("run", ledger_yaml, "-n", 2, "--out", out, "-q", check=2, cwd=work)
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(message), (out, proc.stderr)
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before
    empty = work / "runs" / "old"
    simworld("run", ledger_yaml, "-n", 2, "--out", ".", "-q", check=0, cwd=empty)
    again = simworld("run", ledger_yaml, "-n", 3, "--out", ".", "-q", check=0, cwd=empty)
    assert "2 already done" in again.stdout and len(list(iter_records(empty))) == 3


def test_counts_agree_with_their_nouns(ledger_yaml, tmp_path):
    """QA: '1 variations' (validate), '1 tasks' (pass^k of score and run)."""
    from simworld.errors import counted

    assert [counted(n, "task") for n in (0, 1, 2, 3141)] == ["0 tasks", "1 task", "2 tasks", "3,141 tasks"]
    assert [counted(n, "mismatch", "mismatches") for n in (1, 2)] == ["1 mismatch", "2 mismatches"]
    valid = simworld("validate", ledger_yaml, "--set", "variations.max_turns=[5, 6]", check=0)
    assert valid.stdout.rstrip().endswith(", 1 variation")
    run = simworld("run", ledger_yaml, "-n", 2, "--set", "repeats=2", "--out", tmp_path / "k", check=0)
    assert "(all k tries of a task succeed; 1 task)" in run.stdout
    one = simworld("run", ledger_yaml, "-n", 1, "--out", tmp_path / "one", check=0)
    assert f"{tmp_path / 'one'}: 1 episode of " in one.stdout
    replayed = simworld("replay", tmp_path / "one", check=0)
    assert "replayed 1 episode (" in replayed.stdout and " events): all match" in replayed.stdout
    score = simworld("score", tmp_path / "one", check=0)
    assert f"{tmp_path / 'one'}: scored 1 episode with " in score.stdout
    assert "pass^k (all k tries of a task succeed; 1 task): pass^1 1.000" in score.stdout


def test_score_with_scorer_points_to_the_file_it_wrote(ledger_yaml, tmp_path, monkeypatch):
    """`simworld score --scorer` writes scores-NAMES.jsonl only: neither its --help nor the note on
    columns left out for want of width may send the user to scores/summary.json."""
    import io

    from rich.console import Console

    import simworld.commands.score as score_command
    from simworld.cli import main

    help_text = simworld("score", "--help", check=0).stdout
    assert "scores-NAMES.jsonl  with --scorer" in help_text and "instead of the two files above" in help_text
    simworld("run", ledger_yaml, "-n", 2, "--out", tmp_path / "r", check=0)
    buf = io.StringIO()
    monkeypatch.setattr(score_command, "output_console", lambda summary: Console(width=70, file=buf))
    main(["score", str(tmp_path / "r"), "--scorer", "state_match", "--scorer", "tool_validity",
          "--scorer", "heuristics"])
    names = sorted(p.name for p in (tmp_path / "r" / "scores").iterdir())
    assert names == ["scores-state_match+tool_validity+heuristics.jsonl"]
    printed = lambda: " ".join(buf.getvalue().split())  # noqa: E731  (the note wraps at the width)
    assert "not shown for want of width: " in printed()
    assert "(see scores/scores-state_match+tool_validity+heuristics.jsonl)" in printed()
    buf.seek(0)
    buf.truncate()
    main(["score", str(tmp_path / "r")])
    assert "(see scores/summary.json)" in printed()
