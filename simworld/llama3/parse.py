"""Parse an assistant turn as a Llama 3 model emits it into a Message.

Forms understood (optionally after ``<|python_tag|>``, optionally ending with ``<|eom_id|>`` /
``<|eot_id|>``):

* plain text;
* JSON tool calls: ``{"name": ..., "parameters": {...}}`` (``"arguments"`` accepted, with or
  without ``"type": "function"``, or OpenAI-shaped ``{"type": "function", "function": {...}}``); a
  JSON list of them; several objects one after another (as Meta's ``ChatFormat`` writes parallel
  calls), optionally separated by ``;`` or newlines;
* text followed by one JSON tool call (an assistant message with both content and a call, as
  ``ChatFormat`` writes it);
* ``<function=NAME>{...}</function>`` (one or more);
* the Llama 3.2 pythonic list ``[f(a=1), g(b="x")]``: read with :func:`ast.parse`; argument
  values may only be literals (strings, numbers, booleans, None/null, lists, tuples, dicts of
  those, negative numbers). Names, calls, attribute access, operators: rejected. Nothing here
  evaluates model output.

Text that looks like a tool call but does not parse raises :class:`ParseError`; the environment
turns that into an invalid move with an error observation.
"""

from __future__ import annotations

import ast
import re
import warnings
from typing import Any

import orjson

from simworld.types import Message, ToolCall


class ParseError(ValueError):
    """The turn looks like a tool call but is malformed."""


PYTHON_TAG = "<|python_tag|>"
_END_TOKENS = ("<|eom_id|>", "<|eot_id|>", "<|end_of_text|>")
_FUNCTION_TAG = re.compile(r"<function=([^>\s]+)>(.*?)</function>", re.S)
_CALL_START = re.compile(r'\{\s*"(?:type|name|function)"\s*:')
_MAX_PYTHON_CHARS = 200_000


def _strip_special(text: str) -> str:
    text = text.strip()
    changed = True
    while changed:
        changed = False
        for tok in _END_TOKENS:
            if text.endswith(tok):
                text = text[: -len(tok)].rstrip()
                changed = True
    return text


def _call_from_obj(obj: Any, index: int) -> ToolCall:
    if not isinstance(obj, dict):
        raise ParseError("a tool call must be a JSON object")
    if obj.get("type") not in (None, "function"):
        raise ParseError(f"unsupported call type {obj.get('type')!r}")
    fn = obj.get("function") if isinstance(obj.get("function"), dict) else None
    if fn is not None:
        extra = set(obj) - {"type", "function", "id"}
        if extra:
            raise ParseError(f"unexpected keys in tool call: {', '.join(sorted(extra))}")
        call_id = obj.get("id")
        obj = fn
    else:
        call_id = obj.get("id")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise ParseError("tool call has no 'name'")
    if "parameters" in obj and "arguments" in obj:
        raise ParseError(f"tool call {name!r} has both 'parameters' and 'arguments'")
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
    extra = set(obj) - {"name", "parameters", "arguments", "type", "id", "description"}
    if extra:
        raise ParseError(f"unexpected keys in tool call: {', '.join(sorted(extra))}")
    return ToolCall(id=str(call_id or f"call_{index}"), name=name, arguments=args)


def _json_values(body: str) -> list[Any] | None:
    """Parse `body` as one JSON value or several concatenated ones (separated by space, ``;``).

    Returns None when it is not (entirely) JSON.
    """
    try:
        return [orjson.loads(body)]
    except orjson.JSONDecodeError:
        pass
    # Several objects back to back: split at top-level object boundaries.
    values = []
    depth = 0
    in_str = False
    escape = False
    start = None
    i = 0
    for i, ch in enumerate(body):
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            if depth == 0:
                return None
            in_str = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                return None
            if depth == 0 and start is not None:
                try:
                    values.append(orjson.loads(body[start:i + 1]))
                except orjson.JSONDecodeError:
                    return None
                start = None
        elif depth == 0 and not (ch.isspace() or ch == ";"):
            return None
    if depth != 0 or in_str or len(values) < 2:
        return None
    return values


def _calls_from_json(values: list[Any]) -> list[ToolCall]:
    objs = values[0] if len(values) == 1 and isinstance(values[0], list) else values
    if not objs:
        raise ParseError("empty tool call list")
    return [_call_from_obj(o, i) for i, o in enumerate(objs)]


# ----------------------------------------------------------------------------------------------
# Pythonic list (Llama 3.2)

_NAMED_CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


def _join_surrogates(text: str) -> str:
    """Python keeps JSON-style escaped surrogate pairs (\\ud83d\\ude00) apart; join them."""
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    try:
        return text.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        raise ParseError("string argument holds an unpaired surrogate") from None


def _literal(node: ast.AST) -> Any:
    """The value of a literal expression node; anything that would need evaluation is rejected."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            return _join_surrogates(node.value)
        if isinstance(node.value, (int, float, bool)) or node.value is None:
            return node.value
        raise ParseError(f"unsupported literal {type(node.value).__name__}")
    if isinstance(node, ast.Name) and node.id in _NAMED_CONSTANTS:
        return _NAMED_CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) \
            and isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, (int, float)) \
            and not isinstance(node.operand.value, bool):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            if k is None:
                raise ParseError("'**' is not allowed in tool call arguments")
            key = _literal(k)
            if not isinstance(key, str):
                raise ParseError("dict keys in tool call arguments must be strings")
            out[key] = _literal(v)
        return out
    raise ParseError(f"tool call arguments must be literals, not {type(node).__name__} expressions")


def _calls_from_python(body: str) -> list[ToolCall] | None:
    """Parse ``[f(a=1), g(b="x")]``; None when `body` is not a Python list of calls at all."""
    if len(body) > _MAX_PYTHON_CHARS:
        raise ParseError("tool call list is too long")
    try:
        with warnings.catch_warnings():  # model text like "\\Y" must not warn about escapes
            warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
            tree = ast.parse(body, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    lst = tree.body
    if not isinstance(lst, ast.List) or not lst.elts or not all(isinstance(e, ast.Call) for e in lst.elts):
        return None
    calls = []
    for i, node in enumerate(lst.elts):
        if not isinstance(node.func, ast.Name):
            raise ParseError("a tool call must name a function, e.g. [get_order(order_id=\"#W1\")]")
        if node.args:
            raise ParseError(f"call of {node.func.id!r}: arguments must be passed by keyword")
        args = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise ParseError(f"call of {node.func.id!r}: '**' is not allowed")
            try:
                args[kw.arg] = _literal(kw.value)
            except RecursionError:
                raise ParseError("tool call arguments are nested too deeply") from None
        calls.append(ToolCall(id=f"call_{i}", name=node.func.id, arguments=args))
    return calls


# ----------------------------------------------------------------------------------------------


def _calls_from_function_tags(body: str) -> list[ToolCall]:
    calls = []
    pos = 0
    for i, m in enumerate(_FUNCTION_TAG.finditer(body)):
        if body[pos:m.start()].strip(" \t\r\n;"):
            raise ParseError("text between <function=...> tool calls")
        pos = m.end()
        raw = m.group(2).strip()
        try:
            args = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"arguments of {m.group(1)!r} are not valid JSON: {exc}") from None
        if not isinstance(args, dict):
            raise ParseError(f"arguments of {m.group(1)!r} must be a JSON object")
        calls.append(ToolCall(id=f"call_{i}", name=m.group(1), arguments=args))
    if body[pos:].strip(" \t\r\n;"):
        raise ParseError("text after a <function=...> tool call")
    return calls


def _trailing_call(body: str) -> tuple[str, ToolCall] | None:
    """Split ``text{"type": "function", ...}`` into the text and the call, if it ends that way."""
    for m in _CALL_START.finditer(body):
        if m.start() == 0:
            continue
        try:
            obj = orjson.loads(body[m.start():])
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            return None
        try:
            return body[:m.start()], _call_from_obj(obj, 0)
        except ParseError:
            return None  # a JSON object at the end of prose that is not a call: keep it as text
    return None


def parse_assistant_turn(text: str) -> Message:
    """Parse one assistant turn into a Message. Raises ParseError for a malformed tool call."""
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
    if body.startswith("<function="):
        return Message(role="assistant", tool_calls=_calls_from_function_tags(body))
    if body[0] in "{[":
        values = _json_values(body)
        if values is not None:
            return Message(role="assistant", tool_calls=_calls_from_json(values))
        if body[0] == "[":
            calls = _calls_from_python(body)
            if calls is not None:
                return Message(role="assistant", tool_calls=calls)
        if tagged or body[0] == "{":
            try:
                orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise ParseError(f"tool call is not valid JSON: {exc}") from None
        return Message(role="assistant", content=body)
    if tagged:
        raise ParseError("text after <|python_tag|> is not a tool call")
    if body.endswith("}"):
        split = _trailing_call(body)
        if split is not None:
            return Message(role="assistant", content=split[0], tool_calls=[split[1]])
    if body.endswith("</function>"):
        first = _FUNCTION_TAG.search(body)
        if first is not None:
            return Message(role="assistant", content=body[:first.start()].rstrip(),
                           tool_calls=_calls_from_function_tags(body[first.start():]))
    return Message(role="assistant", content=body)
