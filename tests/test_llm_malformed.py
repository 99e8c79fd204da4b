"""A 200 response whose body is not a completion, served by a real HTTP server on 127.0.0.1: reported
as "returned a malformed response: ..." in one redacted line, through litellm as through the openai
SDK, and not retried (the server's request count shows it), while a real 500 still is."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import ledger_world
from llm_server import Reply, ScriptedServer, chat_payload, ledger_policy, raw
from simworld.episode import episode_specs, run_episode
from simworld.scenario import scenario_from_data

KEY = "Zq8-secret7f6e5d4c3b2a1"  # no key pattern matches it: only its being an env value gives it away

# Bodies of a 200 that no client can read as a completion, and what the report must say about each.
CHAT = {
    "an HTML page": (raw(body=f"<html><body>proxy login for Bearer {KEY}</body></html>".encode(),
                         content_type="text/html"), "its body is not JSON"),
    "an empty body": (raw(body=b""), "its body is empty"),
    "truncated JSON": (raw(body=b'{"choices": [{"message": {"role": "assist'), "its body is not JSON: '{\"choices"),
    "a JSON list": (raw([1, 2, 3]), "its body is a JSON list, not an object"),
    "JSON null": (raw(body=b"null"), "its body is a JSON null, not an object"),
    "JSON without choices": (raw({"object": "chat.completion", "model": "m"}), "choices"),
    "choices null": (raw({"object": "chat.completion", "choices": None}), "choices"),
    "a choice without a message": (raw({"object": "chat.completion", "choices": [{"index": 0}]}), "message"),
    "a message that is a string": (raw(chat_payload("hello")), ""),
}
TEXT = {
    "an HTML page": CHAT["an HTML page"],
    "a JSON list": (raw([1, 2]), "its body is a JSON list, not an object"),
    "a choice without text": (raw({"object": "text_completion", "choices": [{"index": 0}]}), "text"),
}


def clerk_scenario(server: ScriptedServer, client: str, **extra: Any):
    data = ledger_world.scenario_data()
    data["roles"]["clerk"]["agent"] = {"type": "llm", "model": "openai/test-model", "api_base": server.base_url,
                                       "client": client, "max_retries": 3, "retry_backoff": 0.01,
                                       "retry_backoff_max": 0.02, "timeout": 5.0, **extra}
    return scenario_from_data(data)


def run_one(sc):
    async def main():
        return await run_episode(sc, episode_specs(sc, 1)[0])

    return asyncio.run(main())


def serve_to_clerk(reply: Reply, endpoint: str):
    """`reply` to the clerk's requests (the scripted user is not a model: it sends none)."""
    return lambda e, body: reply if e == endpoint else ledger_policy(e, body)


def check_report(t, expected: str, server: ScriptedServer) -> str:
    error = t.outcome.error
    assert t.outcome.termination == "error" and t.outcome.invalid_moves == 0, t.outcome
    assert error.startswith("clerk: model openai/test-model returned a malformed response: "), error
    assert expected in error, error
    assert "\n" not in error and "Traceback" not in error and 'File "' not in error and len(error) <= 400
    assert "InternalServerError" not in error and "500" not in error  # not reported as a server error
    assert KEY not in t.to_jsonl().decode()
    assert not [e for e in t.events if e.invalid]  # the server's fault, never the model's move
    prov = t.provenance.models["clerk"]
    assert prov["failed_attempts"] == {"MalformedResponse": 1} and prov["retries"] == 0, prov
    assert len(server.requests) == 1, "a malformed 200 is not retried"
    return error


CASES = [("tools", case) for case in sorted(CHAT)] + [("llama3", case) for case in sorted(TEXT)]


@pytest.mark.parametrize("client", ["litellm", "openai"])
@pytest.mark.parametrize(("mode", "case"), CASES, ids=[f"{m}-{c}" for m, c in CASES])
def test_malformed_response_is_reported_once_as_malformed(monkeypatch, mode, case, client):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    reply, expected = (CHAT if mode == "tools" else TEXT)[case]
    with ScriptedServer(serve_to_clerk(reply, "chat" if mode == "tools" else "completions")) as server:
        t = run_one(clerk_scenario(server, client, mode=mode))
    assert any(h.get("Authorization") == "Bearer " + KEY for h in server.headers)  # the key was sent
    check_report(t, expected, server)


def test_the_body_is_quoted_redacted_where_the_client_keeps_it(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with ScriptedServer(serve_to_clerk(CHAT["an HTML page"][0], "chat")) as server:
        for client in ("litellm", "openai"):
            server.requests.clear()
            error = check_report(run_one(clerk_scenario(server, client)), "proxy login for Bearer ***", server)
            assert "<html>" in error


@pytest.mark.parametrize("client", ["litellm", "openai"])
def test_a_real_server_error_is_still_retried(client):
    """The same settings against an HTTP 500: max_retries + 1 requests, reported as a server error."""
    with ScriptedServer(serve_to_clerk(Reply(status=500, error_message="overloaded"), "chat")) as server:
        t = run_one(clerk_scenario(server, client))
    assert len(server.requests) == 4
    assert "still failing after 4 attempts" in t.outcome.error and "malformed" not in t.outcome.error
    assert t.provenance.models["clerk"]["retries"] == 3


@pytest.mark.parametrize("client", ["litellm", "openai"])
def test_a_malformed_response_after_good_ones_fails_that_call_only(client):
    """The first call is answered; the second gets a 200 without choices: one request for it."""
    def policy(endpoint, body):
        if endpoint == "chat" and any(m.get("role") == "tool" for m in body["messages"]):
            return raw({"object": "chat.completion"})
        return ledger_policy(endpoint, body)

    with ScriptedServer(policy) as server:
        t = run_one(clerk_scenario(server, client))
    assert len(server.requests) == 2 and t.provenance.models["clerk"]["calls"] == 1
    assert "returned a malformed response" in t.outcome.error
    assert [e.tool_calls[0].name for e in t.events if e.tool_calls] == ["deposit"]  # what happened is kept


@pytest.mark.parametrize("client", ["litellm", "openai"])
def test_empty_choices_stay_the_models_empty_reply(client):
    """`choices: []` is a well-formed completion in which the model said nothing: an invalid move."""
    def policy(endpoint, body):
        if body.get("tools") and not any("Error: invalid action" in str(m.get("content")) for m in body["messages"]):
            return raw({"object": "chat.completion", "model": "m", "choices": []})
        return ledger_policy(endpoint, body)

    with ScriptedServer(policy) as server:
        t = run_one(clerk_scenario(server, client))
    assert t.outcome.success and t.outcome.invalid_moves == 1, t.outcome
