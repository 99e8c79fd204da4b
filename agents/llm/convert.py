"""Between simworld messages and a model's wire format.

* :func:`openai_messages`: a role's perspective as OpenAI chat messages (assistant `tool_calls`
  with JSON-string arguments, `tool` messages with `tool_call_id`).
* :func:`reply_from_chat` / :func:`reply_from_text`: a model's answer as a simworld Message.
  Malformed output (arguments that are not JSON, an unknown tool, arguments that violate the
  tool's JSON Schema, an empty reply) becomes an *invalid* Message: the raw output as content and
  the reason in `invalid`. The engine records it, counts it and answers with an error notice the
  model sees on its next turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from simworld.errors import suggest
from simworld.llama3.parse import ParseError, parse_assistant_turn
from simworld.types import Message, ToolCall, ToolSpec, content_text


def arguments_json(arguments: dict[str, Any]) -> str:
    return orjson.dumps(arguments).decode()


def openai_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """OpenAI chat messages of one role's perspective (see :func:`simworld.perspective.perspective`)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            item: dict[str, Any] = {"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content}
            if m.name:
                item["name"] = m.name
            out.append(item)
        elif m.role == "assistant" and m.tool_calls and not m.invalid:
            # content "" rather than None: litellm drops None keys, and some servers' chat templates
            # (llama.cpp's chatml-function-calling) then fail on the missing field.
            out.append({"role": "assistant", "content": m.content, "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": arguments_json(c.arguments)}}
                for c in m.tool_calls]})
        else:
            # An invalid turn has no results to pair with its calls: the model sees what it wrote.
            out.append({"role": m.role, "content": m.content})
    return out


# -- validation of tool calls against the role's tool schemas

_validators: dict[int, tuple[ToolSpec, Any]] = {}


def _validator(spec: ToolSpec) -> Any:
    cached = _validators.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    import jsonschema

    cls = jsonschema.validators.validator_for(spec.parameters, default=jsonschema.Draft202012Validator)
    validator = cls(spec.parameters)
    _validators[id(spec)] = (spec, validator)  # the spec is kept alive, so its id is never reused
    return validator


def call_problems(calls: Sequence[ToolCall], tools: Sequence[ToolSpec]) -> list[str]:
    """Why each call is malformed (unknown tool, arguments against the schema); [] if all are fine."""
    by_name = {t.name: t for t in tools}
    problems = []
    for call in calls:
        spec = by_name.get(call.name)
        if spec is None:
            if not by_name:
                problems.append(f"tool {call.name!r} called, but this role has no tools")
            else:
                problems.append(f"unknown tool {call.name!r}{suggest(call.name, by_name)}")
            continue
        errors = sorted(_validator(spec).iter_errors(call.arguments), key=lambda e: [str(p) for p in e.path])
        if errors:
            detail = "; ".join(f"{'.'.join(str(p) for p in e.path) or 'arguments'}: {e.message}" for e in errors[:3])
            problems.append(f"arguments of {call.name!r} violate its schema: {detail}")
    return problems


def _invalid(raw: str, problems: list[str]) -> Message:
    reason = "; ".join(problems)
    return Message(role="assistant", content=raw, invalid=reason[:1000])


def reply_from_chat(content: Any, raw_calls: Sequence[tuple[Any, Any]], tools: Sequence[ToolSpec],
                    finish_reason: str | None = None) -> Message:
    """A chat reply (text and `(name, arguments)` pairs, arguments a JSON string) as a Message.

    `content` may also be a list of OpenAI text parts (joined); content of another type, or a tool
    call whose name is not a string, is an invalid move with the reason."""
    text = content_text(content)
    calls: list[ToolCall] = []
    problems: list[str] = []
    if text is None:
        problems.append(f"the reply's content is a {type(content).__name__}, not text")
        text = str(content)[:2000]
    for i, (name, arguments) in enumerate(raw_calls):
        if not name:
            problems.append(f"tool call {i + 1} has no function name")
            continue
        if not isinstance(name, str):
            problems.append(f"tool call {i + 1} has a function name of type {type(name).__name__}, not a string")
            continue
        if isinstance(arguments, dict):
            args: Any = arguments
        elif arguments is None or (isinstance(arguments, str) and not arguments.strip()):
            args = {}
        else:
            try:
                args = orjson.loads(arguments)
            except (orjson.JSONDecodeError, TypeError) as exc:
                problems.append(f"arguments of {name!r} are not valid JSON: {exc}")
                continue
        if not isinstance(args, dict):
            problems.append(f"arguments of {name!r} must be a JSON object, not {type(args).__name__}")
            continue
        calls.append(ToolCall(id=f"call_{i}", name=name, arguments=args))
    if not problems:
        problems = call_problems(calls, tools)
    if problems:
        shown = [{"name": n if isinstance(n, str) or n is None else str(n),
                  "arguments": a if isinstance(a, (str, dict)) or a is None else str(a)} for n, a in raw_calls]
        raw = (text + "\n" if text else "") + orjson.dumps(shown).decode()
        return _invalid(raw, problems)
    if not calls and not text.strip():
        why = f" (finish_reason={finish_reason})" if finish_reason else ""
        return _invalid(text, [f"empty reply from the model{why}"])
    return Message(role="assistant", content=text, tool_calls=calls)


def reply_from_text(text: str, tools: Sequence[ToolSpec]) -> Message:
    """A raw-completion reply (Llama 3 assistant turn text) as a Message."""
    if not text.strip():
        return _invalid(text, ["empty reply from the model"])
    try:
        msg = parse_assistant_turn(text)
    except ParseError as exc:
        return _invalid(text, [str(exc)])
    problems = call_problems(msg.tool_calls, tools)
    if problems:
        return _invalid(text, problems)
    return msg
