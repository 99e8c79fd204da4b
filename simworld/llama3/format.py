"""Serialize conversations as Llama 3.1 text, exactly as Meta's reference `ChatFormat` encodes them.

A conversation becomes::

    <|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n SYSTEM <|eot_id|>
    <|start_header_id|>user<|end_header_id|>\\n\\n TEXT <|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n {"type": "function", "name": ..., "parameters": ...}<|eom_id|>
    <|start_header_id|>ipython<|end_header_id|>\\n\\n RESULT <|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n TEXT <|eot_id|>

(no line breaks between messages). The system message opens with ``Environment: ipython`` (when the
role has tools), the knowledge cutoff and the scenario's ``Today Date`` (never the wall clock),
then the tool definitions in the text of Meta's ``JsonCustomToolGenerator`` (the Llama 3.1
JSON custom-tool prompt), then the role's own system prompt.

An assistant turn that calls a tool ends with ``<|eom_id|>`` (the model expects a tool result);
one that answers in text ends with ``<|eot_id|>``. Llama 3.1 calls one tool per message, so an
assistant message with several calls is split into consecutive assistant turns, each followed by
its result (:func:`llama3_messages`). Tool calls are encoded like Meta's
``ToolUtils.encode_tool_call(..., ToolPromptFormat.json)`` (``json.dumps`` with its defaults).

The public entry points:

* :func:`render_messages`: the prompt/training text of a message list (used by the LLM agent's
  raw-completion mode with ``add_generation_prompt=True``);
* :func:`llama3_messages`: the normalized message dicts that text is made of (what an export
  sample stores in ``messages``);
* :func:`render_with_spans`: text plus character spans of the assistant turns (loss masks);
* :func:`render_tool_calls`: one assistant turn's calls in the JSON, ``<function=...>`` or
  pythonic-list form (all three are parsed back by :mod:`simworld.llama3.parse`).
"""

from __future__ import annotations

import datetime as dt
import json
import keyword
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from simworld.llama3.parse import is_tool_name
from simworld.types import Message, ToolCall, ToolSpec

BEGIN = "<|begin_of_text|>"
EOT = "<|eot_id|>"
EOM = "<|eom_id|>"
PYTHON_TAG = "<|python_tag|>"
KNOWLEDGE_CUTOFF = "December 2023"
SPECIAL_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eom_id|>", "<|eot_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>", "<|image|>",
                  "<|step_id|>", "<|reserved_special_token_")

HEADERS = {role: f"<|start_header_id|>{name}<|end_header_id|>\n\n" for role, name in
           (("system", "system"), ("user", "user"), ("assistant", "assistant"), ("tool", "ipython"),
            ("ipython", "ipython"))}

CallStyle = Literal["json", "function_tag", "python_list"]


def format_date(today: dt.date | str) -> str:
    """``21 September 2024``: Meta's ``%d %B %Y`` (zero-padded day, English month)."""
    if isinstance(today, str):
        today = dt.date.fromisoformat(today)
    return f"{today.day:02d} {_MONTHS[today.month - 1]} {today.year}"


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


def contains_special_token(text: str) -> bool:
    """True when `text` holds a literal Llama 3 special token (training on it would inject control tokens)."""
    # ("<" first: a one-character search is a memchr, "<|" a slower one, and most texts hold no "<")
    return "<" in text and "<|" in text and any(tok in text for tok in SPECIAL_TOKENS)


# ----------------------------------------------------------------------------------------------
# System prompt and tool definitions


def _spec_fields(tool: ToolSpec | dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    if isinstance(tool, ToolSpec):
        return tool.name, tool.description, tool.parameters
    fn = tool.get("function", tool)
    return fn["name"], fn.get("description", ""), fn.get("parameters") or {}


def tool_definitions(tools: Iterable[ToolSpec | dict[str, Any]]) -> str:
    """The tool block of the system prompt, in the text Meta's ``JsonCustomToolGenerator`` renders.

    Each parameter appears with its description (empty when the schema has none); like Meta's
    generator, types are written as ``"object"`` and parameters are listed in schema order.
    """
    lines = ["Answer the user's question by making use of the following functions if needed.",
             "If none of the function can be used, please say so.",
             "Here is a list of functions in JSON format:"]
    blocks = "\n".join(_tool_block(t) for t in tools)
    return "\n".join(lines) + "\n" + blocks + "\n\nReturn function calls in JSON format."


_BLOCKS: dict[int, tuple[Any, str]] = {}


def _tool_block(tool: ToolSpec | dict[str, Any]) -> str:
    # Memoised per tool object (held in the cache, so its id cannot be reused): worlds hand out the
    # same ToolSpec objects for every episode, and exports render millions of system prompts.
    cached = _BLOCKS.get(id(tool))
    if cached is not None and cached[0] is tool:
        return cached[1]
    name, description, parameters = _spec_fields(tool)
    props = parameters.get("properties") or {}
    required_set = set(parameters.get("required") or ())
    required = [p for p in props if p in required_set]
    entries = []
    for pname, pschema in props.items():
        pdesc = pschema.get("description", "") if isinstance(pschema, dict) else ""
        entries.append("\n".join([
            "                {",
            f'                    "{pname}": {{',
            '                        "type": "object",',
            f'                        "description": "{pdesc}"',
            "                    }",
            "                }",
        ]))
    text = "\n".join([
        "{",
        '    "type": "function",',
        '    "function": {',
        f'        "name": "{name}",',
        f'        "description": "{description}",',
        '        "parameters": {',
        '            "type": "object",',
        '            "properties": [' + ("\n" + ",\n".join(entries) if entries else ""),
        "            ],",
        f'            "required": {_jinja_tojson(required)}',
        "        }",
        "    }",
        "}",
    ])
    if len(_BLOCKS) >= 4096:
        _BLOCKS.clear()
    _BLOCKS[id(tool)] = (tool, text)
    return text


def _jinja_tojson(value: Any) -> str:
    # jinja2's `tojson` filter: sorted keys, HTML-unsafe characters escaped.
    out = json.dumps(value, sort_keys=True)
    return out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("'", "\\u0027")


def system_content(system_prompt: str, tools: Sequence[ToolSpec | dict[str, Any]] | None,
                   today: dt.date | str | None) -> str:
    """The Llama 3.1 system message: environment, dates, tool definitions, then the role's prompt.
    With `today` None, no date lines (Meta's plain chat format: a conversation that has no date of
    its own, such as an external one, is not given one); the content may then be empty."""
    parts = []
    if tools:
        parts.append("Environment: ipython")
    if today is not None:
        parts.append(f"Cutting Knowledge Date: {KNOWLEDGE_CUTOFF}\nToday Date: {format_date(today)}")
    if tools:
        parts.append(tool_definitions(tools))
    if system_prompt:
        parts.append(system_prompt)
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------------------------
# Tool calls


def _call_fields(call: ToolCall | dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    if isinstance(call, ToolCall):
        return call.id, call.name, call.arguments
    fn = call.get("function") if "name" not in call else None
    if isinstance(fn, dict):  # OpenAI-shaped
        args = fn.get("arguments", {})
        if isinstance(args, str):
            args = json.loads(args) if args.strip() else {}
        return call.get("id", ""), fn["name"], args
    return call.get("id", ""), call["name"], call.get("arguments", {})


def _no_default(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


try:
    from json.encoder import c_make_encoder as _c_make_encoder
except ImportError:  # pragma: no cover - CPython always has it
    _c_make_encoder = None

if _c_make_encoder is not None:
    # What `json.dumps(value)` runs with its default arguments, made once: json.dumps builds this
    # encoder anew on every call, which costs more than encoding a small tool call.
    _c_encode = _c_make_encoder(None, _no_default, json.encoder.encode_basestring_ascii, None, ": ", ", ",
                                False, False, True)

    def json_dumps(value: Any) -> str:
        """``json.dumps(value)`` with its default arguments, byte for byte (acyclic data only)."""
        return "".join(_c_encode(value, 0))
else:  # pragma: no cover
    json_dumps = json.dumps


def render_tool_call(call: ToolCall | dict[str, Any]) -> str:
    """One call as Meta's ``ToolPromptFormat.json``: ``{"type": "function", "name": ..., "parameters": ...}``."""
    _, name, args = _call_fields(call)
    return tool_call_json(name, args)


def tool_call_json(name: str, arguments: dict[str, Any]) -> str:
    """:func:`render_tool_call` of a call named `name` with `arguments`."""
    head = _CALL_HEADS.get(name)
    if head is None:  # json.dumps of the call dict is this head, the arguments' json.dumps, then "}"
        if len(_CALL_HEADS) >= 4096:
            _CALL_HEADS.clear()
        head = _CALL_HEADS[name] = json_dumps({"type": "function", "name": name, "parameters": None})[:-5]
    return head + json_dumps(arguments) + "}"


_CALL_HEADS: dict[str, str] = {}


# Python's parser takes 200 nested brackets: the call list's, then the call's parentheses (the
# arguments, level 1), then one per container level.
_PYTHON_MAX_LEVEL = 199


def _python_value(value: Any, level: int = 1) -> str:
    if isinstance(value, str):
        # A JSON string literal is a valid Python one, except that Python does not join \\ud83d\\ude00
        # surrogate escapes: keep non-ASCII characters as they are.
        return json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if level > _PYTHON_MAX_LEVEL:
        raise ValueError(f"arguments nested deeper than {_PYTHON_MAX_LEVEL} levels cannot be written "
                         "in the pythonic call form")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_python_value(v, level + 1) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_python_value(str(k))}: {_python_value(v, level + 1)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as a Python literal")


def _python_name(ident: Any) -> bool:
    # Python reads identifiers NFKC-normalised: a name that normalises to a keyword (fullwidth "ｉｆ") is one.
    ident = str(ident)
    return ident.isidentifier() and not keyword.iskeyword(unicodedata.normalize("NFKC", ident))


def render_tool_calls(calls: Sequence[ToolCall | dict[str, Any]], style: CallStyle = "json") -> str:
    """The body of an assistant turn that makes `calls`, in one of the forms Llama models emit.

    * ``json``: one JSON object per call (Meta's encoding; several are concatenated, as
      ``ChatFormat`` does);
    * ``function_tag``: ``<function=NAME>{...}</function>`` per call (ValueError when a name is not
      a tool name, e.g. holds a space or ``>``: see :func:`simworld.llama3.parse.is_tool_name`);
    * ``python_list``: the Llama 3.2 form ``[f(a=1), g(b="x")]`` (ValueError when a tool or
      argument name is not a Python identifier, e.g. ``if``, or arguments nest deeper than
      Python's parser takes).
    """
    if style == "json":
        return "".join(render_tool_call(c) for c in calls)
    fields = [_call_fields(c) for c in calls]
    if style == "function_tag":
        for _, name, _ in fields:
            if not is_tool_name(name):
                raise ValueError(f"{name!r} is not a tool name: it cannot be written as <function=NAME>")
        return "".join(f"<function={name}>{json.dumps(args)}</function>" for _, name, args in fields)
    if style == "python_list":
        for _, name, args in fields:
            for ident in (name, *args):
                if not _python_name(ident):
                    raise ValueError(f"{ident!r} cannot be written in the pythonic call form")
        return "[" + ", ".join(f"{name}(" + ", ".join(f"{k}={_python_value(v, 2)}" for k, v in args.items()) + ")"
                               for _, name, args in fields) + "]"
    raise ValueError(f"unknown tool call style {style!r}")


# ----------------------------------------------------------------------------------------------
# Messages


def _msg_fields(m: Message | dict[str, Any]) -> tuple[str, str, list[Any], str | None, str | None]:
    if isinstance(m, Message):
        return m.role, m.content, m.tool_calls, m.tool_call_id, m.name
    return m["role"], m.get("content") or "", m.get("tool_calls") or [], m.get("tool_call_id"), m.get("name")


EMPTY_TURN = "empty turn"
"""The ``invalid`` reason of an assistant turn with no text (whitespace only) and no tool call: the
engine counts it as an invalid move and answers it with an error notice, but records it unmarked."""


def invalid_reason(m: Message | dict[str, Any]) -> str | None:
    """Why assistant message `m` is not trained on: its recorded ``invalid`` reason (the environment
    rejected it), else :data:`EMPTY_TURN` when it has no text and no tool call, else None."""
    if isinstance(m, Message):
        bad, content, calls = m.invalid, m.content, m.tool_calls
    else:
        bad, content, calls = m.get("invalid"), m.get("content") or "", m.get("tool_calls")
    if bad:
        return bad
    return EMPTY_TURN if not calls and (not content or content.isspace()) else None


def llama3_messages(messages: Sequence[Message | dict[str, Any]], tools: Sequence[ToolSpec | dict[str, Any]] | None,
                    today: dt.date | str | None, mask_failed: bool = False,
                    tail: Sequence[Message | dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The messages a Llama 3.1 sample is made of, as plain dicts.

    The first message is the built system message (from a leading ``system`` message, if any, plus
    the environment, dates and `tools`). Assistant messages carry at most one tool call (several
    are split into consecutive assistant turns; the text stays with the first call), and each
    split call is followed by its own result. Keys: ``role`` (``system``/``user``/``assistant``/
    ``tool``), ``content``, and ``tool_calls`` (``[{"id", "name", "arguments"}]``) on assistant
    turns that call a tool, ``tool_call_id``/``name`` on tool results, and ``invalid`` (the reason,
    :func:`invalid_reason`) on an assistant turn the environment rejected or that says nothing (no
    text, no call): it stays in the text but out of the loss spans.
    With `mask_failed`, a turn whose tool call got an error result is marked the same way
    (``invalid`` = :data:`FAILED_CALL`). `tail`: what followed `messages` when they are a view cut
    after its last assistant turn (see :func:`conversation_messages`).
    """
    msgs = list(messages)
    system_prompt = ""
    if msgs and _msg_fields(msgs[0])[0] == "system":
        system_prompt = _msg_fields(msgs[0])[1]
        msgs = msgs[1:]
    return [{"role": "system", "content": system_content(system_prompt, tools, today)},
            *conversation_messages(msgs, mask_failed, tail)]


FAILED_CALL = "the tool call failed"
"""The ``invalid`` reason of a turn whose call got an error result (``mask_failed``)."""


def failed_call_ids(msgs: Iterable[Message | dict[str, Any]]) -> set[Any]:
    """Ids of the calls whose result was an error (the last result of an id decides)."""
    errors: dict[Any, bool] = {}
    for m in msgs:
        if isinstance(m, Message):
            if m.role == "tool":
                errors[m.tool_call_id] = m.error
        elif m["role"] == "tool":
            errors[m.get("tool_call_id")] = bool(m.get("error"))
    return {call_id for call_id, error in errors.items() if error}


def conversation_messages(msgs: Sequence[Message | dict[str, Any]], mask_failed: bool = False,
                          tail: Sequence[Message | dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The normalized messages after the system message (see :func:`llama3_messages`).

    `tail`: what followed `msgs` in the conversation when `msgs` is a view cut after its last
    assistant turn. Its results decide whether the last turn's calls failed, and when that turn
    makes parallel calls, each call but the last is followed by its result from `tail`, as in the
    middle of a conversation (one assistant turn never follows another's tool call unanswered).
    """
    failed = failed_call_ids([*msgs, *tail]) if mask_failed else ()
    out: list[dict[str, Any]] = []
    i = 0
    n = len(msgs)
    while i < n:
        role, content, calls, call_id, name = _msg_fields(msgs[i])
        i += 1
        if role == "system":
            out.append({"role": "system", "content": content})
        elif role == "tool":
            item = {"role": "tool", "content": content, "tool_call_id": call_id}
            if name:
                item["name"] = name
            out.append(item)
        elif role == "assistant" and calls:
            call_dicts = [dict(zip(("id", "name", "arguments"), _call_fields(c))) for c in calls]
            rejected = invalid_reason(msgs[i - 1])  # (its calls were never run)
            if len(call_dicts) == 1:
                item = {"role": "assistant", "content": content, "tool_calls": call_dicts}
                if rejected:
                    item["invalid"] = rejected
                elif call_dicts[0]["id"] in failed:
                    item["invalid"] = FAILED_CALL
                out.append(item)
                continue
            # Parallel calls: pair each call with its result, which follow the message in order
            # (for the view's last turn, in the tail).
            last_turn = i == n
            source, j = (tail, 0) if last_turn else (msgs, i)
            results: dict[str, dict[str, Any]] = {}
            while j < len(source) and _msg_fields(source[j])[0] == "tool":
                _, rcontent, _, rid, rname = _msg_fields(source[j])
                item = {"role": "tool", "content": rcontent, "tool_call_id": rid}
                if rname:
                    item["name"] = rname
                results.setdefault(rid or f"#{j}", item)
                j += 1
            leftover = [r for r in results.values() if r["tool_call_id"] not in {c["id"] for c in call_dicts}]
            for k, call in enumerate(call_dicts):
                item = {"role": "assistant", "content": content if k == 0 else "", "tool_calls": [call]}
                if rejected:
                    item["invalid"] = rejected
                elif call["id"] in failed:
                    item["invalid"] = FAILED_CALL
                out.append(item)
                result = results.get(call["id"])
                if result is not None and not (last_turn and k == len(call_dicts) - 1):
                    out.append(result)
            if last_turn:  # the view ends with the last call
                break
            out.extend(leftover)
            i = j
        else:
            item = {"role": role, "content": content}
            bad = invalid_reason(msgs[i - 1]) if role == "assistant" else None
            if bad:
                item["invalid"] = bad
            out.append(item)
    return out


def _render_one(m: dict[str, Any]) -> tuple[str, str]:
    """(header, body+end) of one normalized message."""
    role = m["role"]
    calls = m.get("tool_calls")
    if role == "assistant" and calls:
        return HEADERS["assistant"], m["content"] + "".join(render_tool_call(c) for c in calls) + EOM
    return HEADERS[role], m["content"] + EOT


def render_normalized(messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False,
                      train_roles: tuple[str, ...] = ("assistant",), begin: bool = True,
                      offset: int = 0) -> tuple[str, list[tuple[int, int]]]:
    """Text and loss spans of messages already normalized by :func:`llama3_messages`.

    Each span ``(start, end)`` covers one message of a role in `train_roles` from just after its
    header to the end of its ``<|eot_id|>``/``<|eom_id|>``. Without `begin` the text has no
    ``<|begin_of_text|>`` (a continuation); spans are shifted by `offset` characters.
    """
    pieces = [BEGIN] if begin else []
    pos = offset + (len(BEGIN) if begin else 0)
    spans: list[tuple[int, int]] = []
    for m in messages:
        header, body = _render_one(m)
        pieces.append(header)
        pieces.append(body)
        pos += len(header)
        if m["role"] in train_roles and not m.get("invalid"):
            spans.append((pos, pos + len(body)))
        pos += len(body)
    if add_generation_prompt:
        pieces.append(HEADERS["assistant"])
    return "".join(pieces), spans


def render_messages(messages: Sequence[Message | dict[str, Any]], tools: Sequence[ToolSpec | dict[str, Any]] | None,
                    today: dt.date | str, add_generation_prompt: bool = False) -> str:
    """Llama 3.1 text of a conversation (see the module docstring).

    `messages` is one role's perspective (``system``/``user``/``assistant``/``tool`` Messages, or
    dicts with the same keys; tool-call dicts may be OpenAI-shaped). With `add_generation_prompt`
    the text ends with an open assistant header, ready for a raw completion.
    """
    return render_normalized(llama3_messages(messages, tools, today), add_generation_prompt)[0]


def render_with_spans(messages: Sequence[Message | dict[str, Any]], tools: Sequence[ToolSpec | dict[str, Any]] | None,
                      today: dt.date | str) -> tuple[str, list[dict[str, Any]], list[tuple[int, int]]]:
    """(text, normalized messages, character spans of the assistant turns)."""
    normalized = llama3_messages(messages, tools, today)
    text, spans = render_normalized(normalized)
    return text, normalized, spans
