"""A deterministic OpenAI-compatible model server on 127.0.0.1 for tests and benchmarks.

Serves ``/v1/chat/completions`` (with tools), ``/v1/completions`` (raw text, for `mode: llama3`)
and ``/v1/models``. What it answers is decided by a *policy*: a function of the request body that
returns a :class:`Reply` (text, tool calls, raw malformed tool calls, an empty reply). The same
request always gets the same reply, whatever the order or concurrency of requests.

Faults are injected at ``fault_rate``: HTTP 429, HTTP 500, a hang (no answer for ``hang_s``) or a
dropped connection. Whether the n-th occurrence of a request body faults is a hash of
(seed, body, n), so a batch gets the same faults run after run and a retried request gets a fresh
draw. ``latency`` delays every answer by a fixed time.

In tests::

    with ScriptedServer(policy, latency=0.0, fault_rate=0.2) as server:
        server.base_url   # "http://127.0.0.1:PORT/v1"

As a process (benchmarks)::

    python tests/llm_server.py --latency 0.1 --policy constant   # prints "PORT <n>"
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

FAULTS = ("429", "500", "hang", "drop")


@dataclass(frozen=True)
class ToolCallReply:
    """One tool call of a reply; `raw_arguments` (a string sent as is) overrides `arguments`."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    raw_arguments: str | None = None

    def arguments_text(self) -> str:
        if self.raw_arguments is not None:
            return self.raw_arguments
        return orjson.dumps(self.arguments).decode()


@dataclass(frozen=True)
class Reply:
    """What the model says: text and/or tool calls (chat), or `text` alone (raw completion)."""

    text: str | None = None
    tool_calls: tuple[ToolCallReply, ...] = ()
    status: int = 200
    """A non-200 status answers with an OpenAI-style error body (e.g. 401, 400)."""
    error_message: str = ""
    payload: Any = None
    """Any JSON value sent as the whole 200 body instead of a completion (a server or proxy fault)."""
    raw_body: bytes | None = None
    """Bytes sent as the whole 200 body (with `content_type`), e.g. an HTML page."""
    content_type: str = "application/json"


def raw(payload: Any = None, body: bytes | None = None, content_type: str = "application/json") -> Reply:
    """A 200 answer that is not what the scripted completion would be: `payload` as JSON, or `body` as is."""
    return Reply(payload=payload, raw_body=body, content_type=content_type)


def chat_payload(message: Any, model: str = "test-model", **choice: Any) -> dict[str, Any]:
    """A chat completion body around `message` (any JSON, for shapes a scripted Reply cannot make)."""
    return {"id": "cmpl-raw", "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", **choice}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def text(content: str) -> Reply:
    return Reply(text=content)


def calls(*items: ToolCallReply | tuple[str, dict[str, Any]]) -> Reply:
    """A reply with (parallel) tool calls: ``calls(("deposit", {"acct": 1}), ...)``."""
    out = tuple(i if isinstance(i, ToolCallReply) else ToolCallReply(i[0], i[1]) for i in items)
    return Reply(tool_calls=out)


def empty() -> Reply:
    return Reply(text="")


Policy = Callable[[str, dict[str, Any]], Reply]
"""(endpoint, request body) -> Reply; endpoint is "chat" or "completions"."""


def constant_policy(endpoint: str, body: dict[str, Any]) -> Reply:
    return text("OK")


def last_user_text(body: dict[str, Any]) -> str:
    """The last user message of a chat request (or the whole prompt of a raw completion)."""
    if "prompt" in body:
        return str(body["prompt"])
    for m in reversed(body.get("messages", [])):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
            return c or ""
    return ""


def _unit(*parts: Any) -> float:
    h = hashlib.sha256(b"\x00".join(str(p).encode() if not isinstance(p, bytes) else p for p in parts)).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


class ScriptedServer:
    """The server, run on its own event loop in a daemon thread (or the main thread via `serve`)."""

    def __init__(self, policy: Policy = constant_policy, *, latency: float = 0.0, fault_rate: float = 0.0,
                 faults: Sequence[str] = FAULTS, seed: int = 0, hang_s: float = 30.0,
                 fault_plan: Callable[[str, dict[str, Any], int], str | None] | None = None,
                 retry_after: float | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        self.policy = policy
        self.latency = latency
        self.fault_rate = fault_rate
        self.faults = tuple(faults)
        self.seed = seed
        self.hang_s = hang_s
        self.fault_plan = fault_plan
        self.retry_after = retry_after
        self.host = host
        self.port = port
        self.requests: list[dict[str, Any]] = []
        """Every request body received (faulted ones included), in arrival order."""
        self.headers: list[dict[str, str]] = []
        self.faults_injected: Counter[str] = Counter()
        self._seen: Counter[bytes] = Counter()
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    # -- lifecycle
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        return app

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._stopped = asyncio.Event()

    async def _serve_until_stopped(self) -> None:
        await self._start()
        assert self._stopped is not None
        await self._stopped.wait()
        await self._runner.cleanup()  # type: ignore[union-attr]

    def start(self) -> ScriptedServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(self._start())
            except BaseException as exc:  # port in use etc.: report to the starting thread
                errors.append(exc)
                ready.set()
                return
            ready.set()
            assert self._stopped is not None
            self._loop.run_until_complete(self._stopped.wait())
            self._loop.run_until_complete(self._runner.cleanup())  # type: ignore[union-attr]
            self._loop.close()

        self._thread = threading.Thread(target=main, name="llm-test-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(30)

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- faults
    def _fault_for(self, endpoint: str, raw: bytes, body: dict[str, Any]) -> str | None:
        with self._lock:
            n = self._seen[raw]
            self._seen[raw] += 1
        if self.fault_plan is not None:
            return self.fault_plan(endpoint, body, n)
        if self.fault_rate <= 0 or not self.faults:
            return None
        if _unit(self.seed, raw, n, "fault") >= self.fault_rate:
            return None
        return self.faults[int(_unit(self.seed, raw, n, "kind") * len(self.faults))]

    async def _inject(self, request: web.Request, fault: str) -> web.StreamResponse:
        with self._lock:
            self.faults_injected[fault] += 1
        if fault == "429":
            headers = {"retry-after": str(self.retry_after)} if self.retry_after is not None else {}
            return _error(429, "Rate limit reached (injected)", "rate_limit_exceeded", headers)
        if fault == "500":
            return _error(500, "Internal server error (injected)", "server_error")
        if fault == "hang":
            assert self._stopped is not None
            try:  # hang until hang_s passes or the server stops, whichever comes first
                await asyncio.wait_for(self._stopped.wait(), self.hang_s)
            except asyncio.TimeoutError:
                pass
            return _error(504, "hung (injected)", "timeout")
        # drop: close the socket without an answer
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError

    # -- handlers
    async def _read(self, request: web.Request) -> tuple[bytes, dict[str, Any] | None]:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw, None
        with self._lock:
            self.requests.append(body)
            self.headers.append(dict(request.headers))
        return raw, body if isinstance(body, dict) else None

    async def _answer(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        raw, body = await self._read(request)
        if body is None:
            return _error(400, "request body is not a JSON object", "invalid_request_error")
        if body.get("stream"):
            return _error(400, "streaming is not supported by the test server", "invalid_request_error")
        fault = self._fault_for(endpoint, raw, body)
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if fault is not None:
            return await self._inject(request, fault)
        try:
            reply = self.policy(endpoint, body)
        except Exception as exc:  # a bug in a test's policy: answer 500 and say why
            return _error(500, f"policy error: {type(exc).__name__}: {exc}", "server_error")
        if reply.status != 200:
            return _error(reply.status, reply.error_message or "error", "invalid_request_error")
        if reply.raw_body is not None or reply.payload is not None:
            body_bytes = reply.raw_body if reply.raw_body is not None else orjson.dumps(reply.payload)
            return web.Response(body=body_bytes, headers={"Content-Type": reply.content_type})
        n = next(self._ids)
        model = str(body.get("model", "test-model"))
        prompt_chars = len(raw)
        if endpoint == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": reply.text}
            if reply.tool_calls:
                message["tool_calls"] = [
                    {"id": f"call_{n}_{i}", "type": "function",
                     "function": {"name": c.name, "arguments": c.arguments_text()}}
                    for i, c in enumerate(reply.tool_calls)]
            choice: dict[str, Any] = {"index": 0, "message": message,
                                      "finish_reason": "tool_calls" if reply.tool_calls else "stop"}
            out_chars = len(reply.text or "") + sum(len(c.arguments_text()) for c in reply.tool_calls)
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": reply.text or "", "logprobs": None, "finish_reason": "stop"}
            out_chars = len(reply.text or "")
            obj = "text_completion"
        usage = {"prompt_tokens": prompt_chars // 4, "completion_tokens": out_chars // 4 + 1}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        payload = {"id": f"cmpl-{n}", "object": obj, "created": 1700000000, "model": model,
                   "choices": [choice], "usage": usage}
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "chat")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "completions")

    async def _models(self, request: web.Request) -> web.StreamResponse:
        payload = {"object": "list", "data": [{"id": "test-model", "object": "model", "created": 0,
                                               "owned_by": "simworld-tests"}]}
        return web.Response(body=orjson.dumps(payload), content_type="application/json")


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _numbers(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", text)]


def _llama3_messages(prompt: str) -> list[tuple[str, str]]:
    """(role header, content) of each message of a Llama 3 prompt (the open header excluded)."""
    out = []
    for piece in prompt.split("<|start_header_id|>")[1:]:
        header, _, content = piece.partition("<|end_header_id|>\n\n")
        out.append((header, content.removesuffix("<|eot_id|>").removesuffix("<|eom_id|>")))
    return out[:-1] if out and out[-1][1] == "" else out


def _request_text(turns: list[tuple[str, str]]) -> str:
    """The customer's latest request: the last user message that is not an error notice."""
    for role, content in reversed(turns):
        if role == "user" and not content.startswith("Error:"):
            return content
    return ""


def _clerk(last_role: str, last_content: str, request: str, as_text: bool) -> Reply:
    if last_role in ("tool", "ipython"):
        return text(f"Done. The balance is now {json.loads(last_content)['balance']}.")
    nums = _numbers(request)
    if len(nums) < 2:
        return text("How can I help you?")
    args = {"account": nums[-1], "amount": nums[0]}
    return text(json.dumps({"name": "deposit", "parameters": args})) if as_text else calls(("deposit", args))


def ledger_policy(endpoint: str, body: dict[str, Any]) -> Reply:
    """A competent model for the ledger world of ``tests/ledger_world.py``, on either side.

    Clerk (a request with tools, or a raw Llama 3 prompt): deposits what the customer asked for,
    then states the new balance. Customer (a chat request without tools): asks for the deposit in
    its brief, then says thanks and stops.
    """
    if endpoint == "completions":
        turns = _llama3_messages(str(body.get("prompt", "")))
        last = turns[-1] if turns else ("", "")
        return _clerk(last[0], last[1], _request_text(turns), as_text=True)
    messages = body.get("messages", [])
    turns = [(m.get("role", ""), m.get("content") or "") for m in messages]
    if body.get("tools"):
        last = turns[-1] if turns else ("", "")
        return _clerk(last[0], last[1], _request_text(turns), as_text=False)
    system = turns[0][1] if turns and turns[0][0] == "system" else ""
    if not any(role == "assistant" for role, _ in turns):
        amount, account = (_numbers(system.split("deposit", 1)[-1]) + [0, 0])[:2]
        return text(f"Hi, please deposit {amount} into account {account}.")
    return text("Great, thank you! " + STOP)


STOP = "###STOP###"
POLICIES: dict[str, Policy] = {"constant": constant_policy, "ledger": ledger_policy}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--faults", default=",".join(FAULTS))
    ap.add_argument("--policy", choices=sorted(POLICIES), default="constant")
    args = ap.parse_args(argv)
    server = ScriptedServer(POLICIES[args.policy], latency=args.latency, fault_rate=args.fault_rate,
                            faults=[f for f in args.faults.split(",") if f], port=args.port)

    async def run() -> None:
        await server._start()
        print(f"PORT {server.port}", flush=True)
        assert server._stopped is not None
        await server._stopped.wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
