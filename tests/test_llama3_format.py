"""The Llama 3.1 serializer against Meta's reference ChatFormat (llama-models)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import llama_models
import pytest

from simworld.llama3.format import (
    contains_special_token,
    format_date,
    llama3_messages,
    render_messages,
    render_with_spans,
    system_content,
    tool_definitions,
)
from simworld.types import Message, ToolCall, ToolSpec
from test_llama3_oracle import reference_text

TODAY = dt.date(2024, 9, 21)

TRENDING = ToolSpec(name="trending_songs", description="Returns the trending songs on a Music site", parameters={
    "type": "object",
    "properties": {"n": {"type": "integer", "description": "The number of songs to return"},
                   "genre": {"type": "string", "description": "The genre of the songs to return"}},
    "required": ["n"],
})
LOOKUP = ToolSpec(name="get_order", description="Look up an order.", parameters={
    "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]})


def _prompt_format_md() -> str:
    return (Path(llama_models.__file__).parent / "llama3_1" / "prompt_format.md").read_text()


def test_tool_definitions_match_metas_documented_json_prompt():
    md = _prompt_format_md()
    block = tool_definitions([TRENDING])
    assert block in md  # the JSON custom-tool prompt of Meta's Llama 3.1 prompt-format doc, verbatim
    assert block.startswith("Answer the user's question by making use of the following functions")
    assert block.endswith("Return function calls in JSON format.")


def test_system_header_matches_metas_documented_header():
    md = _prompt_format_md()
    content = system_content("You are a helpful assistant.", [TRENDING], TODAY)
    header = "Environment: ipython\n\nCutting Knowledge Date: December 2023\nToday Date: 21 September 2024\n\n"
    assert content.startswith(header)
    assert "<|start_header_id|>system<|end_header_id|>\n\n" + header + "You are a helpful assistant." in md
    assert content.endswith("\n\nYou are a helpful assistant.")
    assert tool_definitions([TRENDING]) in content


def test_system_without_tools_has_no_environment_line():
    content = system_content("Be brief.", [], dt.date(2025, 1, 5))
    assert content == "Cutting Knowledge Date: December 2023\nToday Date: 05 January 2025\n\nBe brief."


def test_date_is_the_given_day_never_the_clock():
    assert format_date(dt.date(2024, 2, 3)) == "03 February 2024"
    assert format_date("2023-12-31") == "31 December 2023"


CONVERSATIONS = [
    [Message(role="system", content="You are a clerk."), Message(role="user", content="Where is #W1?"),
     Message(role="assistant", tool_calls=[ToolCall(id="c1", name="get_order", arguments={"order_id": "#W1"})]),
     Message(role="tool", content='{"status": "pending"}', tool_call_id="c1", name="get_order"),
     Message(role="assistant", content="It is pending.")],
    # text and a call in one turn; parallel calls; unicode; an error result; a rejected (invalid) turn
    [Message(role="user", content="Zwei Aufträge: ü, 東京 and emoji 🎉"),
     Message(role="assistant", content="Checking both. ", tool_calls=[
         ToolCall(id="a", name="get_order", arguments={"order_id": "#W1"}),
         ToolCall(id="b", name="trending_songs", arguments={"n": 3, "genre": "jazz \"cool\""})]),
     Message(role="tool", content="Error: unknown order", tool_call_id="a", name="get_order", error=True),
     Message(role="tool", content="[1, 2, 3]", tool_call_id="b", name="trending_songs"),
     Message(role="assistant", content="<garbage", invalid="tool call is not valid JSON"),
     Message(role="user", content="Error: invalid action"),
     Message(role="assistant", content="")],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("tools", [[LOOKUP, TRENDING], []])
def test_text_equals_metas_chat_format(messages, tools):
    text, normalized, spans = render_with_spans(messages, tools, TODAY)
    assert text == reference_text(normalized)
    assert text == render_messages(messages, tools, TODAY)
    assert render_messages(messages, tools, TODAY, add_generation_prompt=True) == \
        text + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    for m in normalized:
        assert len(m.get("tool_calls") or []) <= 1


def test_parallel_calls_split_each_followed_by_its_result():
    normalized = llama3_messages(CONVERSATIONS[1], [LOOKUP, TRENDING], TODAY)
    roles = [(m["role"], m.get("tool_call_id") or [c["id"] for c in m.get("tool_calls", [])]) for m in normalized]
    assert roles[1:6] == [("user", []), ("assistant", ["a"]), ("tool", "a"), ("assistant", ["b"]), ("tool", "b")]
    assert normalized[2]["content"] == "Checking both. " and normalized[4]["content"] == ""


def test_spans_cover_exactly_the_valid_assistant_turns():
    text, normalized, spans = render_with_spans(CONVERSATIONS[1], [LOOKUP], TODAY)
    pieces = [text[a:b] for a, b in spans]
    assert pieces[0] == 'Checking both. {"type": "function", "name": "get_order", "parameters": {"order_id": "#W1"}}<|eom_id|>'
    assert pieces[1].startswith('{"type": "function", "name": "trending_songs"') and pieces[1].endswith("<|eom_id|>")
    # The rejected turn and the final empty one (no text, no call: the engine answers it with an error
    # notice, though it records it unmarked) stay in the text, out of the loss.
    assert len(spans) == 2 and text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n<|eot_id|>")
    assert not any("garbage" in p for p in pieces)
    assert [m.get("invalid") for m in normalized if m["role"] == "assistant"][2:] == [
        "tool call is not valid JSON", "empty turn"]


@pytest.mark.parametrize("content", ["", " ", "\n\t "])
def test_a_turn_with_no_text_and_no_call_is_invalid_and_one_with_either_is_not(content):
    from simworld.llama3.format import EMPTY_TURN, invalid_reason

    call = ToolCall(id="c", name="get_order", arguments={})
    assert invalid_reason(Message(role="assistant", content=content)) == EMPTY_TURN
    assert invalid_reason({"role": "assistant", "content": content}) == EMPTY_TURN
    assert invalid_reason({"role": "assistant", "content": None}) == EMPTY_TURN
    assert invalid_reason(Message(role="assistant", content=content, tool_calls=[call])) is None
    assert invalid_reason(Message(role="assistant", content=content + "ok")) is None
    assert invalid_reason(Message(role="assistant", content=content, invalid="empty reply")) == "empty reply"


def test_a_rejected_turn_that_calls_a_tool_is_out_of_the_spans_each_of_its_calls():
    """The engine records a rejected turn's calls (never run) when the agent marked it invalid (the
    LLM agent's control-token check of its arguments)."""
    calls = [ToolCall(id="a", name="get_order", arguments={"order_id": "<\\|im_end|>"}),
             ToolCall(id="b", name="get_order", arguments={"order_id": "#W2"})]
    for made in (calls[:1], calls):
        messages = [Message(role="user", content="hi"),
                    Message(role="assistant", content="On it.", tool_calls=made, invalid="a marker"),
                    Message(role="user", content="Error: invalid action: a marker"),
                    Message(role="assistant", content="Sorry.")]
        text, normalized, spans = render_with_spans(messages, [LOOKUP], TODAY)
        assert text == reference_text(normalized)
        assert [m.get("invalid") for m in normalized if m["role"] == "assistant"] == ["a marker"] * len(made) + [None]
        assert [text[a:b] for a, b in spans] == ["Sorry.<|eot_id|>"]
    for a, _ in spans:
        assert text[:a].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_eom_only_after_tool_calls():
    text = render_messages(CONVERSATIONS[0], [LOOKUP], TODAY)
    assert text.count("<|eom_id|>") == 1
    assert re.search(r'\{"type": "function", "name": "get_order", "parameters": \{"order_id": "#W1"\}\}<\|eom_id\|>', text)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n")
    assert "<|start_header_id|>ipython<|end_header_id|>\n\n{\"status\": \"pending\"}<|eot_id|>" in text


def test_openai_shaped_dicts_render_like_messages():
    dicts = [{"role": "user", "content": "hi"},
             {"role": "assistant", "content": None, "tool_calls": [
                 {"id": "c1", "type": "function", "function": {"name": "get_order", "arguments": '{"order_id": "#W1"}'}}]},
             {"role": "tool", "content": "ok", "tool_call_id": "c1"}]
    msgs = [Message(role="user", content="hi"),
            Message(role="assistant", tool_calls=[ToolCall(id="c1", name="get_order", arguments={"order_id": "#W1"})]),
            Message(role="tool", content="ok", tool_call_id="c1")]
    assert render_messages(dicts, [LOOKUP.openai()], TODAY) == render_messages(msgs, [LOOKUP], TODAY)


def test_special_token_detection():
    assert contains_special_token("a <|eot_id|> b")
    assert contains_special_token("<|reserved_special_token_7|>")
    assert not contains_special_token("a <| b |> c")
