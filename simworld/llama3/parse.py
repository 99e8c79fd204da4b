"""Parse an assistant turn as a Llama 3 model emits it into a Message.

Forms understood:

* plain text;
* a JSON tool call ``{"name": ..., "parameters": {...}}`` (``"arguments"`` accepted, an optional
  ``"type": "function"``), a JSON list of them, optionally after ``<|python_tag|>``.

Text that looks like a tool call but does not parse raises :class:`ParseError`; the environment
turns that into an invalid move with an error observation. Nothing here evaluates model output.
"""

from __future__ import annotations

from typing import Any

import orjson

from simworld.types import Message, ToolCall


class ParseError(ValueError):
    """The turn looks like a tool call but is malformed."""


PYTHON_TAG = "<|python_tag|>"
_END_TOKENS = ("<|eom_id|>", "<|eot_id|>", "<|end_of_text|>")


def _strip_special(text: str) -> str:
    text = text.strip()
    for tok in _END_TOKENS:
        if text.endswith(tok):
            text = text[: -len(tok)].rstrip()
    return text


def _call_from_obj(obj: Any, index: int) -> ToolCall:
    if not isinstance(obj, dict):
        raise ParseError("a tool call must be a JSON object")
    if obj.get("type") not in (None, "function"):
        raise ParseError(f"unsupported call type {obj.get('type')!r}")
    fn = obj.get("function") if isinstance(obj.get("function"), dict) else None
    if fn is not None:
        obj = fn
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise ParseError("tool call has no 'name'")
    args = obj.get("parameters", obj.get("arguments", {}))
    if isinstance(args, str):
        try:
            args = orjson.loads(args) if args.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"arguments of {name!r} are not valid JSON: {exc}") from None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ParseError(f"arguments of {name!r} must be a JSON object")
    extra = set(obj) - {"name", "parameters", "arguments", "type", "id"}
    if extra:
        raise ParseError(f"unexpected keys in tool call: {', '.join(sorted(extra))}")
    return ToolCall(id=str(obj.get("id") or f"call_{index}"), name=name, arguments=args)


def parse_assistant_turn(text: str) -> Message:
    """Parse one assistant turn. Raises ParseError for a malformed tool call."""
    if not isinstance(text, str):
        raise ParseError(f"an action must be text, not {type(text).__name__}")
    body = _strip_special(text)
    tagged = body.startswith(PYTHON_TAG)
    if tagged:
        body = body[len(PYTHON_TAG):].strip()
    if not body:
        if tagged:
            raise ParseError("empty tool call after <|python_tag|>")
        raise ParseError("empty turn")
    if body[0] in "{[":
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if tagged or body[0] == "{":
                raise ParseError(f"tool call is not valid JSON: {exc}") from None
            return Message(role="assistant", content=text.strip())
        objs = obj if isinstance(obj, list) else [obj]
        if not objs:
            raise ParseError("empty tool call list")
        calls = [_call_from_obj(o, i) for i, o in enumerate(objs)]
        return Message(role="assistant", tool_calls=calls)
    if tagged:
        raise ParseError("text after <|python_tag|> is not a JSON tool call")
    return Message(role="assistant", content=body)
