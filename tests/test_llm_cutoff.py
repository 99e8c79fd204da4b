"""A reply the server stopped at `max_tokens` is an invalid move that says so, in either mode and
through either client: text cut off mid-sentence never reaches the other party or the export as a
finished turn, and a tool call cut off is explained by the limit, not only by its broken JSON.

A real server showed both: llama.cpp sends text cut short with ``finish_reason: length``, and a
tool call it cut short (forced by ``tool_choice``) with ``finish_reason: tool_calls`` and as many
completion tokens as the limit.
"""

from __future__ import annotations

from typing import Any

import pytest

import ledger_world
from llm_server import ScriptedServer, chat_payload, ledger_policy, raw
from simworld.scenario import scenario_from_data
from test_llm_agent import clerk_requests, run_all

LIMIT = 20
CUT = f"the reply was cut off at max_tokens ({LIMIT} tokens)"


def usage(completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": 50, "completion_tokens": completion_tokens, "total_tokens": 50 + completion_tokens}


def chat_reply(message: dict[str, Any], finish_reason: str, completion_tokens: int):
    return raw({**chat_payload(message, finish_reason=finish_reason), "usage": usage(completion_tokens)})


def text_reply(text: str, finish_reason: str, completion_tokens: int):
    return raw({"id": "cmpl-cut", "object": "text_completion", "created": 1700000000, "model": "test-model",
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
                "usage": usage(completion_tokens)})


def deposit_call(arguments: str) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "deposit", "arguments": arguments}}]}


CUT_REPLIES = {
    "chat text, finish_reason length": (
        "chat", chat_reply({"role": "assistant", "content": "Let me look into your account and"}, "length", LIMIT),
        None),
    "chat tool call cut short, finish_reason tool_calls, usage at the limit (llama.cpp)": (
        "chat", chat_reply(deposit_call('{"account": 3, "amo'), "tool_calls", LIMIT), "not valid JSON"),
    "raw completion text, finish_reason length": (
        "completions", text_reply("Sure, I will deposit the", "length", LIMIT), None),
    "raw completion tool call cut short": (
        "completions", text_reply('{"name": "deposit", "parameters": {"account": 3, "am', "length", LIMIT),
        "not valid JSON"),
}


def scenario(server: ScriptedServer, client: str, mode: str):
    data = ledger_world.scenario_data()
    data["roles"]["clerk"]["agent"] = {"type": "llm", "model": "openai/test-model", "api_base": server.base_url,
                                       "client": client, "mode": mode, "max_tokens": LIMIT, "retry_backoff": 0.01,
                                       "timeout": 5.0}
    return scenario_from_data(data)


def first_then_recover(endpoint: str, cut):
    """The clerk's first request gets the cut reply; once it has seen an error it answers well."""
    def policy(e, body):
        seen = body.get("prompt", "") + " ".join(m.get("content") or "" for m in body.get("messages", []))
        if e == endpoint and (body.get("tools") or e == "completions") and "Error: invalid action" not in seen:
            return cut
        return ledger_policy(e, body)
    return policy


@pytest.mark.parametrize("client", ["litellm", "openai"])
@pytest.mark.parametrize("case", sorted(CUT_REPLIES))
def test_a_reply_cut_off_at_max_tokens_is_an_invalid_move_that_names_the_limit(case, client):
    endpoint, cut, also = CUT_REPLIES[case]
    mode = "tools" if endpoint == "chat" else "llama3"
    with ScriptedServer(first_then_recover(endpoint, cut)) as server:
        (t,) = run_all(scenario(server, client, mode))
    assert t.outcome.termination != "error", t.outcome.error
    invalid = [e for e in t.events if e.invalid]
    assert len(invalid) == 1 and invalid[0].speaker == "clerk", [e.invalid for e in t.events]
    assert invalid[0].invalid.startswith(CUT), invalid[0].invalid
    if also:
        assert also in invalid[0].invalid  # the parse problem is still named after the limit
    assert not invalid[0].tool_calls
    assert t.outcome.invalid_moves == 1 and t.provenance.models["clerk"]["invalid_replies"] == 1
    assert t.outcome.success, "the model recovers after seeing the error"
    # The other party never heard the cut-off turn; the model is told why it did not count.
    user_heard = [e.content for e in t.events if e.speaker == "user"]
    assert not any("deposit the" in c or "account and" in c for c in user_heard)
    if mode == "tools":
        retry = clerk_requests(server)[1]["messages"]
        assert retry[3]["role"] == "user" and retry[3]["content"].startswith(f"Error: invalid action: {CUT}")
    else:
        prompts = [r["prompt"] for r in server.requests if "prompt" in r]
        assert f"Error: invalid action: {CUT}" in prompts[1]


@pytest.mark.parametrize("client", ["litellm", "openai"])
def test_complete_tool_calls_stand_whatever_the_finish_reason(client):
    """A call whose JSON is whole and valid is complete even when the server stopped at the limit."""
    whole = chat_reply(deposit_call('{"account": 18, "amount": 5}'), "length", LIMIT)

    def policy(e, body):
        done = any(m.get("role") == "tool" for m in body.get("messages", []))
        return whole if body.get("tools") and not done else ledger_policy(e, body)

    with ScriptedServer(policy) as server:
        (t,) = run_all(scenario(server, client, "tools"))
    assert t.outcome.invalid_moves == 0 and t.outcome.success, t.outcome
    assert [c.name for e in t.events for c in e.tool_calls][:1] == ["deposit"]


def test_text_under_the_limit_is_a_finished_turn():
    short = chat_reply({"role": "assistant", "content": "Which account, please?"}, "stop", LIMIT - 1)
    with ScriptedServer(first_then_recover("chat", short)) as server:
        (t,) = run_all(scenario(server, "openai", "tools"))
    assert any(e.speaker == "clerk" and e.content == "Which account, please?" and not e.invalid for e in t.events)
    assert not any(e.invalid for e in t.events)
