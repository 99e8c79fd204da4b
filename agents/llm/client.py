"""Model calls: lazy litellm import (or the openai SDK for `client: openai`), retries with
backoff, secret redaction, usage stats.

litellm is imported on the first model call, never at module import, so `simworld --help` and
scripted runs do not pay for it (and `LITELLM_LOCAL_MODEL_COST_MAP` is set first: otherwise
litellm fetches its cost map over the network at import and waits on retries).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import os
import random
import re
import time
import warnings
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
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


_quiet_calls = 0


@contextmanager
def quiet_litellm() -> Iterator[None]:
    """Silence the multi-line pydantic serializer warnings litellm triggers while building its
    response objects, for the duration of its calls only. Overlapping calls (one event loop, many
    episodes) share one filter, removed when the last call ends: `warnings.catch_warnings` would
    restore another call's saved filters when calls interleave."""
    global _quiet_calls
    if _quiet_calls == 0:
        warnings.filterwarnings("ignore", message=r"Pydantic serializer warnings", category=UserWarning)
    _quiet_calls += 1
    try:
        yield
    finally:
        _quiet_calls -= 1
        if _quiet_calls == 0:
            warnings.filters[:] = [f for f in warnings.filters if not _pydantic_filter(f)]
            getattr(warnings, "_filters_mutated", lambda: None)()  # drop warning-registry caches


def _pydantic_filter(f: tuple[Any, ...]) -> bool:
    message = f[1]
    return f[0] == "ignore" and f[2] is UserWarning and getattr(message, "pattern", None) == (
        "Pydantic serializer warnings")


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
# Words that make a parameter, header or query name secret-looking ("api_key", "X-Api-Key",
# "access_token", "client_secret", "sig"): the name's last word, or anywhere for the unambiguous ones.
# "max_tokens" or "stop_token_ids" are not secrets: "tokens" and "ids" are not secret words.
_SECRET_LAST_WORDS = frozenset({"key", "keys", "apikey", "token", "secret", "secrets", "password", "passwd", "pwd",
                                "authorization", "auth", "credential", "credentials", "signature", "sig",
                                "cookie", "bearer", "jwt", "session"})
_SECRET_ANYWHERE = re.compile(r"api[-_ ]?key|secret|passw|credential|authoriz|signature|cookie|bearer",
                              re.IGNORECASE)
# Header names are where keys are usually smuggled: anything auth-, key-, token-like is refused.
_SECRET_HEADER = re.compile(r"auth|key|token|secret|passw|credential|cookie|signature|session", re.IGNORECASE)
HEADER_PARAMS = frozenset({"extra_headers", "headers", "default_headers"})
_URL_SECRET_QUERY = re.compile(r"([?&#;]([^=&#;\s]*)=)([^&#;\s]+)")


def secret_name(name: str) -> bool:
    """Whether a parameter or query-string name looks like it holds a secret."""
    words = [w for w in re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()) if w]
    return bool(_SECRET_ANYWHERE.search(name)) or bool(words and words[-1] in _SECRET_LAST_WORDS)


def secret_header(name: str) -> bool:
    """Whether an HTTP header name looks like it carries a credential (Authorization, X-Api-Key, ...)."""
    return bool(_SECRET_HEADER.search(name))


_secret_envs: set[str] = set()


def register_secret_env(name: str) -> None:
    """Treat the value of environment variable `name` as a secret (an agent's `api_key_env`)."""
    _secret_envs.add(name)


def _secret_values(min_len: int = 6) -> list[str]:
    values = {v for k, v in os.environ.items()
              if (_SECRET_ENV.search(k) or k in _secret_envs) and len(v) >= min_len}
    return sorted(values, key=len, reverse=True)


def redact_env_secrets(text: str) -> str:
    """`text` with the values of secret environment variables (API keys) replaced by ``***``.

    Applied to what the model writes (content, tool-call arguments): only exact key values, so
    ordinary text ("a bearer token", "sk-...") is never changed. Values shorter than 8 characters
    or made of letters only are left alone there (an env value like "default" is not a key)."""
    for value in _secret_values(8):
        if not value.isalpha():
            text = text.replace(value, "***")
    return text


def _redact_query(match: re.Match[str]) -> str:
    return match.group(1) + "***" if secret_name(match.group(2)) else match.group(0)


def redact(text: str) -> str:
    """`text` with every secret-looking value (API keys from the environment, bearer tokens,
    credentials in URLs and their query strings) replaced by ``***``. Applied to everything this
    agent reports and records of what the server sends back."""
    for value in _secret_values():
        text = text.replace(value, "***")
    text = _BEARER.sub(r"\1***", text)
    text = _KEYLIKE.sub("***", text)
    text = _URL_SECRET_QUERY.sub(_redact_query, text)
    return _URL_USERINFO.sub(r"\1***@", text)


def redact_value(value: Any, redactor: Callable[[str], str] = redact) -> Any:
    """`value` (JSON-like: dicts, lists, strings) with `redactor` applied to every string in it."""
    if isinstance(value, str):
        return redactor(value)
    if isinstance(value, dict):
        return {k: redact_value(v, redactor) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v, redactor) for v in value]
    return value


# -- fault classification


class MalformedResponse(Exception):
    """The server answered (HTTP 200) with a body that is not a completion; the message says how."""


# litellm's words for a 200 whose body it could not turn into a response object.
_UNREADABLE = re.compile(r"empty or invalid response|invalid response object|provider returned (?:a response with "
                         r"no 'choices'|'choices' that is not)", re.IGNORECASE)
_READ_ERRORS = (ValueError, KeyError, AttributeError, TypeError, IndexError)  # JSON and pydantic errors are ValueErrors
_NOT_AN_OBJECT = re.compile(r"^'(\w+)' object has no attribute 'model_dump'")
_RECEIVED = re.compile(r"Empty or invalid response from LLM endpoint\. Received: (.*)\. Check the reverse proxy", re.S)
_LITELLM_PREFIX = re.compile(r"^(?:\w+: )?(?:\w+Exception - )?(?:litellm\.APIError: )?(?:LiteLLM: )?")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _exchange_failed(exc: BaseException) -> bool:
    """An HTTP error status, a timeout or a transport fault: the server did not answer 200."""
    import openai

    return isinstance(exc, (openai.APIStatusError, openai.APIConnectionError, OSError, TimeoutError,
                            asyncio.TimeoutError)) or type(exc).__module__.split(".")[0] in ("httpx", "httpx2",
                                                                                          "httpcore", "httpcore2")


def malformed_response(exc: BaseException) -> str | None:
    """How the server's 200 response was malformed, when `exc` says so, else None (redacted).

    `exc` is a :class:`MalformedResponse`; the openai SDK's JSONDecodeError on a body declared
    JSON; or litellm's report of a body it could not read, which litellm raises as an HTTP 500
    (``InternalServerError``) although nothing in its chain is an HTTP error status or a transport
    fault: the cause is a parse error, or litellm's words for one.
    """
    if isinstance(exc, MalformedResponse):
        return redact(str(exc))
    from_litellm = _litellm_module is not None and type(exc).__module__.startswith("litellm")
    causes = list(_chain(exc))[1:] if from_litellm else list(_chain(exc))
    if not causes or any(_exchange_failed(c) for c in causes):
        return None
    for cause in causes:
        if isinstance(cause, json.JSONDecodeError):  # the body itself is at hand
            return redact(_not_json(cause.doc))
    if not from_litellm or not any(isinstance(c, _READ_ERRORS) or _UNREADABLE.search(str(c)) for c in causes):
        return None
    for cause in causes:
        text = str(cause)
        received = _RECEIVED.search(text)  # litellm quotes what the SDK made of the body
        if received:
            shown = received.group(1)
            return redact(_not_json(shown[1:-1]) if shown[:1] in "'\"" else _json_kind(shown))
        unparsed = _NOT_AN_OBJECT.search(text) if isinstance(cause, AttributeError) else None
        if unparsed:  # litellm's text completion: no quote of the body
            kind = unparsed.group(1)
            return _not_json(None) if kind in ("str", "bytes") else _json_kind(kind)
    return _LITELLM_PREFIX.sub("", describe(exc), count=1)


def _not_json(body: str | bytes | None) -> str:
    """A body that does not parse as JSON, quoted (`None`: not at hand)."""
    if body is None:
        return "its body is not JSON"
    text = " ".join((body.decode("utf-8", "replace") if isinstance(body, bytes) else body).split())
    if not text:
        return "its body is empty"
    shown = repr(text if len(text) <= 80 else text[:80] + "...")
    # JSON cut short is a server fault; anything else usually means another server answers at api_base.
    return f"its body is not JSON: {shown}" + ("" if text[0] in "{[" else " (is api_base the model server's URL?)")


def _json_kind(shown: str) -> str:
    """A JSON body of the wrong type (a list, a number, null), from its Python repr or type name."""
    kind = {"NoneType": "null", "bool": "boolean", "int": "number", "float": "number", "list": "list"}.get(shown) \
        or {"[": "list", "N": "null", "T": "boolean", "F": "boolean"}.get(shown[:1]) \
        or ("number" if shown[:1].isdigit() or shown[:1] == "-" else None)
    return f"its body is a JSON {kind}, not an object" if kind else "its body is not a completion object"


def not_a_completion(response: Any, part: str) -> str | None:
    """Why a 200 response read by the openai SDK or litellm is not a chat (`part` ``message``) or
    text (``text``) completion; None when it is one (``choices: []`` included: the model said nothing)."""
    if isinstance(response, (str, bytes)):
        return _not_json(response)
    choices = getattr(response, "choices", None) if not isinstance(response, dict) else response.get("choices")
    if not isinstance(choices, list):
        if response is None or isinstance(response, (list, int, float, bool)):
            return _json_kind(type(response).__name__)
        return "its body has no choices list"
    if not choices:
        return None
    first = choices[0]
    value = first.get(part) if isinstance(first, dict) else getattr(first, part, None)
    if value is None:
        return f"its first choice has no {part}"
    if part == "message" and isinstance(value, (str, bytes, int, float, list)):
        return f"its message is a {type(value).__name__}, not an object"
    return None


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
    """The server's wait before a retry (seconds), if the error carries one: ``retry-after-ms``
    (OpenAI's), or ``Retry-After`` in seconds or as an HTTP date (RFC 9110 allows both)."""
    headers: Any = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        millis, value = headers.get("retry-after-ms"), headers.get("retry-after")
    except (TypeError, AttributeError):
        return None
    for text, scale in ((millis, 0.001), (value, 1.0)):
        try:
            return max(0.0, float(text) * scale)
        except (TypeError, ValueError):
            continue
    if value is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an obsolete date form without a zone: GMT, as HTTP dates are
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


_TRACEBACK = "Traceback (most recent call last)"


def _traceback_cause(tail: str) -> str:
    """The exception line (and its continuation) of a traceback pasted into a message, without
    frames, links or the dump of arguments litellm appends; at most 240 characters."""
    cause: list[str] = []
    for line in tail.splitlines()[1:]:
        if not cause:
            if line.strip() and not line[0].isspace() and not line.startswith(("Traceback", "During handling",
                                                                               "The above exception")):
                cause.append(re.sub(r"^[\w.]+\.(\w+):", r"\1:", line))
        elif not line.strip() or line.startswith("received_args="):
            break
        elif "errors.pydantic.dev" not in line:
            cause.append(line)
    return " ".join(" ".join(cause).split())[:240]


def describe(exc: BaseException) -> str:
    """One redacted line naming the error, without litellm's boilerplate or an embedded traceback
    (litellm pastes one into some messages; its last line, the actual cause, is kept)."""
    raw = str(exc)
    head, sep, tail = raw.partition(_TRACEBACK)
    if sep:
        cause = _traceback_cause(tail)
        raw = f"{head.strip()} ({cause})" if cause else head
    text = " ".join(raw.split())
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
            self.response_models.add(redact(str(model))[:200])  # the server's string: it may echo a key
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


async def _bounded(call: Callable[[], Awaitable[Any]], seconds: float) -> Any:
    """`await call()`, a TimeoutError that names the bound if it takes longer than `seconds`."""
    try:
        async with asyncio.timeout(seconds) as bound:
            return await call()
    except TimeoutError:
        if bound.expired():
            raise TimeoutError(f"no complete response in {seconds:g} s") from None
        raise


_jitter = random.Random()  # wall-clock-seeded: jitter only spaces out retries, never touches content


async def call_with_retries(call: Callable[[], Awaitable[Any]], *, stats: CallStats, max_retries: int,
                            timeout: float, backoff: float, backoff_max: float, what: str,
                            check: Callable[[Any], str | None] | None = None) -> Any:
    """Await `call()`; retry retryable faults with exponential backoff and jitter.

    Raises AgentFailure (a one-line, redacted reason) when the call still fails after
    `max_retries` retries or fails in a way no retry can fix.

    A malformed 200 response (`check(response)` says why, or litellm could not read the body) is
    not retried: ``WHAT returned a malformed response: WHY``. A server that answers 200 has done
    (and a hosted one has billed) the request, and what makes its body unreadable is nearly
    always there to stay: an `api_base` that serves an HTML page or a login, a proxy, a server
    whose responses have another shape. Retrying would cost `max_retries` more requests and up to
    `max_retries` backoff waits per model call for nothing; the episode fails at once instead,
    and a resumed run, started once the cause is fixed, retries exactly the failed episodes.
    """
    attempt = 0
    started = time.perf_counter()
    while True:
        try:
            # litellm enforces `timeout` per request; this outer bound also covers connection set-up
            # and anything inside litellm that could otherwise wait forever.
            response = await _bounded(call, timeout * 1.5 + 5)
            problem = check(response) if check is not None else None
            if problem is not None:
                raise MalformedResponse(problem)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            malformed = malformed_response(exc)
            if malformed is not None:
                stats.errors[MalformedResponse.__name__] += 1
                raise AgentFailure(f"{what} returned a malformed response: {malformed}"[:400]) from None
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
