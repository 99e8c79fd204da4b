"""Model calls: lazy litellm import (or the openai SDK for `client: openai`), retries with
backoff, secret redaction, usage stats.

litellm is imported on the first model call, never at module import, so `simworld --help` and
scripted runs do not pay for it (and `LITELLM_LOCAL_MODEL_COST_MAP` is set first: otherwise
litellm fetches its cost map over the network at import and waits on retries).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from simworld.episode import AgentFailure

_litellm_module: Any = None


def litellm() -> Any:
    """The litellm module, imported on first use and configured to stay quiet and offline."""
    global _litellm_module
    if _litellm_module is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("LITELLM_TELEMETRY", "False")
        import litellm as module

        module.suppress_debug_info = True  # no "Give Feedback / Get Help" banners on stdout
        module.telemetry = False
        _litellm_module = module
    return _litellm_module


_openai_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str | None, str, float], Any]] = (
    weakref.WeakKeyDictionary())


def openai_client(api_base: str | None, api_key: str, timeout: float) -> Any:
    """An `openai.AsyncOpenAI` client, one per event loop and server (connections are reused).

    Used by `client: openai`, and handed to litellm's text completion, which otherwise builds a
    client per call and leaves its HTTP session open (a leaked connection per call).
    """
    clients = _openai_clients.setdefault(asyncio.get_running_loop(), {})
    key = (api_base, api_key, timeout)
    client = clients.get(key)
    if client is None:
        import openai

        client = clients[key] = openai.AsyncOpenAI(base_url=api_base, api_key=api_key, max_retries=0,
                                                   timeout=timeout)
    return client


# -- secrets

_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",]+")
_KEYLIKE = re.compile(r"\b(sk|pk|rk|hf|gsk|xai|key)[-_][A-Za-z0-9_\-]{8,}")
_URL_USERINFO = re.compile(r"(://)[^/@\s]+@")


_secret_envs: set[str] = set()


def register_secret_env(name: str) -> None:
    """Treat the value of environment variable `name` as a secret (an agent's `api_key_env`)."""
    _secret_envs.add(name)


def _secret_values() -> list[str]:
    values = {v for k, v in os.environ.items() if (_SECRET_ENV.search(k) or k in _secret_envs) and len(v) >= 6}
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with every secret-looking value (API keys from the environment, bearer tokens,
    credentials in URLs) replaced by ``***``. Applied to everything this agent reports."""
    for value in _secret_values():
        text = text.replace(value, "***")
    text = _BEARER.sub(r"\1***", text)
    text = _KEYLIKE.sub("***", text)
    return _URL_USERINFO.sub(r"\1***@", text)


# -- fault classification

_RETRY_STATUS = frozenset({408, 409, 425, 429})


def is_retryable(exc: BaseException) -> bool:
    """Rate limits, server errors, timeouts and dropped connections are worth another try."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, ConnectionError)):
        return True
    message = str(exc)
    lowered = message.lower()
    if "missing credentials" in lowered or ("api_key" in lowered and "must be set" in lowered):
        return False  # a configuration error reported as a 500 by the OpenAI client
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and (status in _RETRY_STATUS or status >= 500):
        return True
    lm = _litellm_module
    if lm is not None and isinstance(exc, (lm.Timeout, lm.APIConnectionError, lm.RateLimitError,
                                           lm.InternalServerError, lm.ServiceUnavailableError,
                                           lm.BadGatewayError)):
        return True
    import httpx
    import openai

    # openai.APITimeoutError is an APIConnectionError
    return isinstance(exc, (httpx.TimeoutException, httpx.TransportError, openai.APIConnectionError))


def retry_after_s(exc: BaseException) -> float | None:
    """The server's Retry-After (seconds), if the error carries one."""
    headers: Any = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("retry-after")
        return float(value) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


def describe(exc: BaseException) -> str:
    """One redacted line naming the error, without litellm's boilerplate."""
    text = " ".join(str(exc).split())
    if text.startswith("litellm."):
        text = text[len("litellm."):]
    name = type(exc).__name__
    while text.startswith(name + ":"):  # litellm repeats the class name: "X: X: OpenAIException - ..."
        text = text[len(name) + 1:].strip()
    return redact(f"{name}: {text}" if text else name)[:400]


# -- the call loop


@dataclass
class CallStats:
    """What the provenance of an LLM agent records about its calls."""

    calls: int = 0
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = False
    latencies_s: list[float] = field(default_factory=list)
    response_models: set[str] = field(default_factory=set)

    def record(self, response: Any, latency: float) -> None:
        self.calls += 1
        self.latencies_s.append(round(latency, 6))
        usage = getattr(response, "usage", None)
        if usage is not None:
            self.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
            self.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
        model = getattr(response, "model", None)
        if model:
            self.response_models.add(str(model))
        # litellm prices every response it knows the model of (None for unknown models).
        hidden = getattr(response, "_hidden_params", None)
        cost = hidden.get("response_cost") if isinstance(hidden, dict) else None
        if cost:
            self.cost_usd += float(cost)
            self.cost_known = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "retries": self.retries,
            "failed_attempts": dict(sorted(self.errors.items())),
            "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                      "total_tokens": self.prompt_tokens + self.completion_tokens},
            "cost_usd": round(self.cost_usd, 8) if self.cost_known else None,
            "response_models": sorted(self.response_models),
            "latencies_s": list(self.latencies_s),
        }


_jitter = random.Random()  # wall-clock-seeded: jitter only spaces out retries, never touches content


async def call_with_retries(call: Callable[[], Awaitable[Any]], *, stats: CallStats, max_retries: int,
                            timeout: float, backoff: float, backoff_max: float, what: str) -> Any:
    """Await `call()`; retry retryable faults with exponential backoff and jitter.

    Raises AgentFailure (a one-line, redacted reason) when the call still fails after
    `max_retries` retries or fails in a way no retry can fix.
    """
    attempt = 0
    started = time.perf_counter()
    while True:
        try:
            # litellm enforces `timeout` per request; this outer bound also covers connection set-up
            # and anything inside litellm that could otherwise wait forever.
            async with asyncio.timeout(timeout * 1.5 + 5):
                response = await call()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stats.errors[type(exc).__name__] += 1
            if not is_retryable(exc):
                raise AgentFailure(f"{what}: {describe(exc)}") from None
            if attempt >= max_retries:
                tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
                raise AgentFailure(f"{what}: still failing after {tries}: {describe(exc)}") from None
            delay = min(backoff_max, backoff * 2.0**attempt) * (0.5 + _jitter.random())
            hinted = retry_after_s(exc)
            if hinted is not None:
                delay = max(delay, min(hinted, backoff_max))
            attempt += 1
            stats.retries += 1
            await asyncio.sleep(delay)
            continue
        stats.record(response, time.perf_counter() - started)
        return response
