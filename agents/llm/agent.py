"""`agent.type: llm`: any litellm model plays any role.

The role's system prompt, persona and private brief come from the scenario and task (the engine
builds `view.system`); the agent sends the role's perspective (`view.messages`) to the model and
returns its reply as a Message. Roles of kind `user` also get the user-simulator rules
(:data:`~simworld.agents.llm.prompts.USER_SIMULATOR`). Negotiation parties are ordinary tool-using
roles: their preferences are in their brief, their moves are the world's tools.

Modes:

* ``tools`` (default): chat completion with the role's tools as JSON Schema (native function
  calling); parallel tool calls are kept.
* ``llama3``: raw text completion on the Llama 3 prompt simworld renders itself
  (:func:`simworld.llama3.format.render_messages`, the export's serializer), the reply parsed by
  :func:`simworld.llama3.parse.parse_assistant_turn`: a Llama model driven in its training format.

API keys come only from environment variables: the provider's usual one (read by litellm) or the
variable named by `api_key_env`. No parameter can hold a key, so none reaches a trajectory.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import numpy as np
from pydantic import Field, field_validator, model_validator

from simworld.agent import Agent, AgentParams, View
from simworld.agents.llm.client import (HEADER_PARAMS, CallStats, call_with_retries, litellm, not_a_completion,
                                        openai_client, quiet_litellm, redact, redact_env_secrets, redact_value,
                                        register_secret_env, secret_header, secret_name)
from simworld.agents.llm.convert import openai_messages, reply_from_chat, reply_from_text
from simworld.agents.llm.prompts import OPENING, private_facts, role_instructions
from simworld.episode import AgentFailure
from simworld.llama3.parse import special_token_problem
from simworld.registry import register_agent
from simworld.types import Message

# Keys of `provider_params` that the agent sets itself or that would put a secret into a scenario.
_MANAGED = frozenset({"model", "messages", "prompt", "tools", "api_base", "base_url", "timeout", "max_retries",
                      "num_retries", "stream", "temperature", "top_p", "max_tokens", "seed", "stop"})
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LLAMA3_STOP = ["<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"]
# Providers whose OpenAI-compatible servers are often local and keyless.
_OPENAI_COMPATIBLE = ("openai", "text-completion-openai")


class LLMParams(AgentParams):
    """Parameters of `agent.type: llm` (unknown keys are errors)."""

    model: str = Field(min_length=1, description="litellm model id: 'openai/NAME' for any OpenAI-compatible "
                       "server (with api_base), 'anthropic/...', 'ollama/...', 'hosted_vllm/...', ...")
    api_base: str | None = Field(default=None, description="Server URL, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str | None = Field(default=None, description="Name of the environment variable holding the "
                                    "API key (default: the provider's usual variable, read by litellm).")
    mode: Literal["tools", "llama3"] = Field(default="tools", description="'tools': native function calling; "
                                             "'llama3': raw completion on simworld's Llama 3 prompt.")
    client: Literal["auto", "litellm", "openai"] = Field(
        default="auto", description="'litellm': any provider; 'openai': an OpenAI-compatible server through "
        "the openai SDK directly (about half the CPU per call; model 'openai/NAME' or 'NAME'; provider_params "
        "go in the request body); 'auto': 'openai' for an 'openai/' model with an api_base (a self-hosted "
        "OpenAI-compatible server, where litellm would forward to the same SDK), else 'litellm'.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="Sampling temperature (0: the most "
                               "likely tokens).")
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, description="Nucleus sampling: draw from the most "
                                "likely tokens that make up this share of the probability (default: not sent).")
    max_tokens: int = Field(default=1024, ge=1, description="Most tokens the model may write in one turn.")
    seed: int | None = Field(default=None, description="Sampling seed sent where the provider supports it; "
                             "default: one drawn per episode from the episode's seeded RNG.")
    max_retries: int = Field(default=4, ge=0, le=100, description="Retries of a failing model call (429, "
                             "5xx, timeout, dropped connection) before the episode is recorded as failed.")
    timeout: float = Field(default=60.0, gt=0.0, description="Seconds one model call may take.")
    retry_backoff: float = Field(default=1.0, ge=0.0, description="First retry delay (s); doubles per retry, "
                                 "with jitter.")
    retry_backoff_max: float = Field(default=30.0, ge=0.0, description="Longest wait between retries, a "
                                     "server's Retry-After included.")
    stop: list[str] = Field(default_factory=list, description="Extra stop sequences.")
    instructions: str | None = Field(default=None, description="Text appended to the role's system prompt "
                                     "('{stop}' becomes the stop marker). Default: the user-simulator rules "
                                     "for roles of kind user whose prompt does not already mention the stop "
                                     "marker, nothing otherwise.")
    show_private: bool = Field(default=False, description="Also show the role's structured private "
                               "information (the brief is always in the system prompt).")
    provider_params: dict[str, Any] = Field(default_factory=dict, description="Extra litellm/provider "
                                            "parameters, e.g. {top_k: 40} or {extra_body: {...}}.")

    @model_validator(mode="after")
    def _openai_client_model(self) -> LLMParams:
        if self.client == "openai" and "/" in self.model and not self.model.startswith("openai/"):
            raise ValueError(f"client openai talks to OpenAI-compatible servers: model {self.model!r} needs "
                             "client litellm (or an 'openai/' model id)")
        return self

    @property
    def resolved_client(self) -> str:
        if self.client != "auto":
            return self.client
        return "openai" if self.api_base and self.model.startswith("openai/") else "litellm"

    @field_validator("api_base")
    @classmethod
    def _no_credentials_in_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if re.search(r"://[^/]*@", v):
            raise ValueError("api_base must not contain credentials; name an environment variable in api_key_env")
        parts = urlsplit(v)
        for name, _ in parse_qsl(f"{parts.query}&{parts.fragment}", keep_blank_values=True):
            if secret_name(name):
                raise ValueError(f"api_base must not carry a secret in its query string (parameter {name[:40]!r}); "
                                 "name an environment variable in api_key_env")
        if redact(v) != v:
            raise ValueError("api_base holds something that looks like an API key; "
                             "name an environment variable in api_key_env")
        return v

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.match(v):
            raise ValueError("api_key_env is the NAME of an environment variable (letters, digits, _), not a key")
        return v

    @field_validator("provider_params")
    @classmethod
    def _no_managed_or_secret(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if key in _MANAGED:
                raise ValueError(f"provider_params.{key}: set it as the agent parameter, not in provider_params")
        problem = _secret_in(v, "provider_params", headers=False)
        if problem:
            raise ValueError(problem)
        return v


# A JSON Schema (guided_json, response_format) names the fields of the reply under these keys: a
# field called "token" or "api_key" there is data the model fills in, not a secret set here.
_SCHEMA_NAME_KEYS = frozenset({"properties", "patternProperties", "$defs", "definitions"})


def _secret_in(value: Any, path: str, headers: bool, names_are_fields: bool = False) -> str | None:
    """Where in `value` (any depth) a secret-looking name or value is, as one line; None if nowhere.
    Never includes the value itself."""
    advice = "secrets go in environment variables (see api_key_env)"
    if isinstance(value, dict):
        for key, item in value.items():
            name = str(key)
            where = f"{path}.{name[:60]}"
            if not names_are_fields and (secret_name(name) or (headers and secret_header(name))):
                return f"{where}: {advice}"
            found = _secret_in(item, where, headers=not names_are_fields and name.lower() in HEADER_PARAMS,
                               names_are_fields=not names_are_fields and name in _SCHEMA_NAME_KEYS)
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _secret_in(item, f"{path}[{i}]", headers=False)
            if found:
                return found
    elif isinstance(value, str) and redact(value) != value:
        return f"{path}: the value looks like an API key; {advice}"
    return None


@register_agent("llm")
class LLMAgent(Agent):
    """Any litellm model in any role: native tool calls (mode tools) or raw Llama 3 completion (llama3)."""

    Params = LLMParams
    params: LLMParams

    def __init__(self, params: LLMParams, role: str, rng: np.random.Generator) -> None:
        super().__init__(params, role, rng)
        self.stats = CallStats()
        self.invalid_replies = 0
        self.seed = params.seed if params.seed is not None else int(rng.integers(2**31 - 1))
        self._instructions: str | None = None
        if params.api_key_env:
            register_secret_env(params.api_key_env)

    @property
    def agent_id(self) -> str:
        return redact(super().agent_id)

    # -- prompt
    def prompt_messages(self, view: View) -> list[Message]:
        """The messages sent to the model: the role's perspective, its system prompt extended by
        the agent's instructions, and an opening cue when nothing was said to the role yet."""
        msgs = list(view.messages)
        extra = [role_instructions(view.kind, self.params.instructions, view.system)]
        if self.params.show_private:
            extra.append(private_facts(view.private))
        addition = "\n\n".join(e for e in extra if e)
        self._instructions = addition or None
        if addition:
            if msgs and msgs[0].role == "system":
                msgs[0] = Message(role="system", content=(msgs[0].content + "\n\n" + addition).strip())
            else:
                msgs.insert(0, Message(role="system", content=addition))
        if all(m.role == "system" for m in msgs):
            msgs.append(Message(role="user", content=OPENING))
        return msgs

    # -- model calls
    def _provider(self) -> str:
        return self.params.model.split("/", 1)[0] if "/" in self.params.model else ""

    def _api_key(self) -> str | None:
        p = self.params
        if p.api_key_env:
            value = os.environ.get(p.api_key_env)
            if not value:
                raise AgentFailure(f"{self.role}: environment variable {p.api_key_env} (api_key_env) is not set")
            return value
        if p.api_base and self._provider() in _OPENAI_COMPATIBLE and not os.environ.get("OPENAI_API_KEY"):
            return "no-key"  # a local OpenAI-compatible server needs none; the OpenAI client insists on one
        return None

    def _request(self) -> dict[str, Any]:
        p = self.params
        kwargs: dict[str, Any] = {"model": p.model, "temperature": p.temperature, "max_tokens": p.max_tokens,
                                  "seed": self.seed, "timeout": p.timeout, "max_retries": 0, "drop_params": True}
        if p.top_p is not None:
            kwargs["top_p"] = p.top_p
        if p.api_base:
            kwargs["api_base"] = p.api_base
        key = self._api_key()
        if key:
            kwargs["api_key"] = key
        kwargs.update(p.provider_params)
        return kwargs

    def _openai_request(self, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """`client: openai`: the SDK client and the request, litellm's kwargs translated."""
        p = self.params
        client = self._sdk_client(kwargs.pop("api_key", None))
        for name in ("api_base", "drop_params", "max_retries", *p.provider_params):
            kwargs.pop(name, None)
        kwargs["model"] = p.model.removeprefix("openai/")
        if p.provider_params:
            kwargs["extra_body"] = dict(p.provider_params)
        return client, kwargs

    def _sdk_client(self, key: str | None) -> Any:
        """The OpenAI SDK client for `api_base` (it insists on a key; a local server needs none)."""
        p = self.params
        return openai_client(p.api_base, key or os.environ.get("OPENAI_API_KEY") or "no-key", p.timeout)

    async def _call(self, method: str, kwargs: dict[str, Any]) -> Any:
        """The model's response; a 200 that is not a completion fails the episode (AgentFailure)."""
        p = self.params
        part = "text" if method == "atext_completion" else "message"
        if p.resolved_client == "openai":
            client, kwargs = self._openai_request(kwargs)
            fn = client.completions.create if method == "atext_completion" else client.chat.completions.create
            call = lambda: fn(**kwargs)  # noqa: E731
        else:
            fn = getattr(litellm(), method)

            async def call() -> Any:
                with quiet_litellm():
                    return await fn(**kwargs)
        return await call_with_retries(call, stats=self.stats, max_retries=p.max_retries,
                                       timeout=p.timeout, backoff=p.retry_backoff, backoff_max=p.retry_backoff_max,
                                       what=f"{self.role}: model {p.model}",
                                       check=lambda response: not_a_completion(response, part))

    async def observe(self, view: View, taken: Message) -> None:
        """Nothing to catch up on: every request is built from the whole view (no model call for a
        fork's prefix)."""

    async def act(self, view: View) -> Message:
        messages = self.prompt_messages(view)
        kwargs = self._request()
        if self.params.mode == "llama3":
            msg = await self._complete(view, messages, kwargs)
        else:
            msg = await self._chat(view, messages, kwargs)
        msg = _without_env_secrets(msg)
        if not msg.invalid and (problem := special_token_problem(msg)) is not None:
            # the engine refuses it too; here it is counted as this model's invalid reply in either mode
            msg = msg.model_copy(update={"invalid": problem})
        if msg.invalid:
            self.invalid_replies += 1
        return msg

    async def _chat(self, view: View, messages: list[Message], kwargs: dict[str, Any]) -> Message:
        kwargs["messages"] = openai_messages(messages)
        if view.tools:
            kwargs["tools"] = [t.openai() for t in view.tools]
        if self.params.stop:
            kwargs["stop"] = list(self.params.stop)
        response = await self._call("acompletion", kwargs)
        choice = _first_choice(response)
        if choice is None:
            return Message(role="assistant", content="", invalid="empty reply from the model (no choices)")
        message = _field(choice, "message")
        raw_calls = _field(message, "tool_calls") or []
        if not isinstance(raw_calls, list):
            return Message(role="assistant", content=redact(str(raw_calls))[:2000],
                           invalid=f"the model's tool_calls are a {type(raw_calls).__name__}, not a list")
        pairs = []
        for c in raw_calls:
            function = _field(c, "function")
            pairs.append((_field(function, "name"), _field(function, "arguments")))
        finish = _field(choice, "finish_reason")
        reply = reply_from_chat(_field(message, "content"), pairs, view.tools,
                                redact(str(finish))[:100] if finish else None)
        return self._unless_cut_off(reply, response, choice)

    async def _complete(self, view: View, messages: list[Message], kwargs: dict[str, Any]) -> Message:
        from simworld.llama3.format import render_messages

        kwargs["prompt"] = render_messages(messages, view.tools, view.episode.sc.today, add_generation_prompt=True)
        kwargs["stop"] = _LLAMA3_STOP + list(self.params.stop)
        if self.params.resolved_client == "litellm" and self.params.api_base and self._provider() in _OPENAI_COMPATIBLE:
            kwargs["client"] = self._sdk_client(kwargs.get("api_key"))
        response = await self._call("atext_completion", kwargs)
        choice = _first_choice(response)
        if choice is None:
            return Message(role="assistant", content="", invalid="empty reply from the model (no choices)")
        text = _field(choice, "text")
        if not isinstance(text, str):
            return Message(role="assistant", content=redact(str(text))[:2000],
                           invalid=f"the completion's text is a {type(text).__name__}, not a string")
        return self._unless_cut_off(reply_from_text(text, view.tools), response, choice)

    def _unless_cut_off(self, reply: Message, response: Any, choice: Any) -> Message:
        """`reply`, or an invalid move when the server stopped it at `max_tokens`: text cut off
        mid-sentence would reach the other party and the export as a finished turn, and a tool
        call cut off is better explained by the limit than by its broken JSON. Reported by
        ``finish_reason: length``, or by a completion as long as the limit (llama.cpp reports a
        tool call it cut off with ``finish_reason: tool_calls``). Complete, valid tool calls stand."""
        if reply.tool_calls and not reply.invalid:
            return reply
        used = _field(_field(response, "usage"), "completion_tokens")
        limit = self.params.max_tokens
        if _field(choice, "finish_reason") != "length" and not (isinstance(used, int) and used >= limit):
            return reply
        cut = f"the reply was cut off at max_tokens ({limit} tokens)"
        return reply.model_copy(update={"invalid": f"{cut}: {reply.invalid}"[:1000] if reply.invalid else cut})

    # -- provenance
    def provenance(self) -> dict[str, Any]:
        """Model id, provider parameters (never keys), usage, cost, per-call latency, retries."""
        p = self.params
        provider_params: dict[str, Any] = {"temperature": p.temperature, "max_tokens": p.max_tokens,
                                           "seed": self.seed, "timeout": p.timeout, "max_retries": p.max_retries}
        if p.top_p is not None:
            provider_params["top_p"] = p.top_p
        if p.stop:
            provider_params["stop"] = list(p.stop)
        provider_params.update(p.provider_params)
        out: dict[str, Any] = {"model": p.model, "mode": p.mode, "client": p.resolved_client,
                               "api_base": redact(p.api_base) if p.api_base else None,
                               "provider_params": redact_value(provider_params), "instructions": self._instructions,
                               "invalid_replies": self.invalid_replies}
        out.update(self.stats.as_dict())
        return out


def _first_choice(response: Any) -> Any:
    """The first choice of a response `not_a_completion` accepted; None when `choices` is empty
    (the model said nothing: an invalid move, not a fault)."""
    choices = _field(response, "choices")
    return choices[0] if choices else None


def _field(obj: Any, name: str) -> Any:
    """`obj.name` or `obj[name]`: the SDKs build objects without validation, so a part may be a
    plain dict, missing, or of any type. None when absent."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _without_env_secrets(msg: Message) -> Message:
    """`msg` with API-key values from the environment replaced by ``***`` in its content, tool-call
    arguments and reason: a second line of defence against a model or server echoing a key."""
    content = redact_env_secrets(msg.content)
    invalid = redact_env_secrets(msg.invalid) if msg.invalid else msg.invalid
    calls = [c.model_copy(update={"arguments": redact_value(c.arguments, redact_env_secrets)}) for c in msg.tool_calls]
    if content == msg.content and invalid == msg.invalid and all(
            c.arguments == o.arguments for c, o in zip(calls, msg.tool_calls)):
        return msg
    return msg.model_copy(update={"content": content, "invalid": invalid, "tool_calls": calls})

