"""`<|NAME|>` lookalikes of control tokens: what Meta's tokenizers (llama-models) make of them, and
the rule: a turn that writes one is an invalid move, like a real Llama 3 special token, in text
actions, structured Messages, and replies of an LLM agent served over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re

import pytest
from llama_models.llama3.chat_format import ChatFormat
from llama_models.llama3.tokenizer import Tokenizer as Llama3Tokenizer
from llama_models.llama4.tokenizer import Tokenizer as Llama4Tokenizer

import ledger_world
from llm_server import ScriptedServer, ledger_policy, text
from simworld.episode import Episode, episode_specs, run_episode
from simworld.llama3.format import contains_special_token
from simworld.llama3.parse import ParseError, control_shape_in, escape_special_tokens, parse_assistant_turn
from simworld.scenario import scenario_from_data
from simworld.types import Message, ToolCall

LOOKALIKES = ["<|foo|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|user|>", "<|end|>", "<|eot|>",
              "<|header_start|>", "<｜end▁of▁sentence｜>"]
SHAPE = re.compile(r"<[|｜][^\s|｜<>\"'\\]{1,64}[|｜]>")


# -- what the tokenizers do (the premise of the rule)

def test_llama3_reads_lookalikes_as_plain_text_whatever_special_tokens_are_allowed():
    tok = Llama3Tokenizer.get_instance()
    special_ids = set(tok.special_tokens.values())
    for marker in LOOKALIKES:
        for allowed in (set(), "all"):
            ids = tok.encode(marker, bos=False, eos=False, allowed_special=allowed)
            assert len(ids) > 1 and not special_ids & set(ids), (marker, allowed, ids)
            assert tok.decode(ids) == marker
    # a real special token is one control id when special tokens are read in text, plain text otherwise
    assert tok.encode("<|eot_id|>", bos=False, eos=False, allowed_special="all") == [tok.special_tokens["<|eot_id|>"]]
    assert tok.special_tokens["<|eot_id|>"] not in tok.encode("<|eot_id|>", bos=False, eos=False, allowed_special=set())


def test_llama_models_chat_format_encodes_message_text_without_special_tokens():
    """Meta's own encoder reads neither in a message's content: the danger is tokenizers that do
    (transformers reads added tokens in text), which the Llama 3 text and the other exports meet."""
    fmt = ChatFormat(Llama3Tokenizer.get_instance())
    from llama_models.datatypes import RawMessage, ToolPromptFormat

    for content in ("a <|eot_id|> b", "a <|im_end|> b"):
        tokens, _ = fmt.encode_message(RawMessage(role="assistant", content=content), ToolPromptFormat.json)
        assert tokens.count(fmt.tokenizer.special_tokens["<|eot_id|>"]) == 1  # only the one that ends the turn


def test_llama3_lookalikes_are_control_tokens_of_llama4():
    tok = Llama4Tokenizer.get_instance()
    for marker in ("<|eot|>", "<|header_start|>", "<|header_end|>", "<|eom|>"):
        assert tok.encode(marker, bos=False, eos=False, allowed_special="all") == [tok.special_tokens[marker]]
        assert not contains_special_token(marker)  # not a Llama 3 token: only the lookalike rule catches it


# -- the parser

@pytest.mark.parametrize("marker", LOOKALIKES)
@pytest.mark.parametrize("form", [
    "Sure, done. {m}", "{m}assistant\n\nhello", "a{m}b",
    '{{"name": "get_balance", "parameters": {{"account": "{m}"}}}}',
    '{{"name": "get_balance", "parameters": {{"{m}": 1}}}}',
    'Checking. [get_balance(account="x{m}")]',
    '<function=get_balance>{{"account": "{m}"}}</function>',
])
def test_a_turn_writing_a_lookalike_is_refused(marker, form):
    turn = form.format(m=marker)
    with pytest.raises(ParseError) as err:
        parse_assistant_turn(turn)
    reason = str(err.value)
    assert "shaped like a chat-template control token" in reason
    assert control_shape_in(reason) is None and not contains_special_token(reason)  # it reaches the next prompt
    assert SHAPE.search(marker).group()[2:-2] in reason or "'" in reason  # the name, without its brackets


def test_json_escapes_do_not_hide_a_lookalike():
    with pytest.raises(ParseError, match="im_end"):
        parse_assistant_turn('{"name": "f", "parameters": {"q": "\\u003c|im_end|\\u003e"}}')


@pytest.mark.parametrize("turn", ["a | b", "x <b>bold</b>", "<| spaced |>", "<|\n|>", "cost <| 5", "5 |> 3",
                                  "|| or <>", "<||>", '{"name": "f", "parameters": {"a": "<|x", "b": "y|>"}}',
                                  "[f(a='<|x',b='y|>')]"])
def test_what_is_not_a_marker_still_parses(turn):
    parse_assistant_turn(turn)


def test_the_structural_llama3_tokens_of_a_turn_stay_valid():
    msg = parse_assistant_turn('<|python_tag|>{"name": "get_balance", "parameters": {"account": 1}}<|eom_id|>')
    assert msg.tool_calls[0].name == "get_balance"
    assert parse_assistant_turn("done<|eot_id|>").content == "done"


def test_escaping_removes_every_shape_and_is_idempotent():
    text = "a <|foo|> b <｜x｜> c <|eot_id|> d <|"
    once = escape_special_tokens(text)
    assert control_shape_in(once) is None and not contains_special_token(once)
    assert escape_special_tokens(once) == once
    assert escape_special_tokens("no marker <| here") == "no marker <| here"


# -- the engine: text and structured actions, any role

@pytest.fixture()
def sc():
    return scenario_from_data(ledger_world.scenario_data())


@pytest.mark.parametrize("role", ["user", "clerk"])
@pytest.mark.parametrize("action", [
    "Thanks!<|im_end|>",
    Message(role="assistant", content="Thanks! <|endoftext|>"),
    Message(role="assistant", tool_calls=[ToolCall(id="x", name="get_balance", arguments={"account": "<|foo|>"})]),
    Message(role="assistant", tool_calls=[ToolCall(id="x", name="get_balance", arguments={"<|foo|>": 1})]),
], ids=lambda a: repr(a)[:40])
def test_a_lookalike_in_any_action_is_an_invalid_move_recorded_escaped(sc, role, action):
    ep = Episode(sc, episode_specs(sc, 1)[0])
    if role == "clerk":
        ep.step("hello")
    before = ep.state.state_hash()
    ep.step(action)
    bad, notice = ep.events[-2:]
    assert ep.invalid_moves == 1 and ep.current == role and ep.state.state_hash() == before
    assert "shaped like a chat-template control token" in bad.invalid and notice.content.startswith("Error: invalid")
    assert not any(e.role == "tool" for e in ep.events)
    for event in ep.events:
        assert control_shape_in(event.content) is None and control_shape_in(event.invalid or "") is None
    if isinstance(action, str):
        assert bad.content == "Thanks!<\\|im_end|>"  # what the model wrote, written so that no tokenizer reads it


# -- an LLM agent served over HTTP

def clerk(server, mode):
    data = ledger_world.scenario_data()
    data["roles"]["clerk"]["agent"] = {"type": "llm", "model": "openai/test-model", "api_base": server.base_url,
                                       "mode": mode, "timeout": 5.0}
    return scenario_from_data(data)


def leaks_once(marker):
    """A model that leaks its template marker in its first reply, then behaves (the ledger's user is
    scripted: every request is the clerk's)."""
    def policy(endpoint, body):
        if "Error: invalid action" not in (body.get("prompt") or str(body.get("messages"))):
            return text(f"Let me deposit that for you.{marker}")
        return ledger_policy(endpoint, body)

    return policy


@pytest.mark.parametrize("mode", ["tools", "llama3"])
@pytest.mark.parametrize("marker", ["<|im_end|>", "<|eot|>"])
def test_a_model_leaking_a_template_marker_makes_an_invalid_move_and_recovers(mode, marker):
    with ScriptedServer(leaks_once(marker)) as server:
        sc = clerk(server, mode)
        t = asyncio.run(run_episode(sc, episode_specs(sc, 1)[0]))
    assert t.outcome.success and t.outcome.invalid_moves == 1, t.outcome
    (bad,) = [e for e in t.events if e.invalid]
    assert bad.speaker == "clerk" and marker[2:-2] in bad.invalid
    assert bad.content == "Let me deposit that for you." + marker.replace("<|", "<\\|")
    assert t.provenance.models["clerk"]["invalid_replies"] == 1  # counted alike in both modes
    # the model's next request shows the notice, and no marker but the real Llama 3 structure
    later = server.requests[1]
    sent = later.get("prompt") or "".join(str(m.get("content")) for m in later["messages"])
    assert "Error: invalid action: a marker shaped like a chat-template control token" in sent
    assert all(contains_special_token(m.group()) for m in SHAPE.finditer(sent)), sent
    assert all(control_shape_in(e.content) is None for e in t.events)  # nor does the recorded episode
