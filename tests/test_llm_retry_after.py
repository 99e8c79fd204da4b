"""A rate-limited server's wait is honoured in every form HTTP allows: ``Retry-After`` in seconds
or as an HTTP date (RFC 9110), and OpenAI's ``retry-after-ms``; an unreadable one falls back to
the agent's own backoff."""

from __future__ import annotations

import datetime as dt
import email.utils
import time

import httpx
import openai
import pytest

from llm_server import ScriptedServer, ledger_policy
from simworld.agents.llm.client import retry_after_s
from test_llm_faults import ledger, llm, run_batch


def rate_limited(headers: dict[str, str]) -> openai.RateLimitError:
    request = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    return openai.RateLimitError("rate limited", response=httpx.Response(429, headers=headers, request=request),
                                 body=None)


def http_date(seconds_from_now: float) -> str:
    return email.utils.format_datetime(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds_from_now),
                                       usegmt=True)


@pytest.mark.parametrize("headers,low,high", [
    ({"retry-after": "2"}, 2.0, 2.0),
    ({"retry-after": "0.5"}, 0.5, 0.5),
    ({"retry-after-ms": "1500"}, 1.5, 1.5),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25, 0.25),  # the finer one wins
    ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0, 3.0),
    ({"retry-after": "DATE+30"}, 28.0, 30.0),  # (made when the test runs, not when it is collected)
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0, 0.0),  # a date gone by: no wait
])
def test_each_form_of_the_servers_wait_is_read(headers, low, high):
    headers = {k: http_date(30) if v == "DATE+30" else v for k, v in headers.items()}
    assert low <= retry_after_s(rate_limited(headers)) <= high


@pytest.mark.parametrize("headers", [{}, {"retry-after": "later"}, {"retry-after": ""}])
def test_no_readable_wait_leaves_the_agents_backoff(headers):
    assert retry_after_s(rate_limited(headers)) is None


def test_litellm_errors_carry_the_headers_the_same_way():
    class LitellmRateLimit(Exception):
        litellm_response_headers = httpx.Headers({"retry-after": http_date(30)})

    assert 28.0 <= retry_after_s(LitellmRateLimit()) <= 30.0


def test_a_retry_after_date_from_the_server_spaces_the_retry():
    """End to end through the openai SDK (litellm's first call alone takes seconds, which would hide
    the wait): the 429's Retry-After is an HTTP date 2 s ahead (whole seconds: 1-2 s of wait); the
    agent's own backoff is zero, so only the date can make the episode take that long."""
    first = lambda endpoint, body, n: "429" if n == 0 and not server.faults_injected["429"] else None  # noqa: E731
    with ScriptedServer(ledger_policy, fault_plan=first, retry_after=http_date(2)) as server:  # type: ignore[arg-type]
        started = time.perf_counter()
        (t,) = run_batch(ledger(llm(server, client="openai", retry_backoff=0.0, retry_backoff_max=10.0)), 1)
        took = time.perf_counter() - started
    assert t.outcome.success, t.outcome
    assert server.faults_injected["429"] == 1 and t.provenance.models["clerk"]["retries"] == 1
    assert took >= 0.9, took
