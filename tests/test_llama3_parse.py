"""The Llama 3 assistant-turn parser: every form, malformed input, and serialize -> parse round trips."""

from __future__ import annotations

import datetime as dt
import keyword

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simworld.llama3.format import render_messages, render_tool_calls
from simworld.llama3.parse import ParseError, parse_assistant_turn
from simworld.types import Message, ToolCall
from test_llama3_oracle import chat_format


def calls_of(text):
    return [(c.name, c.arguments) for c in parse_assistant_turn(text).tool_calls]


@pytest.mark.parametrize("text", [
    '{"name": "get_order", "parameters": {"order_id": "#W1"}}',
    '{"type": "function", "name": "get_order", "parameters": {"order_id": "#W1"}}',
    '<|python_tag|>{"type": "function", "name": "get_order", "parameters": {"order_id": "#W1"}}<|eom_id|>',
    '{"name": "get_order", "arguments": "{\\"order_id\\": \\"#W1\\"}"}',
    '{"type": "function", "function": {"name": "get_order", "arguments": {"order_id": "#W1"}}}',
    '[{"name": "get_order", "parameters": {"order_id": "#W1"}}]',
    '<function=get_order>{"order_id": "#W1"}</function>',
    '<function=get_order>{"order_id": "#W1"}</function><|eot_id|>',
    '[get_order(order_id="#W1")]',
    "[get_order(order_id='#W1')]",
])
def test_every_form_gives_the_same_call(text):
    assert calls_of(text) == [("get_order", {"order_id": "#W1"})]
    assert parse_assistant_turn(text).content == ""


def test_multiple_calls_in_each_form():
    expected = [("f", {"a": 1}), ("g", {"b": "x"})]
    assert calls_of('[f(a=1), g(b="x")]') == expected
    assert calls_of('{"name": "f", "parameters": {"a": 1}}{"name": "g", "parameters": {"b": "x"}}') == expected
    assert calls_of('{"name": "f", "parameters": {"a": 1}};\n{"name": "g", "parameters": {"b": "x"}}') == expected
    assert calls_of('<function=f>{"a": 1}</function>\n<function=g>{"b": "x"}</function>') == expected
    assert calls_of('[{"name": "f", "parameters": {"a": 1}}, {"name": "g", "parameters": {"b": "x"}}]') == expected


def test_pythonic_literals():
    call = parse_assistant_turn('[f(a=-1, b=2.5, c=[1, (2, 3)], d={"k": None}, e=True, f=null, g=false)]').tool_calls[0]
    assert call.arguments == {"a": -1, "b": 2.5, "c": [1, [2, 3]], "d": {"k": None}, "e": True, "f": None, "g": False}


@pytest.mark.parametrize("text", [
    '[f(a=__import__("os").system("true"))]',
    "[f(a=open('/etc/passwd').read())]",
    "[f(a=1 + 2)]",
    "[f(a=x)]",
    "[os.system(cmd='true')]",
    "[f(1)]",
    "[f(**{'a': 1})]",
    "[f(a={1: 2})]",
    "[f(a=b'bytes')]",
    "[f(a=1j)]",
    "[f(a=[i for i in range(3)])]",
    "[f(a=lambda: 1)]",
])
def test_pythonic_non_literals_are_rejected_never_evaluated(text):
    with pytest.raises(ParseError):
        parse_assistant_turn(text)


@pytest.mark.parametrize("text", [
    '{"name": "f", "parameters": {"a": 1}',  # truncated JSON
    '{"parameters": {"a": 1}}',  # no name
    '{"name": "f", "parameters": [1, 2]}',
    '{"name": "f", "parameters": {}, "extra": 1}',
    '{"type": "tool", "name": "f"}',
    '<|python_tag|>not a call',
    '<|python_tag|>',
    '<function=f>{"a": </function>',
    '<function=f>[1]</function>',
    '<function=f>{}</function> and more text',
    "   ",
])
def test_malformed_calls_raise_parse_error(text):
    with pytest.raises(ParseError):
        parse_assistant_turn(text)


@pytest.mark.parametrize("text", ["Hello there.", "[Note] your order shipped.", 'I paid {"amount": 5} yesterday',
                                  "Total: {5}", "[1] first point", "Write <function=name> tags, then stop."])
def test_prose_stays_text(text):
    msg = parse_assistant_turn(text)
    assert msg.content == text and msg.tool_calls == []


@pytest.mark.parametrize("text", ["[" * 10000 + "]" * 10000, "{" * 5000, "[f(a=" + "[" * 3000 + "]" * 3000 + ")]",
                                  "[f(a=" + "-" * 5000 + "1)]"])
def test_pathological_input_never_escapes_as_another_exception(text):
    try:
        msg = parse_assistant_turn(text)
    except ParseError:
        return
    assert msg.tool_calls == []


def test_non_text_action_is_a_parse_error():
    with pytest.raises(ParseError):
        parse_assistant_turn(123)  # type: ignore[arg-type]


def test_decode_of_metas_own_encoding_parses():
    fmt = chat_format()
    from llama_models.datatypes import RawMessage, StopReason, ToolCall as MetaCall, ToolPromptFormat

    for style in (ToolPromptFormat.json, ToolPromptFormat.function_tag, ToolPromptFormat.python_list):
        raw = RawMessage(role="assistant", content="", stop_reason=StopReason.end_of_message,
                         tool_calls=[MetaCall(call_id="1", tool_name="get_order", arguments={"order_id": "W1", "n": 2})])
        tokens, _ = fmt.encode_message(raw, style)
        text = fmt.tokenizer.decode(tokens)
        body = text.split("<|end_header_id|>\n\n", 1)[1]
        assert calls_of(body) == [("get_order", {"order_id": "W1", "n": 2})], style


# -- property: serialize -> parse round-trips ------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
arguments = st.dictionaries(names, json_values, max_size=5)
calls = st.builds(lambda n, a: ToolCall(id="x", name=n, arguments=a), names, arguments)
# Prose that is not itself a tool call: no braces or brackets at the edges, stripped.
prose = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="{}[]<>"), max_size=60) \
    .map(str.strip).filter(lambda s: s != "")


@settings(max_examples=300, deadline=None)
@given(call_list=st.lists(calls, min_size=1, max_size=3), style=st.sampled_from(["json", "function_tag", "python_list"]))
def test_tool_calls_round_trip_in_every_style(call_list, style):
    if style == "python_list" and any(keyword.iskeyword(n) for c in call_list for n in (c.name, *c.arguments)):
        with pytest.raises(ValueError):
            render_tool_calls(call_list, style)
        return
    text = render_tool_calls(call_list, style)
    parsed = parse_assistant_turn(text)
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == [(c.name, c.arguments) for c in call_list]
    assert parsed.content == ""


@settings(max_examples=200, deadline=None)
@given(content=st.one_of(st.just(""), prose), call=st.one_of(st.none(), calls))
def test_rendered_assistant_turn_round_trips(content, call):
    """The assistant part of the Llama 3 text, with its end token, parses back to the message."""
    msg = Message(role="assistant", content=content, tool_calls=[call] if call else [])
    if not content and not call:
        return
    text = render_messages([msg], None, dt.date(2024, 9, 1))
    body = text.rsplit("<|start_header_id|>assistant<|end_header_id|>\n\n", 1)[1]
    parsed = parse_assistant_turn(body)
    assert parsed.content == content
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == [(c.name, c.arguments) for c in msg.tool_calls]
