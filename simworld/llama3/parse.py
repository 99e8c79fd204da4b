"""Parse an assistant turn as a Llama 3 model emits it into a Message.

Forms understood (optionally after ``<|python_tag|>``; ``<|eom_id|>`` / ``<|eot_id|>`` /
``<|end_of_text|>`` at the end are dropped):

* plain text;
* JSON tool calls: ``{"name": NAME, "parameters": {...}}`` (``"arguments"`` accepted, as an object
  or a JSON string; ``"type": "function"`` optional), or OpenAI-shaped ``{"type": "function",
  "function": {"name": ..., "arguments": ...}}``; a JSON list of them; several objects one after
  another (as Meta's ``ChatFormat`` writes parallel calls), optionally separated by ``;`` or
  whitespace;
* ``<function=NAME>{...}</function>``, one or more;
* the Llama 3.2 pythonic list ``[f(a=1), g(b="x")]``: read with :func:`ast.parse`; argument
  values may only be literals (strings, numbers, booleans, None/null/true/false, lists, tuples,
  dicts with string keys, negative numbers). Names, calls, attribute access, operators: rejected.
  Nothing here evaluates model output;
* text followed by calls in any of these forms (``ChatFormat`` writes a message with both content
  and a call as the text, then the call).

What a call is
--------------
* A JSON object is a call when it has a call's keys and no others: ``name`` and ``parameters`` (or
  ``arguments``), optionally ``"type": "function"``. ``parameters`` is required: Meta's format
  always writes it (``"parameters": {}`` for a call without arguments) and Meta's own decoder reads
  it unconditionally; without it, every ``{"name": ...}`` record in prose would be a call. An
  object with ``parameters``/``arguments``, ``"type": "function"`` or a ``function`` object is a
  call *attempt*: if it is not a valid call, that is a ParseError.
* A tool name is identifier-like (:func:`is_tool_name`): a Python identifier (Unicode letters and
  digits, ``_``, not starting with a digit) in which ``-`` and ``.`` may also appear after the first
  character (``get-order``, ``crm.lookup``). World tools are named by Python functions.
* Argument values must be what a trajectory line (orjson) holds exactly: integers in
  [-2**63, 2**64-1], finite floats, containers nested at most :data:`simworld.types.MAX_ARGUMENT_DEPTH` deep, and
  each argument given once. A JSON integer outside that range is an error, never read as a float.

Call, text or ParseError
------------------------
* The whole turn is calls: a Message with those calls and empty content.
* Text followed by calls at its very end: content is that text exactly (with its trailing
  whitespace), then the calls. A call in the middle of prose is prose, in every form.
* A turn that *begins like a call* must be calls only, else it is a ParseError: after
  ``<|python_tag|>``; a turn that is entirely one JSON document or begins with ``{`` (JSON is the
  Llama 3.1 call syntax), or with ``[{"name":`` (``"type"``, ``"function"``); one that begins with
  ``<function=``; or with ``[name(`` followed by ``)`` or ``arg=`` (a pythonic call list). So
  ``[get_order(order_id="#W1"`` (truncated), ``[f(a=1))]``, ``[f(a=1)] done``, ``{not json`` and
  ``{"name": "f", "parameters": {}} ok`` are errors, while ``[Note] checking now.``,
  ``[1] first point`` and ``Customer record: {"name": "Alice"}`` are text.
* A call attempt that is malformed (a bad name, other keys, arguments that are not an object, a
  non-literal or unstorable value, an argument given twice) is a ParseError wherever it stands.

Control tokens
--------------
Llama 3 special tokens (``<|eot_id|>``, ``<|start_header_id|>``, ``<|begin_of_text|>``,
``<|reserved_special_token_N|>``, ...; :data:`simworld.llama3.format.SPECIAL_TOKENS`) are structure,
never text. Only these positions are accepted: ``<|python_tag|>`` at the start of the turn or just
before its calls, and end tokens (``<|eom_id|>``, ``<|eot_id|>``, ``<|end_of_text|>``) at its end.
A special token anywhere else (in the text, a tool name, an argument value or key, spelt out or
as JSON escapes) is a ParseError: rendered into a later prompt, it would forge turns
(a ``system`` header in another role's prompt). :func:`special_token_problem` applies the same
rule to a structured Message; :func:`escape_special_tokens` writes such text so that it holds no
token (the engine records refused turns that way).

Lookalikes: any other ``<|NAME|>`` shape (or DeepSeek's ``<｜NAME｜>``), such as ``<|im_start|>``,
``<|endoftext|>``, ``<|user|>`` or ``<|foo|>``, is refused the same way (:func:`control_shape_in`).
Llama 3's tokenizer reads them as plain text (llama-models encodes ``<|foo|>`` as five ordinary
tokens, with or without special tokens allowed), so they forge nothing in the Llama 3 export; but
they are control tokens of other chat templates (``<|im_end|>`` for ChatML models, ``<|eot|>`` and
``<|header_start|>`` for Llama 4, whose tokenizer in llama-models makes them single special
tokens), which the OpenAI, TRL and ShareGPT exports are trained with through tokenizers that read
special tokens in text; and a model that writes them is leaking its own template, which training
data should not teach. A turn that holds one is an invalid move.

The environment turns a ParseError into an invalid move with an error observation.

Round trips
-----------
What :func:`simworld.llama3.format.render_tool_calls` and ``render_messages`` write parses back to
the same calls and content, except, by design:

* a turn is read stripped: content's leading and trailing whitespace is not kept, and
  whitespace-only content is ``""`` (content before a call keeps its trailing whitespace);
* end tokens at the end of a turn and ``<|python_tag|>`` at its start or just before its calls
  are structure, never content; content or arguments holding a special token are refused
  (ParseError), never read back;
* content that on its own would not read as text (it begins like a call, is entirely JSON, or
  ends with a call) is read as calls, or rejected.

``render_tool_calls`` refuses (ValueError) what its form cannot write: names that are not tool
names in the ``<function=...>`` form, names Python cannot spell and nesting deeper than Python's
parser takes in the pythonic form.
"""

from __future__ import annotations

import ast
import json
import re
import unicodedata
import warnings
from typing import Any

import orjson

from simworld.types import INT_RANGE, Message, ToolCall, argument_problem


class ParseError(ValueError):
    """The turn looks like a tool call but is malformed."""


PYTHON_TAG = "<|python_tag|>"
_END_TOKENS = ("<|eom_id|>", "<|eot_id|>", "<|end_of_text|>")
_FUNCTION_OPEN = "<function="
_FUNCTION_CLOSE = "</function>"
# ast.parse takes ~500 bytes of memory per character outside string literals (every one can be a node).
_MAX_PYTHON_CODE_CHARS = 200_000

_JSON_CALL_START = re.compile(r'\{|\[\s*\{\s*"(?:type|name|function)"\s*:')
_PYTHON_CALLS_START = re.compile(r"\[\s*[^\W\d]\w*\(\s*(?:\)|[^\W\d]\w*\s*=)")
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_JSON_STRING_OR_KEY = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"(\s*:)?', re.S)
_DIGITS_19 = re.compile(r"\d{19}")
_LONG_INT = re.compile(r"(?<![\d.eE+-])-?\d{19,}(?![\d.eE])")
_JSON_BRACES = re.compile(r'[{}"]')
_PYTHON_BRACKETS = re.compile(r"""[\[\]"']""")
_BACKSLASHES = re.compile(r"\\*")
# A string left open runs to the end of its line (or text): matched once, never retried inside.
_PYTHON_STRINGS_AND_COMMENTS = re.compile(
    r'"""[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*(?:""")?'
    r"|'''[^'\\]*(?:(?:\\.|'(?!''))[^'\\]*)*(?:''')?"
    r'|"[^"\\\r\n]*(?:\\.[^"\\\r\n]*)*"?'
    r"|'[^'\\\r\n]*(?:\\.[^'\\\r\n]*)*'?"
    r"|#[^\r\n]*", re.S)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_KEYWORD_NAME = re.compile(r"[^\s=\\#]+")
_NOT_JSON = object()


def is_tool_name(name: Any) -> bool:
    """True for an identifier-like tool name: a Python identifier, ``-`` and ``.`` allowed after the first character."""
    return isinstance(name, str) and name[:1] not in ("", "-", ".") \
        and name.replace("-", "_").replace(".", "_").isidentifier()


def _shown(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


# ----------------------------------------------------------------------------------------------
# Values


def _check_value(value: Any, name: str) -> None:
    """Raise ParseError for arguments a trajectory line cannot hold exactly (:func:`~simworld.types.argument_problem`)."""
    problem = argument_problem(value, _shown(name))
    if problem is not None:
        raise ParseError(problem)


def _check_json_ints(text: str) -> None:
    """orjson reads an integer beyond 64 bits as a float: refuse it rather than change the value."""
    if _DIGITS_19.search(text) is None:
        return
    for m in _LONG_INT.finditer(_JSON_STRING.sub('""', text)):
        literal = m.group()
        if len(literal.lstrip("-")) > 20 or not INT_RANGE[0] <= int(literal) <= INT_RANGE[1]:
            raise ParseError(f"integer {_shown(literal, 30)} is beyond 64 bits")


def _count_keys(value: Any) -> int:
    if isinstance(value, dict):
        return len(value) + sum(_count_keys(v) for v in value.values())
    if isinstance(value, list):
        return sum(_count_keys(v) for v in value)
    return 0


def _check_json_keys(text: str, value: Any) -> None:
    """orjson keeps the last of repeated keys: refuse them, as a pythonic call refuses an argument given twice."""
    if sum(1 for m in _JSON_STRING_OR_KEY.finditer(text) if m.group(1)) != _count_keys(value):
        raise ParseError("a key is given twice in a tool call")


def _load_json(text: str) -> Any:
    """The JSON value of a call: orjson's reading, refusing what it would change (integers beyond
    64 bits, repeated keys). The checks run on valid JSON only, where every string is closed."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"tool call is not valid JSON: {exc}") from None
    _check_json_ints(text)
    _check_json_keys(text, value)
    return value


def _lenient_json(text: str) -> Any:
    """The JSON value of `text` read as permissively as Python does (to see whether it tries to be
    a call), or _NOT_JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _is_call_attempt(value: Any) -> bool:
    return isinstance(value, dict) and ("parameters" in value or "arguments" in value
                                        or value.get("type") == "function" or isinstance(value.get("function"), dict))


# ----------------------------------------------------------------------------------------------
# JSON calls

_Call = tuple[str, dict[str, Any], "str | None"]  # name, arguments, id given by the model


def _no_other_keys(obj: dict[str, Any], allowed: set[str]) -> None:
    extra = set(obj) - allowed
    if extra:
        raise ParseError(f"unexpected keys in tool call: {', '.join(_shown(k, 30) for k in sorted(extra))}")


def _call_from_obj(obj: Any) -> _Call:
    if not isinstance(obj, dict):
        raise ParseError("a tool call must be a JSON object")
    call_id = None
    if isinstance(obj.get("function"), dict):  # OpenAI-shaped
        _no_other_keys(obj, {"type", "function", "id"})
        if obj.get("type", "function") != "function":
            raise ParseError(f"unsupported call type {_shown(str(obj['type']))}")
        call_id = obj.get("id") if isinstance(obj.get("id"), str) and obj.get("id") else None
        obj = obj["function"]
        _no_other_keys(obj, {"name", "parameters", "arguments"})
    else:
        if obj.get("type", "function") != "function":
            raise ParseError(f"unsupported call type {_shown(str(obj['type']))}")
        _no_other_keys(obj, {"type", "name", "parameters", "arguments"})
    name = obj.get("name")
    if not isinstance(name, str):
        raise ParseError("tool call has no 'name'")
    if not is_tool_name(name):
        raise ParseError(f"{_shown(name)} is not a tool name (letters, digits, '_', '-', '.')")
    if "parameters" in obj and "arguments" in obj:
        raise ParseError(f"tool call {_shown(name)} has both 'parameters' and 'arguments'")
    if "parameters" not in obj and "arguments" not in obj:
        raise ParseError(f"tool call {_shown(name)} has no 'parameters' (write \"parameters\": {{}} for none)")
    args = obj.get("parameters", obj.get("arguments"))
    if isinstance(args, str):
        args = _load_json(args) if args.strip() else {}
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ParseError(f"arguments of {_shown(name)} must be a JSON object")
    _check_value(args, name)
    return name, args, call_id


def _calls_from_json_document(document: Any, text: str) -> list[_Call]:
    items = document if isinstance(document, list) else [document]
    if not items:
        raise ParseError("empty tool call list")
    if not all(_is_call_attempt(item) for item in items):
        raise ParseError('a turn that is only JSON must be tool calls: {"name": NAME, "parameters": {...}}')
    _check_json_ints(text)
    _check_json_keys(text, document)
    return [_call_from_obj(item) for item in items]


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
            if key in out:
                raise ParseError(f"key {_shown(key)} is given twice in a tool call")
            out[key] = _literal(v)
        return out
    raise ParseError(f"tool call arguments must be literals, not {type(node).__name__} expressions")


def _python_call_list(source: str) -> ast.List | str:
    """The ``[f(...), ...]`` node `source` consists of, or why it is not one."""
    code, strings = _PYTHON_STRINGS_AND_COMMENTS.subn("", source)
    if len(code) + strings > _MAX_PYTHON_CODE_CHARS:
        return "the tool call list is too long"
    try:
        with warnings.catch_warnings():  # model text like "\\Y" must not warn about escapes
            warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
            tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        return f"it is not valid Python ({exc.msg})"
    except (ValueError, RecursionError, MemoryError) as exc:  # NUL, lone surrogates, 4300+ digit ints
        return f"it is not valid Python ({str(exc)[:80] or type(exc).__name__})"
    node = tree.body
    if not isinstance(node, ast.List) or not node.elts or not all(isinstance(e, ast.Call) for e in node.elts):
        return 'it is not a list of calls like [get_order(order_id="#W1")]'
    return node


class _Spelling:
    """The source spelling of identifiers: ast gives them NFKC-normalised (µ becomes μ), and
    positions in UTF-8 bytes per line."""

    def __init__(self, source: str) -> None:
        self.lines = [line.encode("utf-8") for line in _LINE_BREAK.split(source)]

    def _text(self, lineno: int, col: int, end_lineno: int, end_col: int) -> str:
        if lineno == end_lineno:
            return self.lines[lineno - 1][col:end_col].decode("utf-8")
        pieces = [self.lines[lineno - 1][col:], *self.lines[lineno:end_lineno - 1], self.lines[end_lineno - 1][:end_col]]
        return b"\n".join(pieces).decode("utf-8")

    def name(self, node: ast.Name) -> str:
        return self._checked(self._text(node.lineno, node.col_offset, node.end_lineno, node.end_col_offset), node.id)

    def keyword(self, kw: ast.keyword) -> str:
        text = self._text(kw.lineno, kw.col_offset, kw.value.lineno, kw.value.col_offset)
        m = _KEYWORD_NAME.match(text)
        return self._checked(m.group() if m else "", kw.arg or "")

    @staticmethod
    def _checked(original: str, normalised: str) -> str:
        if unicodedata.normalize("NFKC", original) != normalised:
            raise ParseError(f"cannot read the name {_shown(normalised)} as written")
        return original


def _calls_from_python(node: ast.List, source: str) -> list[_Call]:
    spelling = None if source.isascii() else _Spelling(source)
    calls = []
    for call in node.elts:
        if not isinstance(call.func, ast.Name):
            raise ParseError('a tool call must name a function, e.g. [get_order(order_id="#W1")]')
        name = spelling.name(call.func) if spelling else call.func.id
        if not is_tool_name(name):
            raise ParseError(f"{_shown(name)} is not a tool name")
        if call.args:
            raise ParseError(f"call of {_shown(name)}: arguments must be passed by keyword")
        args: dict[str, Any] = {}
        for kw in call.keywords:
            if kw.arg is None:
                raise ParseError(f"call of {_shown(name)}: '**' is not allowed")
            key = spelling.keyword(kw) if spelling else kw.arg
            if key in args:
                raise ParseError(f"call of {_shown(name)} passes {_shown(key)} twice")
            try:
                args[key] = _literal(kw.value)
            except RecursionError:
                raise ParseError("tool call arguments are nested too deeply") from None
        _check_value(args, name)
        calls.append((name, args, None))
    return calls


# ----------------------------------------------------------------------------------------------
# Calls at the end of a turn, read backwards so each character is looked at a bounded number of times


def _skip_space_back(text: str, end: int, separators: str = "") -> int:
    while end > 0 and (text[end - 1].isspace() or text[end - 1] in separators):
        end -= 1
    return end


def _opening_before(rev: str, end: int, brackets: re.Pattern[str]) -> int | None:
    """Index of the bracket that opens the one ending at `end` (text = rev[::-1]), skipping string
    literals, or None. Works over the reversed text: its cost is the length of the bracketed span."""
    n = len(rev)
    close = rev[n - end]
    opening = {"}": "{", "]": "["}[close]
    depth = 0
    i = n - end
    while True:
        m = brackets.search(rev, i)
        if m is None:
            return None
        ch = m.group()
        i = m.end()
        if ch == close:
            depth += 1
        elif ch == opening:
            depth -= 1
            if depth == 0:
                return n - i
        elif ch in "\"'":  # the end of a string literal: its start is the next such quote not escaped
            while True:
                j = rev.find(ch, i)
                if j < 0:
                    return None
                i = j + 1
                if (_BACKSLASHES.match(rev, i).end() - i) % 2 == 0:
                    break


def _json_call_before(body: str, rev: str, end: int) -> tuple[int, list[_Call]] | None:
    start = _opening_before(rev, end, _JSON_BRACES)
    if start is None:
        return None
    text = body[start:end]
    if not _is_call_attempt(_lenient_json(text)):
        return None  # a JSON object that is not a call: prose
    return start, [_call_from_obj(_load_json(text))]


def _tag_call_before(body: str, rev: str, end: int) -> tuple[int, list[_Call]] | None:
    close = end - len(_FUNCTION_CLOSE)
    if body.rfind(_FUNCTION_OPEN, 0, close) < 0:
        return None  # "</function>" in prose
    args_end = _skip_space_back(body, close)
    args_start = args_end
    if body.endswith("}", 0, args_end):
        args_start = _opening_before(rev, args_end, _JSON_BRACES)
        if args_start is None:
            raise ParseError("the arguments of a <function=...> tool call are not a JSON object")
    name_end = _skip_space_back(body, args_start)
    if not body.endswith(">", 0, name_end):
        raise ParseError("malformed <function=NAME>{...}</function> tool call")
    start = body.rfind(_FUNCTION_OPEN, 0, name_end - 1)
    if start < 0:
        raise ParseError("malformed <function=NAME>{...}</function> tool call")
    name = body[start + len(_FUNCTION_OPEN):name_end - 1]
    if not is_tool_name(name):
        raise ParseError(f"{_shown(name)} is not a tool name (letters, digits, '_', '-', '.')")
    args = _load_json(body[args_start:args_end]) if args_start < args_end else {}
    if not isinstance(args, dict):
        raise ParseError(f"arguments of {_shown(name)} must be a JSON object")
    _check_value(args, name)
    return start, [(name, args, None)]


def _python_calls_before(body: str, rev: str, end: int) -> tuple[int, list[_Call]] | None:
    start = _opening_before(rev, end, _PYTHON_BRACKETS)
    if start is None or not _PYTHON_CALLS_START.match(body, start):
        return None
    node = _python_call_list(body[start:end])
    if isinstance(node, str):
        raise ParseError(f"malformed tool call list: {node}")
    return start, _calls_from_python(node, body[start:end])


def _trailing_calls(body: str) -> tuple[str, list[_Call]] | None:
    """(text, calls) when `body` ends with calls of one form, else None."""
    rev = body[::-1]
    pieces: list[list[_Call]] = []
    start = len(body)
    form = None
    while True:
        end = _skip_space_back(body, start, ";") if pieces else start
        if body.endswith("}", 0, end) and form in (None, "json"):
            form, piece = "json", _json_call_before(body, rev, end)
        elif body.endswith(_FUNCTION_CLOSE, 0, end) and form in (None, "tag"):
            form, piece = "tag", _tag_call_before(body, rev, end)
        elif body.endswith("]", 0, end) and form is None:  # one pythonic list holds all its calls
            form, piece = "python", _python_calls_before(body, rev, end)
        else:
            piece = None
        if piece is None:
            break
        start = piece[0]
        pieces.append(piece[1])
    if not pieces:
        return None
    text = body[:start]
    before_tag = _skip_space_back(text, len(text))
    if text.endswith(PYTHON_TAG, 0, before_tag):
        text = text[:before_tag - len(PYTHON_TAG)]
    return text, [call for piece in reversed(pieces) for call in piece]


# ----------------------------------------------------------------------------------------------


def _call_attempt_problem(text: str) -> str | None:
    """Why `text`, which begins like a tool call, is not calls only; None when it does not begin like one."""
    if text.startswith(_FUNCTION_OPEN):
        return "a turn that begins with <function=NAME> must be <function=NAME>{...}</function> calls only"
    if _PYTHON_CALLS_START.match(text):
        node = _python_call_list(text)
        return f"malformed tool call list: {node}" if isinstance(node, str) \
            else "a turn that begins with a tool call list must be that list only"
    if _JSON_CALL_START.match(text):
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            if "after document" not in str(exc):
                return f"tool call is not valid JSON: {exc}"
        return 'a turn that begins with "{" must be tool calls only, each {"name": NAME, "parameters": {...}}'
    return None


def _strip_special(text: str) -> str:
    end = _skip_space_back(text, len(text))
    found = True
    while found:
        found = False
        for tok in _END_TOKENS:
            if text.endswith(tok, 0, end):
                end = _skip_space_back(text, end - len(tok))
                found = True
    return text[:end].lstrip()


_TOKEN_SPELLING = re.compile(r"<\|([A-Za-z0-9_]{1,64})\|>")


def special_token_in(text: str) -> str | None:
    """The name of a Llama 3 special token written in `text` (``eot_id`` for ``<|eot_id|>``), or None."""
    from simworld.llama3.format import contains_special_token  # format imports this module

    if not contains_special_token(text):
        return None
    for m in _TOKEN_SPELLING.finditer(text):
        if contains_special_token(m.group()):
            return m.group(1)
    return "reserved_special_token"  # the bare prefix, which is all SPECIAL_TOKENS names of those


def _token_refusal(name: str, where: str) -> str:
    # The token is named without its brackets: this text reaches the role's next prompt.
    return f"a Llama 3 control token ({name}) in {where}: control tokens are structure, never text"


# A control token's shape in any chat template: <|NAME|>, or DeepSeek's fullwidth bars <｜NAME｜>. NAME holds
# no quote or backslash, so that one found in a JSON dump or a call list lies inside a single string.
_CONTROL_SHAPE = re.compile(r"<[|｜]([^\s|｜<>\"'\\]{1,64})[|｜]>")
_PLAIN_NAME = re.compile(r"[\w.:-]{1,64}")


def control_shape_in(text: str) -> str | None:
    """The name of the first ``<|NAME|>``-shaped marker in `text` (``im_end`` for ``<|im_end|>``),
    Llama 3 special token or lookalike, or None."""
    if "<|" not in text and "<｜" not in text:
        return None
    m = _CONTROL_SHAPE.search(text)
    return m.group(1) if m else None


def _shape_refusal(name: str, where: str) -> str:
    shown = name if _PLAIN_NAME.fullmatch(name) else _shown(name, 20)  # never the marker itself
    return f"a marker shaped like a chat-template control token ({shown}) in {where}: such markers are never text"


def _token_problem(text: str, where: str) -> str | None:
    name = special_token_in(text)
    if name is not None:
        return _token_refusal(name, where)
    name = control_shape_in(text)
    return _shape_refusal(name, where) if name is not None else None


def special_token_problem(msg: Message) -> str | None:
    """Why `msg` holds a Llama 3 special token, or a marker shaped like a control token
    (``<|im_end|>``, ``<|foo|>``), where a turn's text or calls go (its content, a tool name, an
    argument key or value), or None. A special token would forge structure in every prompt the turn
    is rendered into; a lookalike would in other chat formats (see the module docstring). The
    arguments must be JSON values (as a stored Message's are)."""
    problem = _token_problem(msg.content, "the text")
    if problem is not None:
        return problem
    for call in msg.tool_calls:
        problem = _token_problem(call.name, "a tool name")
        if problem is not None:
            return problem
        # No token holds a JSON delimiter, so one in the dump lies inside a single key or string.
        problem = _token_problem(orjson.dumps(call.arguments).decode(), f"the arguments of {_shown(call.name)}")
        if problem is not None:
            return problem
    return None


def escape_special_tokens(text: str) -> str:
    """`text` unchanged when it holds no Llama 3 special token and no control-token shape, else
    with every ``<|`` written ``<\\|`` (every ``<|`` of a text with a special token; the ``<|`` or
    ``<｜`` of each lookalike otherwise), so that no tokenizer reads a control token in it (idempotent)."""
    if special_token_in(text) is not None:
        text = text.replace("<|", "<\\|")
    if control_shape_in(text) is None:
        return text
    return _CONTROL_SHAPE.sub(lambda m: m.group()[0] + "\\" + m.group()[1:], text)


def _message(content: str, calls: list[_Call]) -> Message:
    return Message(role="assistant", content=content,
                   tool_calls=[ToolCall(id=call_id or f"call_{i}", name=name, arguments=args)
                               for i, (name, args, call_id) in enumerate(calls)])


def _parse_body(body: str) -> Message:
    if body[0] in "{[":
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            document = _NOT_JSON
        if document is not _NOT_JSON:
            return _message("", _calls_from_json_document(document, body))
        if body[0] == "[" and (body[-1] == "]" or _PYTHON_CALLS_START.match(body)):
            node = _python_call_list(body)
            if not isinstance(node, str):
                return _message("", _calls_from_python(node, body))
    if body[-1] in "}]>":
        split = _trailing_calls(body)
        if split is not None:
            text, calls = split
            if text.strip() and _call_attempt_problem(text) is not None:
                raise ParseError("text between tool calls")
            return _message(text if text.strip() else "", calls)
    problem = _call_attempt_problem(body)
    if problem is not None:
        raise ParseError(problem)
    return Message(role="assistant", content=body)


def parse_assistant_turn(text: str) -> Message:
    """Parse one assistant turn into a Message (see the module docstring for the rules).

    Raises ParseError for a turn that tries to be a tool call and is not a valid one.
    """
    if not isinstance(text, str):
        raise ParseError(f"an action must be text, not {type(text).__name__}")
    body = _strip_special(text)
    tagged = body.startswith(PYTHON_TAG)
    if tagged:
        body = body[len(PYTHON_TAG):].lstrip()
    if not body:
        raise ParseError("empty tool call after the python_tag token" if tagged else "empty turn")
    # Before parsing, so that no error below quotes a token; <|python_tag|> is checked once its place is known.
    problem = _token_problem(body.replace(PYTHON_TAG, ""), "the turn")
    if problem is not None:
        raise ParseError(problem)
    msg = _parse_body(body)
    if tagged and (msg.content or not msg.tool_calls):
        raise ParseError("text after the python_tag token is not a tool call")
    problem = special_token_problem(msg)
    if problem is not None:
        raise ParseError(problem)
    return msg
