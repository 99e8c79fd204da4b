"""Turns the environment did not take, in every export format.

An assistant turn the engine rejected (``invalid``: garbage text, a control-token lookalike, a
malformed or rejected call) or one with no text and no tool call (which the engine answers with
"Error: invalid action: empty turn" but records unmarked) is never trained on:

* llama3 keeps it in ``text`` and ``messages`` (marked ``invalid``), out of ``mask`` and ``token_mask``;
* openai keeps a rejected turn with ``"weight": 0``, and leaves out, with the notice answering it,
  one it cannot write (no content; calls that were never run);
* trl, sharegpt (and dpo, whose sides are trl messages) leave each out with its notice, as if the
  move had not been made; a sample left with no assistant turn is not written, and the card says so.

Every trajectory here is made by the real engine, written by the batch runner: a scripted clerk
that fumbles in every way the engine records, and the LLM agent talking to a real loopback server
that answers with nothing, a malformed call and a control-token lookalike. Each export is checked
by the consumer's own rules: Meta's ChatFormat, OpenAI's format checks, TRL's Llama 3.1 template
and LLaMA-Factory's ShareGPT alternation.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

import test_export_worlds as worlds
from llm_server import ScriptedServer, ToolCallReply, calls, ledger_policy, text
from simworld.agent import Agent, AgentParams
from simworld.episode import Episode, episode_specs
from simworld.export import ExportOptions, export_runs
from simworld.export.source import perspective_dicts, render_events, training_view_and_tail
from simworld.llama3.parse import special_token_problem
from simworld.registry import register_agent
from simworld.runio import iter_records
from simworld.scenario import scenario_from_data
from simworld.types import Message, ToolCall
from test_export import _general_path, _llama_factory_function_call, _one_pass, _trl_template
from test_export_openai_format import openai_format_errors
from test_llama3_oracle import chat_format, encode, reference_text

NOTICE = "Error: invalid action"


def _deposit(account: int, amount: int, **extra: Any) -> ToolCall:
    return ToolCall(id="x", name="deposit", arguments={"account": account, "amount": amount, **extra})


def _rejected_calls(account: int, amount: int, n: int) -> Message:
    """What the LLM agent hands the engine for a call whose arguments hold a control-token
    lookalike: the calls, marked invalid by the same check (the engine records them, never runs them)."""
    msg = Message(role="assistant", content="Depositing now.",
                  tool_calls=[_deposit(account, amount, memo="<|im_end|>")] * n)
    return msg.model_copy(update={"invalid": special_token_problem(msg)})


MOVES = {
    "empty text": lambda a, n: "",  # parsed: invalid "empty turn"
    "empty message": lambda a, n: Message(role="assistant", content=""),  # recorded unmarked
    "blank message": lambda a, n: Message(role="assistant", content=" \n\t"),  # recorded unmarked
    "garbage": lambda a, n: "{not json",
    "lookalike": lambda a, n: "Sure.<|im_end|>",
    "rejected call": lambda a, n: _rejected_calls(a, n, 1),
    "rejected calls": lambda a, n: _rejected_calls(a, n, 2),
}


class FumblerParams(AgentParams):
    before: list[str] = []
    """Moves (MOVES) before the deposit."""
    deposit: bool = True
    after: list[str] = []
    """Moves after the deposit's result, before the answer."""
    answer: bool = True
    """Answer with the balance at the end (else repeat the last move until max_turns)."""


@register_agent("ledger_fumbler")
class Fumbler(Agent):
    """A ledger clerk that makes the moves it is given, then does its job."""

    Params = FumblerParams

    async def act(self, view):
        p = self.params
        request = next(m.content for m in view.messages if m.role == "user")
        amount, account = (int(x) for x in re.findall(r"\d+", request)[:2])
        plan = [*p.before, *(["deposit"] if p.deposit else []), *p.after, *(["answer"] if p.answer else [])]
        step = sum(1 for e in view.events if e.speaker == view.role and e.role == "assistant")
        move = plan[min(step, len(plan) - 1)]
        if move == "deposit":
            return '{"name": "deposit", "parameters": {"account": %d, "amount": %d}}' % (account, amount)
        if move == "answer":
            result = next(e.content for e in reversed(view.events) if e.role == "tool" and e.speaker == view.role)
            balance = re.findall(r'"balance": *(\d+)', result)[0]
            return f"Deposited. The new balance is {balance}."
        return MOVES[move](account, amount)


def _scenario(clerk: dict[str, Any], max_turns: int = 30):
    return scenario_from_data(worlds.ledger_data(roles={
        "user": {"kind": "user", "agent": {"type": "ledger_user"}},
        "clerk": {"kind": "assistant", "agent": clerk, "system_prompt": "You are a bank clerk.",
                  "tools": ["get_balance", "deposit", "hang_up"]}}, max_turns=max_turns))


FUMBLES = {"type": "ledger_fumbler", "before": ["empty message", "garbage", "empty text", "lookalike", "rejected call",
                                                "blank message"],
           "after": ["rejected calls", "empty message"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Real run directories: a clerk that fumbles before and after its deposit; one that trails off
    in empty turns until max_turns; one that never says anything; and a competent one."""
    root = tmp_path_factory.mktemp("rejected")
    return {
        "fumbles": worlds.make_run(root / "fumbles", _scenario(FUMBLES), 3),
        # user, deposit, then 3 empty turns
        "trails_off": worlds.make_run(root / "trails_off", _scenario(
            {"type": "ledger_fumbler", "after": ["empty message"], "answer": False}, max_turns=5), 2),
        # user, then 3 empty turns
        "silent": worlds.make_run(root / "silent", _scenario(
            {"type": "ledger_fumbler", "before": ["empty message"], "deposit": False, "answer": False},
            max_turns=4), 2),
        "clean": worlds.make_run(root / "clean", _scenario({"type": "ledger_clerk"}), 3),
    }


def _export(runs, out: Path, fmt: str, **kw):
    return export_runs([str(r) for r in runs], ExportOptions(out=str(out), fmt=fmt, dedup=False, **kw))


def test_the_engine_records_what_these_tests_rely_on(runs):
    """The record holds each move as the engine took it: the empty message unmarked, answered by
    the same notice as a rejected move; the rejected calls kept and never run."""
    (record, *_) = iter_records(runs["fumbles"])
    clerk = [e for e in record["events"] if e["speaker"] == "clerk"]
    assert [(e["role"], e["content"], e["invalid"] is not None, len(e["tool_calls"])) for e in clerk] == [
        ("assistant", "", False, 0), ("assistant", "{not json", True, 0), ("assistant", "", True, 0),
        ("assistant", "Sure.<\\|im_end|>", True, 0), ("assistant", "Depositing now.", True, 1),
        ("assistant", " \n\t", False, 0), ("assistant", "", False, 1), ("tool", clerk[7]["content"], False, 0),
        ("assistant", "Depositing now.", True, 2), ("assistant", "", False, 0),
        ("assistant", clerk[10]["content"], False, 0)]
    notices = [e["content"] for e in record["events"] if e["speaker"] == "world"]
    assert len(notices) == 8 and all(n.startswith(NOTICE + ": ") for n in notices)
    assert notices[0] == notices[2] == notices[5] == notices[7] == NOTICE + ": empty turn"
    assert record["outcome"]["invalid_moves"] == 8 and record["outcome"]["success"]


# -- llama3 ------------------------------------------------------------------------------------


def _trained(line):
    return [m for m in line["messages"] if m["role"] == "assistant" and not m.get("invalid")]


@pytest.mark.parametrize("tokenize", [False, True])
def test_llama3_keeps_them_in_the_text_and_out_of_the_mask(runs, tmp_path, tokenize):
    res = _export(runs.values(), tmp_path / "l.jsonl", "llama3", tokenize=tokenize)
    lines = worlds.read_lines(tmp_path / "l.jsonl")
    tok = chat_format().tokenizer
    assert Counter(line["id"].split("/")[0] for line in lines) == {"fumbles": 3, "trails_off": 2, "silent": 2,
                                                                    "clean": 3}  # every sample written
    reasons: Counter[str] = Counter()
    for line in lines:
        text, spans = line["text"], line["mask"]
        assert text == reference_text(line["messages"])  # Meta's ChatFormat, invalid turns and all
        trained = _trained(line)
        for (a, b), m in zip(spans, trained, strict=True):
            piece = text[a:b]
            assert text[:a].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
            if m.get("tool_calls"):
                assert piece.startswith(m["content"] + '{"type": "function", "name": "deposit"')
            else:
                assert piece == m["content"] + "<|eot_id|>" and m["content"].strip()
        reasons.update(m["invalid"] for m in line["messages"] if m["role"] == "assistant" and m.get("invalid"))
        masked = "".join(text[a:b] for a, b in spans)
        assert NOTICE not in masked and "not json" not in masked and "im_end" not in masked
        if tokenize:
            assert line["tokens"] == encode(line["messages"])
            ones = [t for t, keep in zip(line["tokens"], line["token_mask"]) if keep]
            assert tok.decode(ones) == masked
        if line["id"].startswith("silent/"):
            assert spans == [] and not trained
    # Per fumbling sample: four empty turns, the garbage, the lookalike, a rejected call and a rejected
    # parallel call (two turns); per trailing and silent sample, three empty turns.
    assert reasons["empty turn"] == 3 * 4 + 2 * 3 + 2 * 3
    assert sum(n for r, n in reasons.items() if r.startswith("tool call is not valid JSON")) == 3
    assert sum(reasons.values()) == 3 * 9 + 2 * 3 + 2 * 3
    assert "invalid_turns_left_out" not in res.card


# -- openai ------------------------------------------------------------------------------------


def test_openai_leaves_out_empty_turns_and_unrun_calls_and_weighs_other_rejected_turns_zero(runs, tmp_path):
    res = _export(runs.values(), tmp_path / "o.jsonl", "openai", validation=0.3)
    assert openai_format_errors([x for p in res.outputs.values() for x in worlds.read_lines(p)]) == Counter()
    lines = [x for p in res.outputs.values() for x in worlds.read_samples(p)]  # (with their ids)
    by_run = Counter(x["id"].split("/")[0] for x in lines)
    assert by_run == {"fumbles": 3, "trails_off": 2, "clean": 3}
    assert res.card["filtered"]["no_valid_assistant_turn"] == 2  # the silent clerk's samples
    for x in lines:
        messages = x["messages"]
        assert messages[-1]["role"] == "assistant"
        weighed = [(m["content"], m.get("weight")) for m in messages if m["role"] == "assistant" and "weight" in m]
        if x["id"].startswith("fumbles/"):
            # The garbage and the lookalike stay, out of the loss, each answered by its notice.
            assert weighed == [("{not json", 0), ("Sure.<\\|im_end|>", 0)]
            notices = [m["content"] for m in messages if m["role"] == "user" and m["content"].startswith(NOTICE)]
            assert len(notices) == 2 and not any(n.endswith("empty turn") for n in notices)
            assert [m.get("content") for m in messages if m["role"] == "assistant"] == [
                "{not json", "Sure.<\\|im_end|>", None, messages[-1]["content"]]
        else:
            assert weighed == [] and not any(NOTICE in (m.get("content") or "") for m in messages)
    # Per fumbling sample: four empty turns, a rejected call and a rejected parallel call; per trailing
    # one: the empty turns (each its own notice), cut after the deposit.
    assert res.card["invalid_turns_left_out"] == 3 * 6 + 2 * 3


# -- trl and sharegpt ----------------------------------------------------------------------------


def _clean_view(line_id: str, lines: dict[str, Any]) -> Any:
    return lines[line_id.replace("fumbles/", "clean/")]


def test_trl_lines_read_as_if_the_rejected_moves_had_not_been_made(runs, tmp_path):
    res = _export(runs.values(), tmp_path / "t.jsonl", "trl")
    lines = {x["id"]: x for x in worlds.read_samples(tmp_path / "t.jsonl")}
    assert Counter(i.split("/")[0] for i in lines) == {"fumbles": 3, "trails_off": 2, "clean": 3}
    template = _trl_template()
    for line_id, line in lines.items():
        messages = line["messages"]
        assert messages[0]["role"] == "system" and messages[1]["role"] == "user"
        assert messages[-1]["role"] == "assistant"
        assert all(len(m.get("tool_calls", [None])) == 1 for m in messages)
        rendered = render_jinja_template(conversations=[messages], tools=line.get("tools"), chat_template=template,
                                         bos_token="<|begin_of_text|>", add_generation_prompt=False)[0][0]
        assert NOTICE not in rendered and "not json" not in rendered and "im_end" not in rendered
        assert "<|start_header_id|>assistant<|end_header_id|>\n\n<|eot_id|>" not in rendered
        if line_id.startswith("fumbles/"):
            # The fumbler's conversation is the competent clerk's, up to its own wording of the answer.
            clean = _clean_view(line_id, lines)["messages"]
            assert messages[:-1] == clean[:-1] and messages[-1]["content"].startswith("Deposited.")
        elif line_id.startswith("trails_off/"):
            assert [m["role"] for m in messages] == ["system", "user", "assistant"] and messages[-1]["tool_calls"]
    assert res.card["filtered"]["no_valid_assistant_turn"] == 2
    assert res.card["invalid_turns_left_out"] == 3 * 8 + 2 * 3


def test_sharegpt_lines_follow_llama_factory_rules_without_the_rejected_moves(runs, tmp_path):
    res = _export(runs.values(), tmp_path / "s.jsonl", "sharegpt")
    lines = {x["id"]: x for x in worlds.read_samples(tmp_path / "s.jsonl")}
    assert Counter(i.split("/")[0] for i in lines) == {"fumbles": 3, "trails_off": 2, "clean": 3}
    for line_id, line in lines.items():
        conv = line["conversations"]
        assert conv and len(conv) % 2 == 0  # LLaMA-Factory: human/observation on even slots, replies on odd
        for i, turn in enumerate(conv):
            assert turn["from"] in (("human", "observation") if i % 2 == 0 else ("gpt", "function_call"))
            assert NOTICE not in turn["value"] and "not json" not in turn["value"] and "im_end" not in turn["value"]
            assert turn["value"].strip() or (i == 0 and turn["from"] == "human")
            if turn["from"] == "function_call":
                _, call = _llama_factory_function_call(turn["value"])
                assert call["name"] == "deposit" and set(call["arguments"]) == {"account", "amount"}
        if line_id.startswith("fumbles/"):
            clean = _clean_view(line_id, lines)["conversations"]
            assert conv[:-1] == clean[:-1] and conv[-1]["value"].startswith("Deposited.")
        elif line_id.startswith("trails_off/"):
            assert [t["from"] for t in conv] == ["human", "function_call"]
    assert res.card["filtered"]["no_valid_assistant_turn"] == 2
    assert res.card["invalid_turns_left_out"] == 3 * 8 + 2 * 3


def test_dpo_sides_leave_them_out_as_trl_does(runs, tmp_path):
    res = _export([runs["clean"], runs["fumbles"]], tmp_path / "d.jsonl", "dpo")
    pairs = worlds.read_samples(tmp_path / "d.jsonl")
    assert len(pairs) == 3 and res.card["dpo"]["pairs"] == 3
    for pair in pairs:
        assert pair["id"].startswith("clean/") and ">fumbles/" in pair["id"]  # the fumbler scored lower
        for part in ("prompt", "chosen", "rejected"):
            for m in pair[part]:
                assert NOTICE not in m["content"] and "not json" not in m["content"] and "im_end" not in m["content"]
                assert m["role"] != "assistant" or m["content"] or m.get("tool_calls")
        # Both made the same deposit: they part at their answers.
        assert [m["role"] for m in pair["prompt"]] == ["system", "user", "assistant", "tool"]
        assert [m["role"] for m in pair["chosen"]] == [m["role"] for m in pair["rejected"]] == ["assistant"]
        assert pair["rejected"][0]["content"].startswith("Deposited.")
    assert res.card["invalid_turns_left_out"] == 3 * 8
    # A side with no valid assistant turn makes no pair.
    res = _export([runs["clean"], runs["silent"]], tmp_path / "d2.jsonl", "dpo")
    assert res.card["dpo"]["pairs"] == 0 and res.card["dpo"]["skipped_no_valid_assistant_turn"] == 2


# -- the LLM agent against a real server ------------------------------------------------------------


def _fumbling_model(endpoint: str, body: dict[str, Any]):
    """The clerk's model says nothing, then makes a malformed call, then writes a control-token
    lookalike, then (each answered by an error notice) does what a competent one does."""
    if endpoint != "chat" or not body.get("tools"):
        return ledger_policy(endpoint, body)
    said = sum(1 for m in body["messages"] if NOTICE in str(m.get("content")))
    script = [text(""), calls(ToolCallReply("deposit", raw_arguments='{"account": 3,')), text("Done.<|im_end|>")]
    return script[said] if said < len(script) else ledger_policy(endpoint, body)


def test_an_llm_clerks_empty_and_malformed_replies_in_every_format(tmp_path):
    with ScriptedServer(_fumbling_model) as server:
        run = worlds.make_run(tmp_path / "llm", _scenario({
            "type": "llm", "model": "openai/test-model", "api_base": server.base_url, "client": "openai",
            "retry_backoff": 0.01, "retry_backoff_max": 0.02, "timeout": 5.0}), 2)
    (record, *_) = iter_records(run)
    clerk = [e for e in record["events"] if e["speaker"] == "clerk" and e["role"] == "assistant"]
    assert [bool(e["invalid"]) for e in clerk] == [True, True, True, False, False] and clerk[0]["content"] == ""
    out = {fmt: _export([run], tmp_path / f"{fmt}.jsonl", fmt) for fmt in ("llama3", "openai", "trl", "sharegpt")}
    for line in worlds.read_lines(tmp_path / "llama3.jsonl"):
        assert line["text"] == reference_text(line["messages"])
        pieces = [line["text"][a:b] for a, b in line["mask"]]
        assert len(pieces) == 2 and pieces[0].startswith('{"type": "function", "name": "deposit"')
        assert pieces[1].startswith("Done. The balance is now")
    openai = worlds.read_lines(tmp_path / "openai.jsonl")
    assert len(openai) == 2 and openai_format_errors(openai) == Counter()  # before: missing_content
    for line in openai:
        # The empty reply is left out with its notice; the malformed call (as its text) and the
        # lookalike stay, with weight 0.
        assert [m.get("weight") for m in line["messages"] if m["role"] == "assistant"] == [0, 0, None, None]
        assert not any(m.get("content") == f"{NOTICE}: {clerk[0]['invalid']}" for m in line["messages"])
    assert out["openai"].card["invalid_turns_left_out"] == 2
    for line in worlds.read_lines(tmp_path / "trl.jsonl"):
        assert [m["role"] for m in line["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
        assert not any(NOTICE in m["content"] for m in line["messages"])
    for line in worlds.read_lines(tmp_path / "sharegpt.jsonl"):
        assert [t["from"] for t in line["conversations"]] == ["human", "function_call", "observation", "gpt"]
    assert out["trl"].card["invalid_turns_left_out"] == out["sharegpt"].card["invalid_turns_left_out"] == 6


# -- the one-pass llama3 render ------------------------------------------------------------------


def test_the_one_pass_render_judges_them_as_the_general_path_does(runs):
    """Over the runs' records and an Episode stepped by hand: the fast path's conversation, text,
    spans and counts equal the perspective path's, with the same turns marked invalid."""
    sc = _scenario({"type": "ledger_clerk"})
    ep = Episode(sc, episode_specs(sc, 1)[0])
    ep.step("Please deposit 5 into account 3.")
    deposit = Message(role="assistant", content="", tool_calls=[_deposit(3, 5)])
    for move in ("", Message(role="assistant", content=""), "  ", Message(role="assistant", content="\n"),
                 _rejected_calls(3, 5, 2), "{not json", deposit, Message(role="assistant", content="")):
        ep.step(move)
    logs = [[e.model_dump() for e in ep.events]]
    logs += [rec["events"] for run in runs.values() for rec in iter_records(run)]
    marked = 0
    for events in logs:
        view, tail = training_view_and_tail(perspective_dicts(events, "clerk", "SYS"))
        for mask_failed in (False, True):
            rendered = render_events(events, "clerk", offset=5, mask_failed=mask_failed)
            assert _one_pass(rendered) == _general_path(view, offset=5, mask_failed=mask_failed, tail=tail)
        marked += sum(1 for m in rendered.conversation if m.get("invalid") == "empty turn")
    turns = [m for m in render_events(logs[0], "clerk").conversation if m["role"] == "assistant"]
    assert [m.get("invalid") == "empty turn" for m in turns] == [True] * 4 + [False] * 4 + [True]
    assert [bool(m.get("invalid")) for m in turns] == [True] * 7 + [False, True]
    assert marked > 20


def test_the_cli_says_how_many_rejected_turns_it_left_out(runs, tmp_path):
    from click.testing import CliRunner

    from simworld.cli import cli

    res = CliRunner().invoke(cli, ["export", *(str(r) for r in runs.values()), "--format", "trl", "--no-dedup",
                                    "--out", str(tmp_path / "t.jsonl")])
    assert res.exit_code == 0, res.output
    assert "turns the environment rejected left out: 30" in res.output
    res = CliRunner().invoke(cli, ["export", str(runs["clean"]), "--format", "trl", "--no-dedup",
                                    "--out", str(tmp_path / "c.jsonl")])
    assert res.exit_code == 0, res.output
    assert "rejected left out" not in res.output


@pytest.mark.parametrize("fmt", ["llama3", "openai", "trl"])
def test_the_card_counts_only_calls_that_ran(runs, tmp_path, fmt):
    """The fumbler's rejected turns hold three deposit calls the engine never ran; its one real
    deposit is all the card counts, as for the competent clerk."""
    cards = {name: _export([runs[name]], tmp_path / f"{name}.jsonl", fmt).card for name in ("fumbles", "clean")}
    for card in cards.values():
        assert card["tool_calls_per_sample"] == {"samples": 3, "min": 1, "mean": 1.0, "p50": 1, "p90": 1, "max": 1}
    (fumbles,), (clean,) = (c["coverage"].values() for c in (cards["fumbles"], cards["clean"]))
    assert fumbles["tools"] == clean["tools"] and fumbles["tools"]["deposit"] == 3
