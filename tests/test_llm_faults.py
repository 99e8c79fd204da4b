"""Provider faults: retries with backoff, failures recorded with a reason, a 20%-fault batch where
every episode is accounted for, and API keys that never leak."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

import ledger_world
from llm_server import FAULTS, Reply, ScriptedServer, chat_payload, ledger_policy, raw
from simworld.agents.llm.client import redact
from simworld.episode import episode_specs, run_episode
from simworld.scenario import scenario_from_data
from simworld.types import Trajectory


def llm(server: ScriptedServer, **extra: Any) -> dict[str, Any]:
    return {"type": "llm", "model": "openai/test-model", "api_base": server.base_url, "retry_backoff": 0.01,
            "retry_backoff_max": 0.05, "timeout": 5.0, **extra}


def ledger(clerk: dict[str, Any], user: dict[str, Any] | None = None):
    data = ledger_world.scenario_data()
    data["roles"]["clerk"]["agent"] = clerk
    if user is not None:
        data["roles"]["user"]["agent"] = user
    return scenario_from_data(data)


def run_batch(sc, n: int) -> list[Trajectory]:
    async def main() -> list[Trajectory]:
        return list(await asyncio.gather(*(run_episode(sc, spec) for spec in episode_specs(sc, n))))

    return asyncio.run(main())


def first_attempt_fails(kind: str):
    return lambda endpoint, body, n: kind if n == 0 else None


@pytest.mark.parametrize("client", ["litellm", "openai"])
@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_is_retried_and_the_episode_completes(fault, client):
    with ScriptedServer(ledger_policy, fault_plan=first_attempt_fails(fault), hang_s=10) as server:
        (t,) = run_batch(ledger(llm(server, timeout=0.5, client=client)), 1)
    assert t.outcome.success, t.outcome
    prov = t.provenance.models["clerk"]
    assert prov["calls"] == 2 and prov["retries"] == 2  # each of the two calls failed once
    assert sum(prov["failed_attempts"].values()) == 2
    assert server.faults_injected[fault] == 2
    assert len(server.requests) == 4


def test_backoff_grows_and_honours_retry_after():
    plan = lambda endpoint, body, n: "429" if n < 2 else None  # noqa: E731
    with ScriptedServer(ledger_policy, fault_plan=plan, retry_after=0.2) as server:
        started = time.perf_counter()
        (t,) = run_batch(ledger(llm(server, retry_backoff=0.0, retry_backoff_max=1.0)), 1)
        took = time.perf_counter() - started
    assert t.outcome.success and t.provenance.models["clerk"]["retries"] == 4
    assert took >= 4 * 0.2 * 0.99  # the server's Retry-After, not the zero backoff, spaced the retries


@pytest.mark.parametrize("client", ["litellm", "openai"])
def test_retries_exhausted_records_failure_with_reason(client):
    always = lambda endpoint, body, n: "500"  # noqa: E731
    with ScriptedServer(ledger_policy, fault_plan=always) as server:
        (t,) = run_batch(ledger(llm(server, max_retries=2, client=client)), 1)
    assert not t.outcome.success and t.outcome.termination == "error"
    assert "clerk: model openai/test-model: still failing after 3 attempts: InternalServerError" in t.outcome.error
    assert "Internal server error (injected)" in t.outcome.error
    assert len(server.requests) == 3
    prov = t.provenance.models["clerk"]
    assert prov["retries"] == 2 and prov["calls"] == 0 and prov["failed_attempts"] == {"InternalServerError": 3}
    assert [e.speaker for e in t.events] == ["user"]  # the episode is recorded up to the failure


def test_max_retries_zero_means_one_attempt():
    with ScriptedServer(ledger_policy, fault_plan=first_attempt_fails("429")) as server:
        (t,) = run_batch(ledger(llm(server, max_retries=0)), 1)
    assert t.outcome.termination == "error" and "after 1 attempt:" in t.outcome.error
    assert len(server.requests) == 1


@pytest.mark.parametrize("client", ["litellm", "openai"])
@pytest.mark.parametrize("status", [400, 401, 404])
def test_client_errors_are_not_retried(status, client):
    with ScriptedServer(lambda e, b: Reply(status=status, error_message=f"nope {status}")) as server:
        (t,) = run_batch(ledger(llm(server, max_retries=5, client=client)), 1)
    assert t.outcome.termination == "error" and f"nope {status}" in t.outcome.error
    assert len(server.requests) == 1


def test_batch_with_20_percent_faults_accounts_for_every_episode():
    n = 40
    with ScriptedServer(ledger_policy, fault_rate=0.2, seed=7, hang_s=10) as server:
        sc = ledger(llm(server, max_retries=1, timeout=0.5), user=llm(server, max_retries=1, timeout=0.5))
        trajectories = run_batch(sc, n)
    assert sorted(t.episode_id for t in trajectories) == sorted(s.episode_id for s in episode_specs(sc, n))
    completed = [t for t in trajectories if t.outcome.error is None]
    failed = [t for t in trajectories if t.outcome.error is not None]
    assert completed and failed, (len(completed), len(failed))  # seed 7 gives both
    for t in completed:
        assert t.outcome.termination == "user_stop" and t.outcome.success
    for t in failed:
        assert t.outcome.termination == "error" and "still failing after 2 attempts" in t.outcome.error
    assert set(server.faults_injected) == set(FAULTS)
    retried = sum(m["retries"] for t in trajectories for m in t.provenance.models.values())
    assert retried >= sum(server.faults_injected.values()) - len(failed) * 2


SECRET = "sk-simworld-TEST-3f9a8b7c6d5e4f3a2b1c"


@pytest.mark.parametrize("client", ["litellm", "openai"])
def test_api_key_never_appears_in_trajectories_logs_or_errors(monkeypatch, caplog, capfd, client):
    """The worst case: a server that echoes the Authorization header in its error messages."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)

    def echoing(endpoint, body):
        if "account 1" in str(body):
            return Reply(status=401, error_message="bad key: Bearer " + SECRET)
        return ledger_policy(endpoint, body)

    caplog.set_level(logging.DEBUG)
    with ScriptedServer(echoing, fault_rate=0.3, faults=("429", "500"), seed=3) as server:
        sc = ledger(llm(server, max_retries=1, client=client), user=llm(server, max_retries=1, client=client))
        trajectories = run_batch(sc, 12)
    assert any(h.get("Authorization") == "Bearer " + SECRET for h in server.headers), "the key was used"
    assert any(t.outcome.error for t in trajectories), "some episodes failed, with reasons"
    dumped = b"".join(t.to_jsonl() for t in trajectories).decode()
    out, err = capfd.readouterr()
    for where, text in (("trajectories", dumped), ("logs", caplog.text), ("stdout", out), ("stderr", err)):
        assert SECRET not in text, where
        assert SECRET[3:] not in text, where
    assert "bad key: Bearer ***" in dumped


@pytest.mark.parametrize("client", ["litellm", "openai"])
def test_key_from_a_custom_api_key_env_is_redacted_too(monkeypatch, client):
    monkeypatch.setenv("ACME_LLM_AUTH", "acme-0d9e8f7a6b5c4d3e")  # a name no secret pattern matches

    def echoing(endpoint, body):
        return Reply(status=403, error_message="forbidden for credential acme-0d9e8f7a6b5c4d3e")

    with ScriptedServer(echoing) as server:
        (t,) = run_batch(ledger(llm(server, api_key_env="ACME_LLM_AUTH", client=client)), 1)
    assert server.headers[0]["Authorization"] == "Bearer acme-0d9e8f7a6b5c4d3e"
    assert t.outcome.termination == "error" and "forbidden for credential ***" in t.outcome.error
    assert "acme-0d9e8f7a6b5c4d3e" not in t.to_jsonl().decode()


def test_redact_covers_env_keys_bearer_tokens_and_urls(monkeypatch):
    monkeypatch.setenv("MY_PROVIDER_API_KEY", "abcdef-123456-plain")
    text = redact("key abcdef-123456-plain; Authorization: Bearer tok_1234567890; http://user:pw@host/v1 sk-ant-0123456789ab")
    assert "abcdef-123456-plain" not in text and "tok_1234567890" not in text and "pw@" not in text
    assert "0123456789ab" not in text and "http://***@host/v1" in text


@pytest.mark.parametrize("fault", FAULTS)
def test_llama3_mode_retries_every_fault_too(fault):
    with ScriptedServer(ledger_policy, fault_plan=first_attempt_fails(fault), hang_s=10) as server:
        (t,) = run_batch(ledger(llm(server, mode="llama3", timeout=0.5)), 1)
    assert t.outcome.success, t.outcome
    assert t.provenance.models["clerk"]["retries"] == 2 and server.faults_injected[fault] == 2


def test_llama3_mode_reuses_one_http_client(monkeypatch):
    """litellm's text completion would build a client, and leak an HTTP session, per call."""
    import aiohttp

    sessions = []
    original = aiohttp.ClientSession.__init__

    def counting(self, *args, **kwargs):
        sessions.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "__init__", counting)
    with ScriptedServer(ledger_policy) as server:
        trajectories = run_batch(ledger(llm(server, mode="llama3")), 6)
    assert all(t.outcome.success for t in trajectories)
    assert sum(t.provenance.models["clerk"]["calls"] for t in trajectories) == 12
    assert len(sessions) <= 1, f"{len(sessions)} HTTP sessions for 12 calls"


# -- what the server sends back is recorded redacted; a 200 that is not a completion is a fault

ECHOED_KEY = "Qz7-echo9f8e7d6c5b4a"  # matches no key pattern: only its being an env value gives it away


@pytest.mark.parametrize("client", ["litellm", "openai"])
def test_keys_echoed_by_the_server_or_the_model_are_redacted(monkeypatch, client):
    """A proxy reporting the key as the model id, a model repeating it in text and in arguments."""
    monkeypatch.setenv("OPENAI_API_KEY", ECHOED_KEY)

    def echoing(endpoint, body):
        if not body.get("tools"):
            return ledger_policy(endpoint, body)
        if not any("Error: invalid action" in str(m.get("content")) for m in body["messages"]):
            bad = {"id": "c1", "type": "function",
                   "function": {"name": "deposit", "arguments": f'{{"account": "{ECHOED_KEY}", "amount": 5}}'}}
            return raw(chat_payload({"role": "assistant", "content": None, "tool_calls": [bad]},
                                    model="m-" + ECHOED_KEY))
        return raw(chat_payload({"role": "assistant", "content": f"Your key is {ECHOED_KEY}."},
                                model="m-" + ECHOED_KEY))

    with ScriptedServer(echoing) as server:
        (t,) = run_batch(ledger(llm(server, client=client)), 1)
    assert any(h.get("Authorization") == "Bearer " + ECHOED_KEY for h in server.headers), "the key was used"
    assert t.outcome.error is None and t.outcome.invalid_moves == 1, t.outcome
    assert ECHOED_KEY not in t.to_jsonl().decode()
    assert t.provenance.models["clerk"]["response_models"] == ["m-***"]
    (bad,) = [e for e in t.events if e.invalid]
    assert "***" in bad.content and "***" in bad.invalid
    assert "Your key is ***." in [e.content for e in t.events]


def test_provenance_redacts_provider_params_and_api_base_query(monkeypatch):
    """Second line of defence behind validation: what provenance records passes through redact()."""
    import numpy as np

    from simworld.agents.llm import LLMAgent, LLMParams

    monkeypatch.setenv("OPENAI_API_KEY", ECHOED_KEY)
    params = LLMParams(type="llm", model="openai/x", provider_params={"metadata": {"note": "fine"}})
    params.provider_params["metadata"]["note"] = ECHOED_KEY  # changed after validation, as code could
    prov = LLMAgent(params, "clerk", np.random.default_rng(0)).provenance()
    assert prov["provider_params"]["metadata"] == {"note": "***"}
    assert redact("http://h/v1?api-key=abc123def&model=x#token=zz") == "http://h/v1?api-key=***&model=x#token=***"


NOT_A_COMPLETION = {
    "an HTML page": raw(body=b"<html><body>proxy login</body></html>", content_type="text/html"),
    "a JSON list": raw([1, 2, 3]),
    "an object without choices": raw({"object": "chat.completion"}),
    "choices null": raw({"object": "chat.completion", "choices": None}),
    "a choice without message": raw({"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop"}]}),
    "a message that is a string": raw(chat_payload("hello")),
}


@pytest.mark.parametrize("case", sorted(NOT_A_COMPLETION))
def test_a_200_that_is_not_a_completion_fails_the_episode_not_the_model(case):
    with ScriptedServer(lambda e, b: NOT_A_COMPLETION[case] if b.get("tools") else ledger_policy(e, b)) as server:
        (t,) = run_batch(ledger(llm(server, client="openai", max_retries=3)), 1)
    assert t.outcome.termination == "error" and t.outcome.invalid_moves == 0, t.outcome
    assert t.outcome.error.startswith("clerk: model openai/test-model returned a malformed response: its ")
    assert not [e for e in t.events if e.invalid]
    assert len(server.requests) == 1  # a persistent server fault: no retry


@pytest.mark.parametrize("payload", [[1, 2], {"object": "text_completion", "choices": [{"index": 0}]}])
def test_raw_completion_that_is_not_a_completion_fails_the_episode(payload):
    with ScriptedServer(lambda e, b: raw(payload) if e == "completions" else ledger_policy(e, b)) as server:
        (t,) = run_batch(ledger(llm(server, client="openai", mode="llama3")), 1)
    assert t.outcome.termination == "error" and "returned a malformed response: its " in t.outcome.error, t.outcome


def test_empty_choices_stay_the_models_empty_reply():
    def policy(endpoint, body):
        if body.get("tools") and not any("Error: invalid action" in str(m.get("content")) for m in body["messages"]):
            return raw({"object": "chat.completion", "model": "m", "choices": []})
        return ledger_policy(endpoint, body)

    with ScriptedServer(policy) as server:
        (t,) = run_batch(ledger(llm(server, client="openai")), 1)
    assert t.outcome.success and t.outcome.invalid_moves == 1
    (bad,) = [e for e in t.events if e.invalid]
    assert "empty reply" in bad.invalid


def test_litellm_failure_reason_has_no_traceback_and_stderr_no_pydantic_warnings(capfd):
    """litellm pastes a traceback into 'Invalid response object' errors and its response objects
    trigger multi-line pydantic serializer warnings."""
    import warnings

    filters = list(warnings.filters)
    content = raw(chat_payload({"role": "assistant", "content": [{"type": "text", "text": "hi"}]}))
    with ScriptedServer(lambda e, b: content if b.get("tools") else ledger_policy(e, b)) as server:
        (t,) = run_batch(ledger(llm(server, client="litellm", max_retries=0)), 1)
    error = t.outcome.error
    assert t.outcome.termination == "error" and len(error) <= 400
    assert "Traceback" not in error and 'File "' not in error and "received_args" not in error
    assert "Invalid response object (ValidationError:" in error and "Input should be a valid string" in error
    _, err = capfd.readouterr()
    assert "Pydantic serializer warnings" not in err and "PydanticSerializationUnexpectedValue" not in err
    assert warnings.filters == filters  # the filter was scoped to the call


def test_outer_timeout_names_the_seconds():
    """The outer bound of call_with_retries (timeout * 1.5 + 5 s, for a server that trickles its
    body) says how long it waited; a TimeoutError of the call itself passes through unchanged."""
    from simworld.agents.llm.client import _bounded, describe

    async def trickle():
        await asyncio.sleep(10)

    async def own_timeout():
        raise TimeoutError("read timed out")

    with pytest.raises(TimeoutError) as bound:
        asyncio.run(_bounded(trickle, 0.05))
    assert describe(bound.value) == "TimeoutError: no complete response in 0.05 s"
    with pytest.raises(TimeoutError, match="^read timed out$"):
        asyncio.run(_bounded(own_timeout, 5))
