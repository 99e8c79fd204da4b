"""The LLM agent end to end through litellm against the scripted OpenAI-compatible server.

Covers both modes (native tools, raw Llama 3 completion), the user simulator, parallel tool calls,
malformed model output as counted invalid moves the model sees, the stop guard, parameter
validation, provenance and determinism.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
from typing import Any

import orjson
import pytest

import ledger_world
from llm_server import (STOP, Reply, ScriptedServer, ToolCallReply, calls, chat_payload, empty, ledger_policy, raw,
                        text)
from simworld.agents.llm import LLMAgent, LLMParams
from simworld.agents.llm.prompts import OPENING, USER_SIMULATOR
from simworld.episode import Episode, episode_specs, run_episode
from simworld.errors import ScenarioError
from simworld.llama3.format import render_messages
from simworld.scenario import scenario_from_data
from simworld.types import Trajectory, strip_timings


def llm(server: ScriptedServer, **extra: Any) -> dict[str, Any]:
    return {"type": "llm", "model": "openai/test-model", "api_base": server.base_url, "retry_backoff": 0.01,
            "timeout": 5.0, **extra}


def ledger(clerk: dict[str, Any] | None = None, user: dict[str, Any] | None = None, **top: Any):
    data = ledger_world.scenario_data(**top)
    if clerk is not None:
        data["roles"]["clerk"]["agent"] = clerk
    if user is not None:
        data["roles"]["user"]["agent"] = user
    return scenario_from_data(data)


def run_all(sc, n: int = 1, **kw: Any) -> list[Trajectory]:
    async def main() -> list[Trajectory]:
        return list(await asyncio.gather(*(run_episode(sc, spec) for spec in episode_specs(sc, n, **kw))))

    return asyncio.run(main())


def clerk_requests(server: ScriptedServer) -> list[dict[str, Any]]:
    return [r for r in server.requests if r.get("tools")]


# -- tools mode


@pytest.mark.parametrize("client", ["litellm", "openai"])
def test_tools_mode_episode_succeeds_with_provenance(client):
    with ScriptedServer(ledger_policy) as server:
        sc = ledger(clerk=llm(server, client=client))
        (t,) = run_all(sc)
    assert t.outcome.success, t.outcome
    assert t.outcome.termination == "user_stop"
    assert [(e.speaker, e.role) for e in t.events] == [("user", "user"), ("clerk", "assistant"), ("clerk", "tool"),
                                                       ("clerk", "assistant"), ("user", "user")]
    prov = t.provenance.models["clerk"]
    assert prov["model"] == "openai/test-model" and prov["mode"] == "tools" and prov["client"] == client
    assert prov["calls"] == 2 and prov["retries"] == 0 and len(prov["latencies_s"]) == 2
    assert prov["usage"]["total_tokens"] == prov["usage"]["prompt_tokens"] + prov["usage"]["completion_tokens"] > 0
    assert prov["response_models"] == ["test-model"]
    assert prov["provider_params"]["temperature"] == 0.0 and isinstance(prov["provider_params"]["seed"], int)
    assert "cost_usd" in prov
    assert t.provenance.agent_ids["clerk"].startswith("llm(")


def test_request_carries_tools_and_openai_shaped_history():
    with ScriptedServer(ledger_policy) as server:
        sc = ledger(clerk=llm(server, temperature=0.3, max_tokens=77, seed=5))
        run_all(sc)
    first, second = clerk_requests(server)
    assert first["model"] == "test-model" and first["temperature"] == 0.3 and first["max_tokens"] == 77
    assert first["seed"] == 5
    assert [t["function"]["name"] for t in first["tools"]] == ["get_balance", "deposit", "hang_up"]
    assert first["tools"][1]["function"]["parameters"]["required"] == ["account", "amount"]
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert first["messages"][0]["content"] == "You are a bank clerk."
    call_msg, result = second["messages"][2], second["messages"][3]
    assert call_msg["role"] == "assistant"
    (call,) = call_msg["tool_calls"]
    assert call["type"] == "function" and isinstance(call["function"]["arguments"], str)
    assert json.loads(call["function"]["arguments"])["amount"] == 5
    assert result["role"] == "tool" and result["tool_call_id"] == call["id"]
    assert json.loads(result["content"])["balance"] >= 5


def test_parallel_tool_calls_are_kept():
    def policy(endpoint, body):
        last = body["messages"][-1]
        if last["role"] == "tool":
            return text("Both done.")
        return calls(("get_balance", {"account": 1}), ("get_balance", {"account": 2}))

    with ScriptedServer(policy) as server:
        sc = ledger(clerk=llm(server))
        (t,) = run_all(sc)
    assistant = [e for e in t.events if e.speaker == "clerk" and e.role == "assistant"]
    assert [c.arguments["account"] for c in assistant[0].tool_calls] == [1, 2]
    results = [e for e in t.events if e.role == "tool"]
    assert [r.tool_call_id for r in results] == [c.id for c in assistant[0].tool_calls]
    # The model got both results back, paired with its two calls.
    second = clerk_requests(server)[1]["messages"]
    assert [m["role"] for m in second[2:5]] == ["assistant", "tool", "tool"]
    assert len(second[2]["tool_calls"]) == 2


MALFORMED = {
    "invalid JSON arguments": (calls(ToolCallReply("deposit", raw_arguments='{"account": 3, "amount": ')),
                               "not valid JSON"),
    "unknown tool": (calls(("deposit_money", {"account": 3, "amount": 5})), "unknown tool 'deposit_money'"),
    "schema violation": (calls(("deposit", {"account": "three", "amount": -1})), "violate its schema"),
    "missing argument": (calls(("deposit", {"account": 3})), "'amount' is a required property"),
    "arguments not an object": (calls(ToolCallReply("deposit", raw_arguments="[1, 2]")), "must be a JSON object"),
    "empty reply": (empty(), "empty reply"),
}


@pytest.mark.parametrize("client", ["litellm", "openai"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_output_is_a_counted_invalid_move_the_model_sees(case, client):
    bad, expected = MALFORMED[case]

    def policy(endpoint, body):
        if any("Error: invalid action" in (m.get("content") or "") for m in body["messages"]):
            return ledger_policy(endpoint, body)  # recovers once it has seen the error
        if body.get("tools"):
            return bad
        return ledger_policy(endpoint, body)

    with ScriptedServer(policy) as server:
        sc = ledger(clerk=llm(server, client=client))
        (t,) = run_all(sc)
    assert t.outcome.invalid_moves == 1, t.outcome
    assert t.outcome.success, "the model recovers after seeing the error"
    invalid = [e for e in t.events if e.invalid]
    assert len(invalid) == 1 and expected in invalid[0].invalid
    assert not invalid[0].tool_calls
    assert t.provenance.models["clerk"]["invalid_replies"] == 1
    # The next request shows the model its bad turn and the error notice.
    retry = clerk_requests(server)[1]["messages"]
    assert retry[2]["role"] == "assistant" and "tool_calls" not in retry[2]
    assert retry[3]["role"] == "user" and retry[3]["content"].startswith("Error: invalid action:")
    assert expected in retry[3]["content"]


def _tool_call(name: Any, arguments: str = '{"account": 3, "amount": 5}') -> dict[str, Any]:
    return {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}


ODD_SHAPES = {
    "content a number": ({"role": "assistant", "content": 42}, "content is a int, not text"),
    "content an object": ({"role": "assistant", "content": {"text": "hi"}}, "content is a dict, not text"),
    "content parts of another type": ({"role": "assistant", "content": [{"type": "image_url", "image_url": {}}]},
                                      "content is a list, not text"),
    "tool-call name a number": ({"role": "assistant", "content": None, "tool_calls": [_tool_call(12345)]},
                                "function name of type int, not a string"),
}


@pytest.mark.parametrize("case", sorted(ODD_SHAPES))
def test_odd_reply_shapes_are_invalid_moves_never_crashes(case):
    """client openai: the SDK does not check types; such a reply is the model's invalid move."""
    message, expected = ODD_SHAPES[case]

    def policy(endpoint, body):
        if body.get("tools") and not any("Error: invalid action" in str(m.get("content")) for m in body["messages"]):
            return raw(chat_payload(message))
        return ledger_policy(endpoint, body)

    with ScriptedServer(policy) as server:
        (t,) = run_all(ledger(clerk=llm(server, client="openai")))
    assert t.outcome.error is None and t.outcome.success, t.outcome
    (bad,) = [e for e in t.events if e.invalid]
    assert expected in bad.invalid and t.outcome.invalid_moves == 1


def test_content_as_a_list_of_text_parts_is_joined():
    parts = [{"type": "text", "text": "How can "}, {"type": "text", "text": "I help?"}]

    def policy(endpoint, body):
        if body.get("tools") and len(body["messages"]) == 2:
            return raw(chat_payload({"role": "assistant", "content": parts}))
        return ledger_policy(endpoint, body)

    with ScriptedServer(policy) as server:
        (t,) = run_all(ledger(clerk=llm(server, client="openai")))
    said = [e for e in t.events if e.speaker == "clerk" and not e.tool_calls]
    assert said[0].content == "How can I help?" and not said[0].invalid
    assert t.outcome.invalid_moves == 0 and t.outcome.error is None


@pytest.mark.parametrize("value,expected", [(42, "text is a int, not a string"),
                                            (["a"], "text is a list, not a string")])
def test_raw_completion_text_that_is_not_a_string_is_an_invalid_move(value, expected):
    def policy(endpoint, body):
        if endpoint == "completions" and "Error: invalid action" not in body["prompt"]:
            return raw({"id": "c", "object": "text_completion", "model": "m",
                        "choices": [{"index": 0, "text": value, "finish_reason": "stop"}]})
        return ledger_policy(endpoint, body)

    with ScriptedServer(policy) as server:
        (t,) = run_all(ledger(clerk=llm(server, mode="llama3", client="openai")))
    assert t.outcome.success and t.outcome.invalid_moves == 1, t.outcome
    (bad,) = [e for e in t.events if e.invalid]
    assert expected in bad.invalid


# -- llama3 mode


@pytest.mark.parametrize("client", ["litellm", "openai"])
def test_llama3_mode_renders_simworld_prompt_and_parses_reply(client):
    with ScriptedServer(ledger_policy) as server:
        sc = ledger(clerk=llm(server, mode="llama3", client=client))
        (t,) = run_all(sc)
    assert t.outcome.success, t.outcome
    prompts = [r for r in server.requests if "prompt" in r]
    assert len(prompts) == 2
    ep = Episode(sc, episode_specs(sc, 1)[0], make_agents=False)
    ep.events = [e for e in t.events[:1]]
    expected = render_messages(ep.perspective("clerk"), ep.tools_of("clerk"), sc.today, add_generation_prompt=True)
    assert prompts[0]["prompt"] == expected
    assert prompts[0]["prompt"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "Environment: ipython" in prompts[0]["prompt"] and '"name": "deposit"' in prompts[0]["prompt"]
    assert "<|eot_id|>" in prompts[0]["stop"] and "<|eom_id|>" in prompts[0]["stop"]
    assert "<|start_header_id|>ipython<|end_header_id|>" in prompts[1]["prompt"]
    call = [e for e in t.events if e.tool_calls][0].tool_calls[0]
    assert call.name == "deposit" and call.arguments["amount"] == 5


@pytest.mark.parametrize("reply,expected", [
    ('{"name": "deposit", "parameters": {"account": 3, "amount": ', "not valid JSON"),
    ('{"name": "withdraw", "parameters": {"account": 3}}', "unknown tool 'withdraw'"),
    ('{"name": "deposit", "parameters": {"account": 3}}', "'amount' is a required property"),
    ("", "empty reply"),
])
def test_llama3_mode_malformed_reply_is_invalid(reply, expected):
    def policy(endpoint, body):
        if endpoint == "completions" and "Error: invalid action" not in body["prompt"]:
            return text(reply)
        return ledger_policy(endpoint, body)

    with ScriptedServer(policy) as server:
        sc = ledger(clerk=llm(server, mode="llama3"))
        (t,) = run_all(sc)
    assert t.outcome.invalid_moves == 1 and t.outcome.success, t.outcome
    (bad,) = [e for e in t.events if e.invalid]
    assert expected in bad.invalid and bad.content == reply


# -- user simulator


def test_llm_user_simulator_plays_the_brief_and_stops():
    with ScriptedServer(ledger_policy) as server:
        sc = ledger(clerk=llm(server), user=llm(server, temperature=1.0))
        (t,) = run_all(sc)
    assert t.outcome.success and t.outcome.termination == "user_stop", t.outcome
    user_requests = [r for r in server.requests if not r.get("tools")]
    first = user_requests[0]["messages"]
    system = first[0]["content"]
    assert "You want to deposit 5 into" in system  # the task's private brief
    assert USER_SIMULATOR in system and STOP in system
    assert first[1:] == [{"role": "user", "content": OPENING}]
    # The user's perspective: its own turns are 'assistant', the clerk's are 'user'.
    last = user_requests[-1]["messages"]
    assert [m["role"] for m in last] == ["system", "assistant", "user"]
    assert t.events[-1].speaker == "user" and STOP in t.events[-1].content
    assert t.provenance.models["user"]["instructions"] == USER_SIMULATOR


def test_user_stop_never_cuts_off_a_pending_tool_call():
    """The customer says STOP at every chance; the episode still ends only after the clerk's
    tool call got its result and the clerk handed over with text."""

    def policy(endpoint, body):
        if not body.get("tools"):
            said = [m for m in body["messages"] if m["role"] == "assistant"]
            return text("deposit 5 into account 7 " + STOP) if said else text("Deposit 5 into account 7.")
        return ledger_policy(endpoint, body)

    with ScriptedServer(policy) as server:
        sc = ledger(clerk=llm(server), user=llm(server))
        spec = episode_specs(sc, 1)[0]
        ep = Episode(sc, spec)

        async def drive() -> None:
            while not ep.done:
                role = ep.current
                if ep.events and ep.events[-1].tool_calls:
                    pytest.fail("a tool call was left without its result")
                pending = ep.events and ep.events[-1].role == "tool"
                if pending:
                    assert role == "clerk", "only the caller may act after a tool result"
                ep.step(await ep.agents[role].act(ep.view(role)))

        asyncio.run(drive())
    assert ep.termination == "user_stop"
    calls_made = [c.id for e in ep.events for c in e.tool_calls]
    results = [e.tool_call_id for e in ep.events if e.role == "tool"]
    assert calls_made and calls_made == results
    stop_at = next(i for i, e in enumerate(ep.events) if e.speaker == "user" and STOP in e.content)
    before = ep.events[stop_at - 1]
    assert before.speaker == "clerk" and before.role == "assistant" and not before.tool_calls


def test_stop_marker_from_the_assistant_side_does_not_end_the_episode():
    def policy(endpoint, body):
        if body.get("tools") and body["messages"][-1]["role"] != "tool":
            nums = [int(x) for x in __import__("re").findall(r"\d+", body["messages"][-1]["content"])]
            return Reply(text=STOP, tool_calls=(ToolCallReply("deposit", {"account": nums[-1], "amount": nums[0]}),))
        return ledger_policy(endpoint, body)

    with ScriptedServer(policy) as server:
        (t,) = run_all(ledger(clerk=llm(server)))
    assert t.outcome.termination == "user_stop" and t.outcome.success
    assert t.events[1].content == STOP and t.events[2].role == "tool"


# -- params, determinism, lazy import


@pytest.mark.parametrize("agent,problem", [
    ({"type": "llm"}, "roles.clerk.agent.model"),
    ({"type": "llm", "model": "openai/x", "api_key": "sk-abc"}, "unknown field 'api_key'"),
    ({"type": "llm", "model": "openai/x", "provider_params": {"api_key": "sk-abc"}}, "secrets go in environment"),
    ({"type": "llm", "model": "openai/x", "provider_params": {"temperature": 1}}, "set it as the agent parameter"),
    ({"type": "llm", "model": "openai/x", "api_base": "http://u:pw@host/v1"}, "must not contain credentials"),
    ({"type": "llm", "model": "openai/x", "api_key_env": "sk-abc-123"}, "NAME of an environment variable"),
    ({"type": "llm", "model": "openai/x", "mode": "chat"}, "roles.clerk.agent.mode"),
    ({"type": "llm", "model": "openai/x", "temprature": 0.5}, "did you mean 'temperature'"),
    ({"type": "llm", "model": "anthropic/claude-x", "client": "openai"}, "needs client litellm"),
    # secrets at any depth of provider_params, header names above all
    ({"type": "llm", "model": "openai/x", "provider_params": {"extra_headers": {"Authorization": "Bearer sk-abc1"}}},
     "provider_params.extra_headers.Authorization: secrets go in environment"),
    ({"type": "llm", "model": "openai/x", "provider_params": {"headers": {"X-Api-Key": "sk-abc1"}}},
     "provider_params.headers.X-Api-Key: secrets go in environment"),
    ({"type": "llm", "model": "openai/x", "provider_params": {"default_headers": {"X-Auth": "sk-abc1"}}},
     "provider_params.default_headers.X-Auth: secrets go in environment"),
    ({"type": "llm", "model": "openai/x", "provider_params": {"extra_body": {"api_key": "sk-abc1"}}},
     "provider_params.extra_body.api_key: secrets go in environment"),
    ({"type": "llm", "model": "openai/x", "provider_params": {"extra_body": {"auth": [{"client_secret": "sk-abc1"}]}}},
     "provider_params.extra_body.auth: secrets go in environment"),
    ({"type": "llm", "model": "openai/x", "provider_params": {"extra_body": {"opts": [{"access_token": "sk-abc1"}]}}},
     "provider_params.extra_body.opts[0].access_token: secrets go in environment"),
    ({"type": "llm", "model": "openai/x", "provider_params": {"metadata": {"note": "Bearer sk-abc123456789"}}},
     "provider_params.metadata.note: the value looks like an API key"),
    # secrets in the api_base query string or fragment
    ({"type": "llm", "model": "openai/x", "api_base": "http://h/v1?api-key=sk-abc123"}, "parameter 'api-key'"),
    ({"type": "llm", "model": "openai/x", "api_base": "http://h/v1?x=1&sig=sk-abc123"}, "parameter 'sig'"),
    ({"type": "llm", "model": "openai/x", "api_base": "http://h/v1#access_token=sk-abc123"},
     "parameter 'access_token'"),
    ({"type": "llm", "model": "openai/x", "api_base": "http://h/v1/sk-abc1234567890/"}, "looks like an API key"),
])
def test_bad_params_are_scenario_errors(agent, problem):
    with pytest.raises(ScenarioError) as err:
        ledger(clerk=agent)
    text_ = "\n".join(err.value.problems)
    assert problem in text_
    assert "sk-abc" not in text_ and "pw@" not in text_


def test_ordinary_nested_provider_params_are_accepted():
    """Names like max_tokens or stop_token_ids and harmless headers are not secrets."""
    params = {"extra_body": {"stop_token_ids": [1, 2], "skip_special_tokens": False, "max_completion_tokens": 9},
              "extra_headers": {"X-Request-Id": "abc", "OpenAI-Organization": "org"}, "top_k": 40}
    sc = ledger(clerk={"type": "llm", "model": "openai/x", "provider_params": params,
                       "api_base": "http://h/v1?model=x&api-version=2024-01-01"})
    assert sc.roles["clerk"].agent.provider_params == params


def test_a_json_schema_with_fields_named_like_secrets_is_accepted():
    """guided_json / response_format name the reply's fields: a field "token" is not a secret, but a
    secret-looking value inside the schema still is."""
    schema = {"type": "object", "properties": {"token": {"type": "string"}, "api_key": {"type": "string"},
                                               "password": {"type": "object", "properties": {"secret": {"type": "string"}}}},
              "required": ["token", "api_key"], "$defs": {"session_token": {"type": "string"}}}
    params = {"extra_body": {"guided_json": schema},
              "response_format": {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}}
    sc = ledger(clerk={"type": "llm", "model": "openai/x", "provider_params": params})
    assert sc.roles["clerk"].agent.provider_params == params
    leaky = {"extra_body": {"guided_json": {"properties": {"token": {"type": "string", "default": "sk-abc123456789"}}}}}
    with pytest.raises(ScenarioError) as err:
        ledger(clerk={"type": "llm", "model": "openai/x", "provider_params": leaky})
    assert "provider_params.extra_body.guided_json.properties.token.default: the value looks like an API key" in str(
        err.value.problems) and "sk-abc" not in str(err.value.problems)
    with pytest.raises(ScenarioError):  # outside a schema's field names, the name still counts
        ledger(clerk={"type": "llm", "model": "openai/x", "provider_params": {"extra_body": {"properties": {"x": 1}, "token": "t"}}})


def test_same_seed_same_trajectory_bytes_timings_aside():
    with ScriptedServer(ledger_policy) as server:
        sc = ledger(clerk=llm(server), user=llm(server, temperature=0.7))
        a = run_all(sc, 4)
        b = run_all(sc, 4)
    for x, y in zip(a, b):
        assert x.provenance.models["clerk"]["latencies_s"]  # recorded, and stripped for comparison
        assert orjson.dumps(strip_timings(x.model_dump(mode="json"))) == orjson.dumps(
            strip_timings(y.model_dump(mode="json")))
    assert len({t.provenance.models["user"]["provider_params"]["seed"] for t in a}) == 4  # per-episode seeds


def test_missing_api_key_env_fails_the_episode_with_a_reason(monkeypatch):
    monkeypatch.delenv("SIMWORLD_TEST_NO_SUCH_KEY", raising=False)
    with ScriptedServer(ledger_policy) as server:
        (t,) = run_all(ledger(clerk=llm(server, api_key_env="SIMWORLD_TEST_NO_SUCH_KEY")))
    assert t.outcome.termination == "error" and not t.outcome.success
    assert "SIMWORLD_TEST_NO_SUCH_KEY" in t.outcome.error
    assert not server.requests


def test_api_key_env_is_sent_as_bearer(monkeypatch):
    monkeypatch.setenv("SIMWORLD_TEST_KEY", "sk-simworld-test-abcdef123456")
    with ScriptedServer(ledger_policy) as server:
        (t,) = run_all(ledger(clerk=llm(server, api_key_env="SIMWORLD_TEST_KEY")))
    assert t.outcome.success
    assert server.headers[0]["Authorization"] == "Bearer sk-simworld-test-abcdef123456"
    assert "sk-simworld-test" not in t.to_jsonl().decode()


def test_prompt_messages_do_not_mutate_the_perspective():
    sc = ledger(clerk={"type": "llm", "model": "openai/x"}, user={"type": "llm", "model": "openai/x"})
    ep = Episode(sc, episode_specs(sc, 1)[0])
    agent = ep.agents["user"]
    assert isinstance(agent, LLMAgent) and isinstance(agent.params, LLMParams)
    before = copy.deepcopy(ep.perspective("user"))
    msgs = agent.prompt_messages(ep.view("user"))
    assert ep.perspective("user") == before
    assert msgs[0].content.endswith(USER_SIMULATOR) and msgs[-1].content == OPENING
    clerk = ep.agents["clerk"].prompt_messages(ep.view("clerk"))
    assert clerk[0].content == "You are a bank clerk."  # no simulator rules for the assistant side
    shown = LLMAgent(LLMParams(type="llm", model="openai/x", show_private=True), "user",
                     __import__("numpy").random.default_rng(0)).prompt_messages(ep.view("user"))
    assert '"account"' in shown[0].content and "What you know" in shown[0].content


def test_litellm_is_not_imported_by_help_or_scripted_runs():
    code = (
        "import sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from click.testing import CliRunner\n"
        "from simworld.cli import cli\n"
        "r = CliRunner().invoke(cli, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'litellm' not in sys.modules, 'help imported litellm'\n"
        "import ledger_world\n"
        "from simworld import registry\n"
        "from simworld.episode import episode_specs, run_episode_sync\n"
        "from simworld.scenario import scenario_from_data\n"
        "registry.load_builtins()\n"
        "assert 'llm' in registry.AGENTS\n"
        "sc = scenario_from_data(ledger_world.scenario_data())\n"
        "t = run_episode_sync(sc, episode_specs(sc, 1)[0])\n"
        "assert t.outcome.success\n"
        "bad = [m for m in ('litellm', 'openai', 'httpx', 'aiohttp') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(__import__("pathlib").Path(__file__).parent.parent))
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_openai_client_never_imports_litellm():
    code = (
        "import asyncio, sys\n"
        "sys.path.insert(0, 'tests')\n"
        "import ledger_world\n"
        "from simworld.episode import episode_specs, run_episode\n"
        "from simworld.scenario import scenario_from_data\n"
        "data = ledger_world.scenario_data()\n"
        "data['roles']['clerk']['agent'] = {'type': 'llm', 'model': 'openai/test-model', 'client': 'openai',\n"
        "                                   'api_base': sys.argv[1]}\n"
        "sc = scenario_from_data(data)\n"
        "t = asyncio.run(run_episode(sc, episode_specs(sc, 1)[0]))\n"
        "assert t.outcome.success, t.outcome\n"
        "assert 'litellm' not in sys.modules\n"
        "print('ok')\n"
    )
    with ScriptedServer(ledger_policy) as server:
        out = subprocess.run([sys.executable, "-c", code, server.base_url], capture_output=True, text=True,
                             timeout=120, cwd=str(__import__("pathlib").Path(__file__).parent.parent))
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_client_auto_picks_the_sdk_only_for_self_hosted_openai_compatible_servers():
    from simworld.agents.llm.agent import LLMParams

    def resolved(**kw):
        return LLMParams(type="llm", **kw).resolved_client

    assert resolved(model="openai/m", api_base="http://127.0.0.1:1/v1") == "openai"
    assert resolved(model="openai/m") == "litellm"  # OpenAI's own API: litellm (cost tracking)
    assert resolved(model="anthropic/claude-x", api_base="http://127.0.0.1:1") == "litellm"
    assert resolved(model="openai/m", api_base="http://127.0.0.1:1/v1", client="litellm") == "litellm"
