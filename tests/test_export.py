"""Export: every format over a batch covering every scenario, checked against the real consumers
(Meta's ChatFormat, the TRL Llama 3.1 chat template rendered as transformers does, LLaMA-Factory's
ShareGPT rules), plus masks and tokens."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from transformers.utils.chat_template_utils import render_jinja_template

import test_export_worlds as worlds
from simworld.episode import STOP
from simworld.export import ExportOptions, export_runs
from simworld.export.curation import validate_openai_record
from simworld.export.source import open_run, perspective_dicts
from simworld.llama3.format import format_date
from simworld.perspective import perspective
from simworld.runio import iter_records
from simworld.types import Message
from test_llama3_oracle import chat_format, encode, reference_text

CASES = worlds.scenario_cases()


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A run of every scenario (4 episodes each) and its export in every format (no dedup)."""
    root = tmp_path_factory.mktemp("export")
    runs = {}
    for case in CASES:
        sc = worlds.scenario_of(case.values[0])
        runs[case.id] = worlds.make_run(root / case.id.replace("/", "_"), sc, 4)
    out = {}
    for fmt in ("llama3", "openai", "trl", "sharegpt"):
        path = root / f"{fmt}.jsonl"
        res = export_runs(list(runs.values()), ExportOptions(fmt=fmt, out=str(path), dedup=False,
                                                             tokenize=fmt == "llama3"))
        out[fmt] = worlds.read_samples(path)
        out[fmt + ".card"] = res.card
    # The default llama3 export (no tokens) takes the one-pass path over the records' events.
    path = root / "llama3-plain.jsonl"
    res = export_runs(list(runs.values()), ExportOptions(fmt="llama3", out=str(path), dedup=False))
    out["llama3-plain"] = worlds.read_samples(path)
    out["llama3-plain.card"] = res.card
    return runs, out


def _assistant_roles(run):
    return {r for r, s in open_run(run).scenario.roles.items() if s.kind == "assistant"}


def test_one_sample_per_assistant_perspective_of_every_trajectory(batch):
    runs, out = batch
    ids = {line["id"] for line in out["llama3"]}
    assert len(ids) == len(out["llama3"])
    for case_id, run in runs.items():
        roles = _assistant_roles(run)
        for rec in iter_records(run):
            acted = {e["speaker"] for e in rec["events"] if e["role"] == "assistant"}
            for role in roles & acted:
                assert f"{run.name}/{rec['episode_id']}/{role}" in ids, (case_id, role)
    negotiation = [line for line in out["llama3"] if line["provenance"]["scenario"] in ("haggle_test", "used_car")]
    per_episode = {}
    for line in negotiation:
        per_episode.setdefault(line["provenance"]["episode_id"], set()).add(line["perspective"])
    assert per_episode and all(len(p) == 2 for p in per_episode.values())  # one sample per party


def test_llama3_text_equals_metas_chat_format_for_every_scenario(batch):
    runs, out = batch
    assert {line["provenance"]["scenario"] for line in out["llama3"]} >= {
        open_run(run).scenario.name for run in runs.values()}
    for line in out["llama3"]:
        assert line["text"] == reference_text(line["messages"]), line["id"]
    plain = out["llama3-plain"]
    assert [x["id"] for x in plain] == [x["id"] for x in out["llama3"]]
    for line, tokenized in zip(plain, out["llama3"]):
        assert line["text"] == reference_text(line["messages"]), line["id"]
        assert line == {k: v for k, v in tokenized.items() if k not in ("tokens", "token_mask")}


def test_llama3_system_message_and_tools(batch):
    runs, out = batch
    by_name = {open_run(run).scenario.name: open_run(run) for run in runs.values()}
    for line in out["llama3"]:
        run = by_name[line["provenance"]["scenario"]]
        system = line["messages"][0]
        assert system["role"] == "system"
        date = f"Cutting Knowledge Date: December 2023\nToday Date: {format_date(run.scenario.today)}"
        if line["tools"]:
            assert system["content"].startswith("Environment: ipython\n\n" + date + "\n\n")
            for tool in line["tools"]:
                assert f'"name": "{tool["function"]["name"]}"' in system["content"]
        else:
            assert system["content"].startswith(date)
        assert STOP not in line["text"]
        assert line["text"].endswith(("<|eot_id|>", "<|eom_id|>"))
        assert line["messages"][-1]["role"] == "assistant"
        assert line["synthetic"] is True and line["provenance"]["synthetic"] is True
        for key in ("scenario", "seed", "agents", "episode_id", "instance_id"):
            assert key in line["provenance"]
        assert "scores" not in line["provenance"]  # (the line's own `scores`)
        agents = worlds.provenance_map(line["provenance"], "agents")
        assert line["perspective"] in agents and isinstance(worlds.provenance_map(line["provenance"], "variation"), dict)


def test_negotiation_samples_carry_the_issue_specific_offer_schema(batch):
    _, out = batch
    car = [line for line in out["llama3"] if line["provenance"]["scenario"] == "used_car"]
    if not car:
        pytest.skip("no used_car scenario in this checkout")
    offer = next(t for t in car[0]["tools"] if t["function"]["name"] == "make_offer")
    assert set(offer["function"]["parameters"]["properties"]) >= {"price", "warranty_months"}


def test_character_masks_cover_exactly_the_valid_assistant_turns(batch):
    _, out = batch
    for line in out["llama3"]:
        text, spans = line["text"], line["mask"]
        trained = [m for m in line["messages"] if m["role"] == "assistant" and not m.get("invalid")]
        assert len(spans) == len(trained)
        for (a, b), m in zip(spans, trained):
            assert text[:a].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
            piece = text[a:b]
            assert piece.startswith(m["content"])
            assert piece.endswith("<|eom_id|>" if m.get("tool_calls") else "<|eot_id|>")
        outside = "".join(text[b:a] for (_, b), (a, _) in zip([(0, 0)] + spans, spans + [(len(text), 0)]))
        said_by_others = [m.get("content") or "" for m in line["messages"] if m not in trained]
        for m in trained:
            # (a sentence the other party also said, e.g. a negotiator's stock phrase, is outside too)
            if len(m["content"]) > 40 and not any(m["content"] in other for other in said_by_others):
                assert m["content"] not in outside


def test_token_masks_match_metas_tokens(batch):
    _, out = batch
    tok = chat_format().tokenizer
    for line in out["llama3"][:60]:
        assert line["tokens"] == encode(line["messages"])
        assert tok.decode(line["tokens"]) == line["text"]
        ones = [t for t, m in zip(line["tokens"], line["token_mask"]) if m]
        assert tok.decode(ones) == "".join(line["text"][a:b] for a, b in line["mask"])


def test_openai_lines_are_valid_chat_fine_tuning_data(batch):
    _, out = batch
    for line in out["openai"]:
        messages, tools = validate_openai_record(line)  # the same validator that --mix applies
        for m in line["messages"]:
            for call in m.get("tool_calls", []):
                assert isinstance(call["function"]["arguments"], str) and call["type"] == "function"
            assert m["role"] != "assistant" or "content" in m or m.get("tool_calls")
        assert all(t["type"] == "function" for t in line.get("tools", []))
        assert len(messages) == len(line["messages"]) and tools == line.get("tools", [])
        weights = [m.get("weight") for m in line["messages"] if m["role"] == "assistant"]
        assert all(w in (None, 0) for w in weights)


def _trl_template() -> str:
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / "llama3_1.jinja").read_text()


def _assistant_turns_of_llama3(line):
    """(text, calls) of each valid assistant turn of a llama3 line: what trl and sharegpt, which have no
    per-turn loss, must keep (the invalid ones are left out with the notices that answer them)."""
    return [(m["content"], [(c["name"], c["arguments"]) for c in m.get("tool_calls", [])])
            for m in line["messages"] if m["role"] == "assistant" and not m.get("invalid")]


def _invalid_turns_of_llama3(line):
    return sum(1 for m in line["messages"] if m["role"] == "assistant" and m.get("invalid"))


def test_trl_lines_render_through_the_official_llama31_template(batch):
    _, out = batch
    template = _trl_template()
    llama3 = {line["id"]: line for line in out["llama3"]}
    texts_with_calls = left_out = 0
    for line in out["trl"]:
        for m in line["messages"]:
            assert "tool_calls" not in m or len(m["tool_calls"]) == 1  # template: one call per turn
            for call in m.get("tool_calls", []):
                assert isinstance(call["function"]["arguments"], dict)
        assert "tools" not in line or line["tools"]  # an empty list would change the output
        rendered, _ = render_jinja_template(conversations=[line["messages"]], tools=line.get("tools"),
                                            chat_template=template, bos_token="<|begin_of_text|>",
                                            add_generation_prompt=False)
        text = rendered[0]
        assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>")
        # Every assistant turn of the llama3 sample is here, its text (a message of its own when the
        # turn also calls a tool: the template renders only the call of a tool-call message) before
        # its call, and the rendered text shows them in that order.
        expected, shown = [], []
        for content, calls in _assistant_turns_of_llama3(llama3[line["id"]]):
            if content.strip():
                expected.append(("text", content))
                shown.append(content.strip())
                texts_with_calls += bool(calls)
            for name, args in calls:
                expected.append(("call", name, args))
                shown.append(f'{{"name": "{name}", "parameters": ')
        written = []
        for m in line["messages"]:
            if m["role"] == "assistant" and m.get("tool_calls"):
                call = m["tool_calls"][0]["function"]
                written.append(("call", call["name"], call["arguments"]))
            elif m["role"] == "assistant":
                written.append(("text", m["content"]))
        assert written == expected, line["id"]
        at = 0
        for piece in shown:
            at = text.index(piece, at) + len(piece)
        assert "Error: invalid action" not in text
        left_out += _invalid_turns_of_llama3(llama3[line["id"]])
    assert texts_with_calls > 10  # the negotiators speak and offer in one turn
    assert left_out > 0  # the sloppy clerk's "{not json"


_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def _llama_factory_function_call(value):
    """(text, call) of a function_call value as LLaMA-Factory (0.9.4 on) reads it: the JSON between
    its first <tool_call> tags, the rest text before the call; or the whole value as JSON."""
    match = _TOOL_CALL.search(value)
    if match is None:
        return "", orjson.loads(value)
    return value.replace(match.group(0), ""), orjson.loads(match.group(1))


def test_sharegpt_lines_follow_llama_factory_rules(batch):
    _, out = batch
    llama3 = {line["id"]: line for line in out["llama3"]}
    texts_with_calls = 0
    for line in out["sharegpt"]:
        conv = line["conversations"]
        assert conv and len(conv) % 2 == 0
        replies = []
        for i, turn in enumerate(conv):
            assert turn["from"] in (("human", "observation") if i % 2 == 0 else ("gpt", "function_call"))
            if turn["from"] == "function_call":
                text, call = _llama_factory_function_call(turn["value"])
                assert set(call) == {"name", "arguments"} and isinstance(call["arguments"], dict)
                replies.append((text, [(call["name"], call["arguments"])]))
                texts_with_calls += bool(text)
            elif turn["from"] == "gpt":
                replies.append((turn["value"], []))
        # One reply per valid assistant turn of the llama3 sample, with its text and its call.
        assert replies == _assistant_turns_of_llama3(llama3[line["id"]]), line["id"]
        assert not any(t["value"].startswith("Error: invalid action") for t in conv)
        if line["tools"]:
            assert all("name" in t and "parameters" in t for t in orjson.loads(line["tools"]))
    assert texts_with_calls > 10


def test_sharegpt_call_text_that_holds_the_tag_is_left_out_and_counted(tmp_path):
    from simworld.export.formats import sharegpt_line, sharegpt_texts_left_out
    from simworld.export.source import Sample

    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "go"},
                {"role": "assistant", "content": "Use <tool_call> tags.", "tool_calls": [
                    {"id": "c1", "name": "f", "arguments": {"s": "</tool_call>"}}]},
                {"role": "tool", "content": "ok", "tool_call_id": "c1"},
                {"role": "assistant", "content": "Then: ", "tool_calls": [
                    {"id": "c2", "name": "f", "arguments": {"s": "a </tool_call> b"}}]},
                {"role": "tool", "content": "ok", "tool_call_id": "c2"}]
    sample = Sample(id="x", perspective="a", messages=messages, tools=[], tools_openai=[], today=None, scores={},
                    provenance={})
    calls = [t["value"] for t in sharegpt_line(sample)["conversations"] if t["from"] == "function_call"]
    assert [_llama_factory_function_call(v) for v in calls] == [
        ("", {"name": "f", "arguments": {"s": "</tool_call>"}}),
        ("Then: ", {"name": "f", "arguments": {"s": "a </tool_call> b"}})]
    assert sharegpt_texts_left_out(messages) == 1


def test_card_counts_the_assistant_turns_each_format_writes(batch):
    from collections import Counter

    from simworld.export.card import _dist

    _, out = batch
    written = {}
    for fmt in ("llama3", "llama3-plain", "openai", "trl"):
        written[fmt] = {x["id"]: sum(1 for m in x["messages"] if m["role"] == "assistant") for x in out[fmt]}
    written["sharegpt"] = {x["id"]: sum(1 for t in x["conversations"] if t["from"] in ("gpt", "function_call"))
                           for x in out["sharegpt"]}
    for fmt, turns in written.items():
        assert out[fmt + ".card"]["assistant_turns_per_sample"] == _dist(Counter(turns.values())), fmt
    # Parallel calls are one turn per call in llama3 (and sharegpt, which leaves the invalid turns
    # out), one message in openai; trl writes the text of a turn that also calls a tool as a message
    # of its own.
    assert written["llama3-plain"] == written["llama3"]
    invalid = {x["id"]: _invalid_turns_of_llama3(x) for x in out["llama3"]}
    assert written["sharegpt"] == {i: n - invalid[i] for i, n in written["llama3"].items()}
    for fmt in ("trl", "sharegpt"):
        assert out[fmt + ".card"]["invalid_turns_left_out"] == sum(invalid.values()) > 0, fmt
    assert out["openai.card"]["invalid_turns_left_out"] == 0  # (it leaves out only what it cannot write)
    assert "invalid_turns_left_out" not in out["llama3.card"]
    assert any(written["llama3"][i] > n for i, n in written["openai"].items())
    assert any(written["trl"][i] > n for i, n in written["llama3"].items())


def test_perspective_of_dicts_equals_the_core_perspective(batch):
    runs, _ = batch
    for run in runs.values():
        info = open_run(run)
        for rec in iter_records(run):
            events = [Message.model_validate(e) for e in rec["events"]]
            for role in info.scenario.roles:
                core = [m.model_dump(exclude_defaults=True) for m in perspective(events, role, rec["system"][role])]
                mine = [Message.model_validate({k: v for k, v in m.items() if v is not None}).model_dump(
                    exclude_defaults=True) for m in perspective_dicts(rec["events"], role, rec["system"][role])]
                assert mine == core


def test_fast_llama3_serialization_equals_the_plain_one(batch):
    from simworld.export.formats import llama3_line, llama3_line_bytes
    from simworld.export.source import ScoreLookup, compact_scores, samples_of

    runs, _ = batch
    n = 0
    for run in runs.values():
        info = open_run(run)
        lookup = ScoreLookup(info)
        for rec in iter_records(run):
            for sample in samples_of(info, rec, compact_scores(lookup.get(rec))):
                assert orjson.loads(llama3_line_bytes(sample)) == orjson.loads(orjson.dumps(llama3_line(sample)))
                n += 1
        lookup.close()
    assert n > 20


def _general_path(messages, offset=7, mask_failed=False, tail=()):
    """What the llama3 line, the card and deduplication make of a training view (and what its cut left
    out) without the one-pass render."""
    from simworld.export.card import _turns_and_calls
    from simworld.export.curation import dedup_text
    from simworld.export.source import Sample
    from simworld.llama3.format import conversation_messages, render_normalized

    conv = conversation_messages(messages[1:] if messages and messages[0]["role"] == "system" else messages,
                                 mask_failed, tail)
    text, spans = render_normalized(conv, begin=False, offset=offset)
    plain = Sample(id="x", perspective="r", messages=messages, tools=[], tools_openai=[], today=None, scores={},
                   provenance={})
    _, calls, sequence = _turns_and_calls(messages, list(tail))
    turns = sum(1 for m in conv if m["role"] == "assistant")  # as written: a parallel-call turn is one per call
    return conv, text, [list(s) for s in spans], (turns, calls, sequence), dedup_text(plain)


def _one_pass(rendered):
    return (rendered.conversation, rendered.text, rendered.spans, (rendered.turns, rendered.calls, rendered.sequence),
            rendered.dedup_text)


def test_one_pass_render_of_events_equals_the_perspective_path(batch):
    from simworld.export.source import render_events, training_view_and_tail

    runs, _ = batch
    n = failed_turns = 0
    for run in runs.values():
        info = open_run(run)
        for rec in iter_records(run):
            for role, kind in info.kinds.items():
                view, tail = training_view_and_tail(perspective_dicts(rec["events"], role, rec["system"].get(role)))
                rendered = render_events(rec["events"], role, offset=7)
                if kind != "assistant" or not any(m["role"] == "assistant" for m in view):
                    assert rendered is None or kind != "assistant"
                    continue
                assert rendered is not None
                assert _one_pass(rendered) == _general_path(view, tail=tail)
                masked = render_events(rec["events"], role, offset=7, mask_failed=True)
                assert _one_pass(masked) == _general_path(view, mask_failed=True, tail=tail)
                failed_turns += sum(1 for m in masked.conversation if m.get("tool_calls") and m.get("invalid"))
                n += 1
    assert n > 20
    assert failed_turns > 0  # the sloppy ledger clerk's calls fail


def _ev(speaker, role, content="", **kw):
    return {"speaker": speaker, "role": role, "content": content, "tool_calls": [], "tool_call_id": None, "name": None,
            "error": False, "invalid": None, "audience": None, **kw}


def test_one_pass_render_handles_merges_stop_markers_audiences_errors_and_rejected_turns():
    from simworld.export.source import render_events, training_view_and_tail

    call = {"id": "call_3_0", "name": "lookup", "arguments": {"q": "x <|eot_id|>"}}
    events = [
        _ev("user", "user", "hi"), _ev("user", "user", ""), _ev("user", "user", "again"),
        _ev("world", "user", "for someone else", audience="other"), _ev("world", "user", "a notice", audience="bot"),
        _ev("bot", "assistant", "", tool_calls=[call]),
        _ev("bot", "tool", "boom", tool_call_id="call_3_0", name="lookup", error=True),
        _ev("other", "tool", "not mine", tool_call_id="c9"),
        _ev("bot", "assistant", "", tool_calls=[dict(call, id="call_5_0", arguments={})]),
        _ev("bot", "tool", "ok", tool_call_id="call_5_0", name="lookup"),
        _ev("bot", "assistant", "garbage", invalid="unparseable"),
        _ev("user", "user", f"thanks {STOP}"),
        _ev("bot", "assistant", "bye"),
        _ev("user", "user", "trailing"),
        _ev("bot", "tool", "after the last turn", tool_call_id="call_5_0", error=True),
    ]
    view, tail = training_view_and_tail(perspective_dicts(events, "bot", "SYS"))
    rendered = render_events(events, "bot", offset=7)
    assert _one_pass(rendered) == _general_path(view, tail=tail)
    masked = render_events(events, "bot", offset=7, mask_failed=True)
    assert _one_pass(masked) == _general_path(view, mask_failed=True, tail=tail)
    # The last result of an id decides, though it came after the view's last turn.
    assert [m.get("invalid") for m in masked.conversation if m.get("tool_calls")] == ["the tool call failed"] * 2
    assert masked.spans == rendered.spans[2:] and masked.text == rendered.text
    assert rendered.turns == 4 and rendered.calls == 2 and rendered.sequence == []
    assert rendered.conversation[0] == {"role": "user", "content": "hi\n\nagain\n\na notice"}
    assert render_events(events, "nobody") is None


def test_one_pass_render_marks_empty_and_rejected_call_turns_as_the_general_path_does():
    from simworld.export.source import render_events, training_view_and_tail

    def call(i):
        return {"id": f"call_{i}", "name": "lookup", "arguments": {"n": i}}

    notice = _ev("world", "user", "Error: invalid action: empty turn", audience="bot")
    logs = {
        "empty and blank turns, the last one too": [
            _ev("user", "user", "go"), _ev("bot", "assistant", ""), notice, _ev("bot", "assistant", " \n"), notice,
            _ev("bot", "assistant", "", tool_calls=[call(1)]), _ev("bot", "tool", "r1", tool_call_id="call_1"),
            _ev("bot", "assistant", "\t"), notice, _ev("bot", "assistant", "ok"), _ev("user", "user", "more"),
            _ev("bot", "assistant", ""), notice],
        "rejected single and parallel calls": [
            _ev("user", "user", "go"), _ev("bot", "assistant", "x", tool_calls=[call(1)], invalid="a marker"),
            _ev("world", "user", "Error: invalid action: a marker", audience="bot"),
            _ev("bot", "assistant", "y", tool_calls=[call(2), call(3)], invalid="a marker"),
            _ev("world", "user", "Error: invalid action: a marker", audience="bot"),
            _ev("bot", "assistant", "", tool_calls=[call(4), call(5)]), _ev("bot", "tool", "r4", tool_call_id="call_4"),
            _ev("bot", "tool", "r5", tool_call_id="call_5", error=True), _ev("bot", "assistant", "done")],
        "a rejected parallel call last": [
            _ev("user", "user", "go"), _ev("bot", "assistant", "", tool_calls=[call(1), call(2)], invalid="a marker"),
            _ev("world", "user", "Error: invalid action: a marker", audience="bot")],
    }
    for label, events in logs.items():
        view, tail = training_view_and_tail(perspective_dicts(events, "bot", "SYS"))
        for mask_failed in (False, True):
            rendered = render_events(events, "bot", offset=3, mask_failed=mask_failed)
            assert _one_pass(rendered) == _general_path(view, offset=3, mask_failed=mask_failed, tail=tail), label
        turns = [m for m in rendered.conversation if m["role"] == "assistant"]
        assert len(rendered.spans) == sum(1 for m in turns if not m.get("invalid")), label
        if label.startswith("empty"):
            assert [m.get("invalid") for m in turns] == ["empty turn"] * 2 + [None] + ["empty turn", None, "empty turn"]
        elif label.startswith("rejected"):
            assert [m.get("invalid") for m in turns] == ["a marker"] * 3 + [None, "the tool call failed", None]
        else:
            assert rendered.spans == [] and [m.get("invalid") for m in turns] == ["a marker"] * 2


def test_one_pass_render_splits_parallel_calls_as_the_general_path_does():
    from simworld.export.source import render_events, training_view_and_tail

    def call(i, name="lookup"):
        return {"id": f"call_{i}", "name": name, "arguments": {"n": i}}

    def result(i, **kw):
        return _ev("bot", "tool", f"result {i}", tool_call_id=f"call_{i}", name="lookup", **kw)

    logs = {
        "results out of order, a stray and a repeated one": [
            _ev("user", "user", "go"), _ev("bot", "assistant", "two at once", tool_calls=[call(1), call(2)]),
            result(2, error=True), _ev("user", "user", "", audience="bot"), result(1), result(9), result(1),
            _ev("bot", "assistant", "done")],
        "a notice between results ends them": [
            _ev("bot", "assistant", "", tool_calls=[call(1), call(2)]), result(1),
            _ev("world", "user", "news", audience="bot"), result(2), _ev("bot", "assistant", "ok")],
        "the last turn, no results": [_ev("user", "user", "go"), _ev("bot", "assistant", "", tool_calls=[call(1), call(2)])],
        "the last turn, results cut off": [
            _ev("bot", "assistant", "x", tool_calls=[call(1), call(2)]), result(1), _ev("user", "user", "bye"), result(2),
            _ev("bot", "assistant", "", tool_calls=[call(3), call(4)]), result(3, error=True), result(4),
            _ev("user", "user", "bye")],
        "two groups in a row": [
            _ev("bot", "assistant", "a", tool_calls=[call(1), call(2)]), result(1), result(2),
            _ev("bot", "assistant", "b", tool_calls=[call(3), call(4, "other")]), result(4), result(3, error=True),
            _ev("bot", "assistant", "c")],
    }
    for label, events in logs.items():
        view, tail = training_view_and_tail(perspective_dicts(events, "bot", "SYS"))
        rendered = render_events(events, "bot", offset=3)
        assert rendered is not None, label
        assert _one_pass(rendered) == _general_path(view, offset=3, tail=tail), label
        masked = render_events(events, "bot", offset=3, mask_failed=True)
        assert _one_pass(masked) == _general_path(view, offset=3, mask_failed=True, tail=tail), label
        # A call whose result the record holds is followed by it, in the last turn too (only a log that
        # ends before any result has calls in a row).
        conv = rendered.conversation
        in_a_row = any(a.get("tool_calls") and b["role"] == "assistant" for a, b in zip(conv, conv[1:]))
        assert in_a_row == (label == "the last turn, no results"), label
    last = logs["the last turn, results cut off"]
    view, tail = training_view_and_tail(perspective_dicts(last, "bot", "SYS"))
    masked = render_events(last, "bot", offset=3, mask_failed=True).conversation
    assert [(m["role"], m.get("tool_calls", [{}])[0].get("id"), m.get("invalid")) for m in masked[-3:]] == [
        ("assistant", "call_3", "the tool call failed"), ("tool", None, None), ("assistant", "call_4", None)]
    assert masked[-2]["content"] == "result 3"  # the last call's result and what followed stay cut
    # A final call whose result was an error is masked, though the result is after the cut.
    single = [_ev("user", "user", "go"), _ev("bot", "assistant", "", tool_calls=[call(1)]), result(1, error=True),
              _ev("user", "user", "bye")]
    masked = render_events(single, "bot", offset=3, mask_failed=True)
    assert masked.conversation[-1]["invalid"] == "the tool call failed" and masked.spans == []
    view, tail = training_view_and_tail(perspective_dicts(single, "bot", "SYS"))
    assert _one_pass(masked) == _general_path(view, offset=3, mask_failed=True, tail=tail)
    # A late result after another message, and no turn after it: that one case is left to the general path.
    tail = [_ev("bot", "assistant", "", tool_calls=[call(1), call(2)]), result(1), _ev("user", "user", "x"), result(2)]
    assert render_events(tail, "bot") is None


def test_run_reader_keeps_last_records_across_buffer_refills_superseded_and_torn_lines(batch, tmp_path, monkeypatch):
    import shutil

    import simworld.runio as runio

    monkeypatch.setattr(runio, "_CHUNK", 4096)  # records longer than the buffer, lines across reads
    run = next(iter(batch[0].values()))
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shard = sorted(copy.glob("trajectories-*.jsonl"))[0]
    lines = shard.read_bytes().splitlines(keepends=True)
    again = orjson.loads(lines[0])
    again["seed"] = 12345  # the episode recorded again in a later shard: the later record wins
    (copy / "trajectories-999999-000.jsonl").write_bytes(orjson.dumps(again) + b"\n" + lines[1][:100])
    shard.write_bytes(b"".join(lines) + b"not json\n" + b'{"episode_id": "x"}\n')
    mine = list(runio.iter_records(copy))
    latest = [orjson.loads(line) for line in lines[1:]] + [again]
    # a line of JSON with an episode id is read as that episode's record, whatever its spacing (its
    # consumers then find it is no trajectory); a line that is no JSON is skipped
    assert mine[-1] == {"episode_id": "x"}
    mine = mine[:-1]
    assert mine == sorted(latest, key=lambda r: (r["episode_index"], r["episode_id"]))  # in episode order
    assert [r["seed"] for r in mine].count(12345) == 1 and len(mine) == len(lines)
    every = list(runio.iter_records(copy, latest_only=False))
    assert every == [orjson.loads(line) for line in lines] + [{"episode_id": "x"}, again]


def test_json_dumps_equals_the_standard_library():
    import json

    from simworld.llama3.format import json_dumps

    for value in ({"a": 1.5, "b": [1, {"c": "é\u2028\"x\\"}], "d": None, "e": True, "f": float("inf"), "g": -0.0,
                   "h": 10**30, "i": "\ud83d"}, {}, [], "plain", 3):
        assert json_dumps(value) == json.dumps(value)


# -- the last turn of a view: its results are cut, but they still count -------------------------------


def _scenario_run(tmp_path: Path, scenario: str, n: int, sets: tuple[str, ...] = ()) -> Path:
    from simworld.runner import resolve_scenario, run_batch

    sc = resolve_scenario(worlds.ROOT / "scenarios" / scenario, list(sets))
    run_batch(sc, tmp_path / "run", episodes=n)
    return tmp_path / "run"


def test_a_last_turn_of_parallel_calls_answers_each_call_but_the_last_in_every_split_format(tmp_path):
    """Negotiators reject and counter in one turn. When that is the view's last turn, each split call
    but the last is still followed by its result: never a call turn followed by another assistant
    turn (llama3, trl) or an empty human turn between two calls (sharegpt)."""
    run = _scenario_run(tmp_path, "negotiation/lease_renewal.yaml", 20)
    last_groups = 0
    for rec in iter_records(run):
        for role in ("tenant", "landlord"):
            turns = [e for e in rec["events"] if e["speaker"] == role and e["role"] == "assistant"]
            last_groups += bool(turns) and len(turns[-1]["tool_calls"]) > 1
    assert last_groups >= 3  # the case occurs in this scenario
    for fmt in ("llama3", "trl", "sharegpt"):
        export_runs([str(run)], ExportOptions(out=str(tmp_path / f"{fmt}.jsonl"), fmt=fmt, dedup=False))
        for line in worlds.read_samples(tmp_path / f"{fmt}.jsonl"):
            if fmt == "sharegpt":
                conv = line["conversations"]
                assert not any(a["from"] == "function_call" and b["from"] == "human" and not b["value"]
                               for a, b in zip(conv, conv[1:])), line["id"]
                assert conv[-1]["from"] in ("gpt", "function_call")
            else:
                msgs = line["messages"]
                assert not any(a["role"] == "assistant" and a.get("tool_calls") and b["role"] == "assistant"
                               and b.get("tool_calls") for a, b in zip(msgs, msgs[1:])), line["id"]
                assert msgs[-1]["role"] == "assistant"
                if fmt == "llama3":
                    assert "<|eom_id|><|start_header_id|>assistant" not in line["text"]


def test_mask_failed_calls_masks_a_last_call_whose_error_result_the_view_cut(tmp_path):
    run = _scenario_run(tmp_path, "retail/cancel_pending_order.yaml", 40,
                        ("roles.support.agent.type=noisy_oracle", "roles.support.agent.error_rate=0.7", "max_turns=6"))
    errors = {(r["episode_id"], e["tool_call_id"]): e["error"] for r in iter_records(run) for e in r["events"]
              if e["role"] == "tool"}  # (the last result of an id decides)
    opts = {"dedup": False, "mask_failed_calls": True}
    res = export_runs([str(run)], ExportOptions(out=str(tmp_path / "l.jsonl"), **opts))
    export_runs([str(run)], ExportOptions(out=str(tmp_path / "o.jsonl"), fmt="openai", **opts))
    openai = {x["id"]: x for x in worlds.read_samples(tmp_path / "o.jsonl")}
    ending_on_a_failed_call = 0
    for line in worlds.read_samples(tmp_path / "l.jsonl"):
        last = line["messages"][-1]
        if last.get("tool_calls") and errors[line["provenance"]["episode_id"], last["tool_calls"][0]["id"]]:
            ending_on_a_failed_call += 1
            assert last["invalid"] == "the tool call failed"
            assert not line["mask"] or line["mask"][-1][1] < len(line["text"])  # out of the loss
            assert openai[line["id"]]["messages"][-1]["weight"] == 0
    assert ending_on_a_failed_call >= 5
    masked = sum(1 for x in worlds.read_samples(tmp_path / "l.jsonl") for m in x["messages"]
                 if m.get("invalid") == "the tool call failed")
    assert res.card["failed_calls_masked"] == masked
