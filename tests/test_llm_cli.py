"""`simworld run` with LLM roles set from the command line, against the scripted server: a batch
with injected faults where every episode is recorded, resumed until all complete; keys never leak."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

import runner_plugin
from llm_server import ScriptedServer, ledger_policy
from simworld.runio import iter_records

SECRET = "sk-simworld-CLI-9d8c7b6a5f4e3d2c1b0a"


def simworld_run(scenario: Path, out: Path, base_url: str, *extra: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "simworld", "run", str(scenario), "--out", str(out), "-q",
            "--set", "roles.clerk.agent.type=llm",
            "--set", "roles.clerk.agent.model=openai/test-model",
            "--set", f"roles.clerk.agent.api_base={base_url}",
            "--set", "roles.clerk.agent.retry_backoff=0.01",
            "--set", "roles.clerk.agent.timeout=0.5",
            "--set", "roles.user.agent.type=llm",
            "--set", "roles.user.agent.model=openai/test-model",
            "--set", f"roles.user.agent.api_base={base_url}",
            "--set", "roles.user.agent.retry_backoff=0.01",
            "--set", "roles.user.agent.timeout=0.5",
            *extra]
    env = runner_plugin.subprocess_env(OPENAI_API_KEY=SECRET)
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)


def test_cli_batch_with_faults_records_every_episode_and_resume_completes_them(tmp_path):
    scenario = runner_plugin.write_scenario(tmp_path / "ledger.yaml")
    out = tmp_path / "run"
    n = 60
    server = ScriptedServer(ledger_policy, fault_rate=0.2, seed=11, hang_s=5).start()
    try:
        first = simworld_run(scenario, out, server.base_url, "-n", str(n), "--concurrency", "32",
                             "--max-retries", "1")
        records = {r["episode_id"]: r for r in iter_records(out)}
        server.fault_rate = 0.0  # the provider recovers; the same command resumes the run
        before = len(server.requests)
        second = simworld_run(scenario, out, server.base_url, "-n", str(n), "--concurrency", "32",
                              "--max-retries", "1")
    finally:
        server.stop()
    assert first.returncode == 0, first.stderr
    assert len(records) == n  # every episode accounted for
    failed = [r for r in records.values() if r["outcome"]["termination"] == "error"]
    done = [r for r in records.values() if r["outcome"]["termination"] == "user_stop"]
    assert failed and done and len(failed) + len(done) == n
    for r in failed:
        assert "still failing after 2 attempts" in r["outcome"]["error"]
    for r in done:
        assert r["outcome"]["success"]
        assert r["provenance"]["models"]["clerk"]["provider_params"]["max_retries"] == 1  # from --max-retries
    assert f"{len(failed)} episodes failed" in first.stdout

    assert second.returncode == 0, second.stderr
    assert f"{len(failed)} failed episodes retried" in second.stdout
    final = {r["episode_id"]: r for r in iter_records(out)}
    assert len(final) == n and all(r["outcome"]["success"] for r in final.values())
    # Only the failed episodes were run again: 2 customer + 2 clerk calls each.
    assert len(server.requests) - before == 4 * len(failed)

    for path in [p for p in out.rglob("*") if p.is_file()]:
        assert SECRET.encode() not in path.read_bytes(), path
    for stream in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert SECRET not in stream
    assert server.headers and all(h.get("Authorization") == "Bearer " + SECRET for h in server.headers)


def test_cli_runs_are_byte_identical_timings_aside(tmp_path):
    scenario = runner_plugin.write_scenario(tmp_path / "ledger.yaml")
    from simworld.types import strip_timings

    with ScriptedServer(ledger_policy) as server:
        for name, conc in (("a", "1"), ("b", "16")):
            proc = simworld_run(scenario, tmp_path / name, server.base_url, "-n", "12", "--concurrency", conc)
            assert proc.returncode == 0, proc.stderr

    def load(name: str) -> list[bytes]:
        recs = sorted(iter_records(tmp_path / name), key=lambda r: r["episode_id"])
        return [orjson.dumps(strip_timings(r), option=orjson.OPT_SORT_KEYS) for r in recs]

    assert load("a") == load("b")
