"""`simworld run` with LLM roles set from the command line, against the scripted server: a batch
with injected faults where every episode is recorded, resumed until all complete; keys never leak."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

import runner_plugin
from llm_server import ScriptedServer, calls, ledger_policy, text
from simworld.replay import replay_run
from simworld.runio import iter_records

SECRET = "sk-simworld-CLI-9d8c7b6a5f4e3d2c1b0a"


def _sets(base_url: str) -> list[str]:
    """Both ledger roles played by the test model."""
    return [f"roles.{role}.agent.{key}={value}" for role in ("clerk", "user")
            for key, value in (("type", "llm"), ("model", "openai/test-model"), ("api_base", base_url),
                               ("retry_backoff", 0.01), ("timeout", 0.5))]


def simworld_run(scenario: Path, out: Path, base_url: str, *extra: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "simworld", "run", str(scenario), "--out", str(out), "-q",
            *[a for s in _sets(base_url) for a in ("--set", s)], *extra]
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
        replayed_with_failures = [res.ok for res in replay_run(out)]
        server.fault_rate = 0.0  # the provider recovers; the same command resumes the run
        before = len(server.requests)
        second = simworld_run(scenario, out, server.base_url, "-n", str(n), "--concurrency", "32",
                              "--max-retries", "1")
    finally:
        server.stop()
    assert first.returncode == 1, first.stderr  # episodes to retry: a script's `run && export` stops here
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
    assert len(replayed_with_failures) == n and all(replayed_with_failures)  # failed episodes replay too
    assert all(res.ok for res in replay_run(out))
    # Only the failed episodes were run again: 2 customer + 2 clerk calls each.
    assert len(server.requests) - before == 4 * len(failed)

    for path in [p for p in out.rglob("*") if p.is_file()]:
        assert SECRET.encode() not in path.read_bytes(), path
    for stream in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert SECRET not in stream
    assert server.headers and all(h.get("Authorization") == "Bearer " + SECRET for h in server.headers)


def test_cli_run_is_byte_identical_to_an_in_process_run_timings_aside(tmp_path):
    """The same seed gives the same trajectories, in a `simworld run` subprocess one episode at a
    time and in this process with every episode in flight at once."""
    import asyncio

    from simworld.episode import episode_specs, run_episode
    from simworld.runner import resolve_scenario
    from simworld.types import strip_timings

    scenario = runner_plugin.write_scenario(tmp_path / "ledger.yaml")
    with ScriptedServer(ledger_policy) as server:
        proc = simworld_run(scenario, tmp_path / "a", server.base_url, "-n", "12", "--concurrency", "1")
        assert proc.returncode == 0, proc.stderr
        sc = resolve_scenario(scenario, _sets(server.base_url))

        async def all_at_once():
            return await asyncio.gather(*(run_episode(sc, s) for s in episode_specs(sc, 12)))

        in_process = asyncio.run(all_at_once())

    def canon(record: dict) -> bytes:
        return orjson.dumps(strip_timings(record), option=orjson.OPT_SORT_KEYS)

    cli = sorted(iter_records(tmp_path / "a"), key=lambda r: r["episode_id"])
    mine = sorted((t.model_dump(mode="json") for t in in_process), key=lambda r: r["episode_id"])
    assert [canon(r) for r in cli] == [canon(r) for r in mine]


def test_issue_command_on_the_retail_scenario(tmp_path):
    """The command of the README/issue: swap the retail support oracle for a model by --set."""
    def support(endpoint, body):  # asks once, then hands the customer to a human
        if sum(m["role"] == "user" for m in body["messages"]) < 2:
            return text("Happy to help. What is your e-mail address?")
        return calls(("transfer_to_human_agents", {"summary": "customer needs help with an order"}))

    out = tmp_path / "llm"
    root = Path(__file__).resolve().parent.parent
    with ScriptedServer(support) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "simworld", "run", "scenarios/retail/cancel_pending_order.yaml", "--episodes", "20",
             "--out", str(out), "--set", "roles.support.agent.type=llm",
             "--set", "roles.support.agent.model=openai/my-model",
             "--set", f"roles.support.agent.api_base={server.base_url}", "--concurrency", "32"],
            capture_output=True, text=True, cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = list(iter_records(out))
    assert len(records) == 20
    for r in records:
        assert r["outcome"]["termination"] == "transfer" and r["outcome"]["state_match"] is False
        assert r["provenance"]["models"]["support"]["calls"] == 2
        assert r["agents"]["support"]["model"] == "openai/my-model"
    assert len(server.requests) == 40 and all(req["model"] == "my-model" for req in server.requests)
    assert all(res.ok for res in replay_run(out))
