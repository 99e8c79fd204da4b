"""`--format openai` against OpenAI's published format checks, and the metadata files of the trainer
formats.

`openai_format_errors` re-implements the format error checks of OpenAI's cookbook notebook "Data
preparation and analysis for chat model fine-tuning" (examples/Chat_finetuning_data_prep.ipynb),
error names included, extended to tool calling as OpenAI's fine-tuning guide and API reference
describe it (the notebook predates ``tools``):

* the notebook's checks: each line a dict (``data_type``), a ``messages`` list
  (``missing_messages_list``), ``role`` and ``content`` in every message (``message_missing_key``),
  no message keys but ``role``, ``content``, ``name``, ``function_call``, ``weight``
  (``message_unrecognized_key``), a known role (``unrecognized_role``), textual content
  (``missing_content``), an assistant message in every example
  (``example_missing_assistant_message``);
* tool calling: ``tool_calls`` and ``tool_call_id`` are message keys and ``tool`` a role; an
  assistant message with ``tool_calls`` may go without ``content`` (the API reference: content is
  "required unless tool_calls or function_call is specified"; the guide's example has none), as
  the notebook already allows for ``function_call``; ``content``, when there, is a string;
* the API reference's per-line schema (``FineTuneChatRequestInput``): no top-level keys but
  ``messages``, ``tools``, ``parallel_tool_calls``, ``functions`` (``unrecognized_key``); tools as
  ``{"type": "function", "function": {"name", ...}}``, names of 1-64 letters, digits, ``_`` or
  ``-``, at most 128 (``invalid_tool``); ``weight`` 0 or 1 on assistant messages only
  (``invalid_weight``, the guide: "The allowed values for weight are currently 0 or 1");
* the chat format's call/result pairing: a call is ``{"id", "type": "function", "function":
  {"name", "arguments": a JSON object as a string}}`` (``invalid_tool_call``), a ``tool`` message
  answers an earlier call (``tool_message_without_call``), and every call but those of the last
  message is answered before the next assistant message (``tool_call_without_result``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import test_export_worlds as worlds
from simworld.export import ExportOptions, export_runs
from test_replay import cli

LINE_KEYS = ("messages", "tools", "parallel_tool_calls", "functions")
MESSAGE_KEYS = ("role", "content", "name", "function_call", "weight", "tool_calls", "tool_call_id")
ROLES = ("system", "user", "assistant", "function", "tool")
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def _call_problem(call: Any) -> bool:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or call.get("type") != "function" or not isinstance(call.get("id"), str) \
            or not call["id"] or not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments"), str):
        return True
    try:
        return not isinstance(json.loads(fn["arguments"]), dict)
    except ValueError:
        return True


def _tools_problem(tools: Any) -> bool:
    if not isinstance(tools, list) or len(tools) > 128:
        return True
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str) \
                or not _TOOL_NAME.fullmatch(fn["name"]) or not isinstance(fn.get("parameters", {}), dict):
            return True
    return False


def openai_format_errors(dataset: list[Any]) -> Counter[str]:
    """Error counts by type for a chat fine-tuning dataset (see the module docstring); empty: valid."""
    format_errors: Counter[str] = Counter()
    for ex in dataset:
        if not isinstance(ex, dict):
            format_errors["data_type"] += 1
            continue
        if any(k not in LINE_KEYS for k in ex):
            format_errors["unrecognized_key"] += 1
        if "tools" in ex and _tools_problem(ex["tools"]):
            format_errors["invalid_tool"] += 1
        messages = ex.get("messages", None)
        if not messages:
            format_errors["missing_messages_list"] += 1
            continue
        unanswered: set[str] = set()
        answerable: set[str] = set()
        for i, message in enumerate(messages):
            calls = message.get("tool_calls")
            function_call = message.get("function_call", None)
            if "role" not in message or ("content" not in message and not calls and not function_call):
                format_errors["message_missing_key"] += 1
            if any(k not in MESSAGE_KEYS for k in message):
                format_errors["message_unrecognized_key"] += 1
            role = message.get("role", None)
            if role not in ROLES:
                format_errors["unrecognized_role"] += 1
            content = message.get("content", None)
            if (not content and not function_call and not calls) \
                    or (content is not None and not isinstance(content, str)):
                format_errors["missing_content"] += 1
            if "weight" in message and (role != "assistant" or message["weight"] not in (0, 1)
                                        or isinstance(message["weight"], bool)):
                format_errors["invalid_weight"] += 1
            if role == "assistant":
                if unanswered:
                    format_errors["tool_call_without_result"] += 1
                for call in calls or ():
                    if _call_problem(call):
                        format_errors["invalid_tool_call"] += 1
                    else:
                        unanswered.add(call["id"])
                        answerable.add(call["id"])
            elif role == "tool":
                if message.get("tool_call_id") not in answerable:
                    format_errors["tool_message_without_call"] += 1
                unanswered.discard(message.get("tool_call_id"))
        if not any(message.get("role", None) == "assistant" for message in messages):
            format_errors["example_missing_assistant_message"] += 1
    return format_errors


# -- the checker finds what it checks ------------------------------------------------------------

_USER = {"role": "user", "content": "What's the weather in Paris?"}
_CALL = {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
    "name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
_RESULT = {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'}
_ANSWER = {"role": "assistant", "content": "21 degrees."}
_TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]

VALID = [
    # The fine-tuning guide's examples: plain chat, weights, and a call that ends the example.
    {"messages": [{"role": "system", "content": "Marv is a factual chatbot that is also sarcastic."},
                  {"role": "user", "content": "What's the capital of France?"},
                  {"role": "assistant", "content": "Paris", "weight": 0},
                  {"role": "user", "content": "Can you be more sarcastic?"},
                  {"role": "assistant", "content": "Paris, as if everyone doesn't know that already.", "weight": 1}]},
    {"messages": [_USER, _CALL], "tools": _TOOLS},
    {"messages": [_USER, _CALL, _RESULT, _ANSWER], "tools": _TOOLS, "parallel_tool_calls": False},
]


@pytest.mark.parametrize("example,error", [
    ("not a dict", "data_type"),
    ({"messages": []}, "missing_messages_list"),
    ({"messages": [_USER, _ANSWER], "id": "run/ep/role"}, "unrecognized_key"),
    ({"messages": [_USER, _ANSWER], "provenance": {"seed": 1}}, "unrecognized_key"),
    ({"messages": [_USER, {"role": "assistant"}]}, ("message_missing_key", "missing_content")),
    ({"messages": [_USER, {**_ANSWER, "invalid": "rejected"}]}, "message_unrecognized_key"),
    ({"messages": [{"role": "ipython", "content": "x"}, _ANSWER]}, "unrecognized_role"),
    ({"messages": [_USER, {"role": "assistant", "content": ""}]}, "missing_content"),
    ({"messages": [{"role": "user", "content": ""}, _ANSWER]}, "missing_content"),
    ({"messages": [_USER, {"role": "assistant", "content": [{"type": "text", "text": "x"}]}]}, "missing_content"),
    ({"messages": [_USER]}, "example_missing_assistant_message"),
    ({"messages": [_USER, {**_ANSWER, "weight": 0.5}]}, "invalid_weight"),
    ({"messages": [{**_USER, "weight": 0}, _ANSWER]}, "invalid_weight"),
    ({"messages": [_USER, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
        "name": "get_weather", "arguments": {"city": "Paris"}}}]}]}, "invalid_tool_call"),
    ({"messages": [_USER, _RESULT, _ANSWER]}, "tool_message_without_call"),
    ({"messages": [_USER, _CALL, _ANSWER], "tools": _TOOLS}, "tool_call_without_result"),
    ({"messages": [_USER, _ANSWER], "tools": [{"type": "function", "function": {"name": "get weather"}}]},
     "invalid_tool"),
    ({"messages": [_USER, _ANSWER], "tools": []}, None),
])
def test_the_checker_reports_each_kind_of_error(example, error):
    assert not openai_format_errors(VALID)
    expected = (error,) if isinstance(error, str) else error or ()
    assert openai_format_errors([example]) == Counter(expected)


# -- exports -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A run of every scenario (3 episodes each) and a noisy one whose calls fail."""
    root = tmp_path_factory.mktemp("openai")
    out = {}
    for case in worlds.scenario_cases():
        out[case.id] = worlds.make_run(root / case.id.replace("/", "_"), worlds.scenario_of(case.values[0]), 3)
    return out


def _export(runs, out: Path, **kw):
    return export_runs([str(r) for r in runs], ExportOptions(out=str(out), **kw))


def test_openai_lines_pass_openais_checks_for_every_scenario(runs, tmp_path):
    for mask in (False, True):
        out = tmp_path / f"openai-{mask}.jsonl"
        res = _export(runs.values(), out, fmt="openai", dedup=False, mask_failed_calls=mask, validation=0.3)
        for path in res.outputs.values():
            lines = worlds.read_lines(path)
            assert lines and openai_format_errors(lines) == Counter(), path
            assert all(set(line) <= {"messages", "tools"} for line in lines)
        if mask:  # the failed calls of the sloppy clerk are kept out of the loss
            assert res.card["failed_calls_masked"] > 0
            assert any(m.get("weight") == 0 for x in worlds.read_lines(out) for m in x["messages"])


def test_the_metadata_file_holds_each_samples_id_and_provenance_line_for_line(runs, tmp_path):
    """Same samples in the same order as the llama3 export (whose lines carry their metadata), split
    the same way; the card lists the metadata files."""
    from simworld.export.pipeline import metadata_path

    llama3 = _export(runs.values(), tmp_path / "l.jsonl", dedup=False, validation=0.3)
    for fmt in ("openai", "trl", "sharegpt"):
        res = _export(runs.values(), tmp_path / f"{fmt}.jsonl", fmt=fmt, dedup=False, validation=0.3)
        assert res.metadata == {"train": tmp_path / f"{fmt}.meta.jsonl",
                                "validation": tmp_path / f"{fmt}.validation.meta.jsonl"}
        assert res.card["outputs"] == {**{k: str(p) for k, p in res.outputs.items()},
                                       **{f"{k}_metadata": str(p) for k, p in res.metadata.items()}}
        for split, path in res.outputs.items():
            meta = worlds.read_lines(metadata_path(path))
            assert len(meta) == len(worlds.read_lines(path)) == res.written[split]
            reference = worlds.read_lines(llama3.outputs[split])
            assert [m["id"] for m in meta] == [x["id"] for x in reference]
            assert meta == [{k: x[k] for k in ("id", "perspective", "scores", "provenance", "synthetic")}
                            for x in reference]
    assert not metadata_path(tmp_path / "l.jsonl").exists()  # llama3 keeps them in its lines


def test_inline_metadata_is_what_openai_refuses(runs, tmp_path):
    """Why the metadata goes beside the data: in the line, it is an unrecognized key for OpenAI's
    fine-tuning upload. (Hugging Face `datasets` loads the metadata files: test_export_datasets.py.)"""
    car = runs["scenarios/negotiation/used_car.yaml"]
    retail = runs["scenarios/retail/mixed.yaml"]
    out = tmp_path / "openai.jsonl"
    res = _export([retail, car], out, fmt="openai", dedup=False)
    lines, meta = worlds.read_lines(out), worlds.read_lines(res.metadata["train"])
    assert openai_format_errors(lines) == Counter()
    inline = [{**x, **m} for x, m in zip(lines, meta)]
    assert openai_format_errors(inline)["unrecognized_key"] == len(lines)


def test_trainer_lines_hold_what_their_trainer_reads():
    from simworld.export.formats import sample_metadata, trl_line
    from simworld.export.source import Sample

    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"}]
    sample = Sample(id="r/e/a", perspective="a", messages=messages, tools=[], tools_openai=[],
                    today=dt.date(2024, 1, 1), scores={"value": 1.0}, provenance={"seed": 3}, split_key="k")
    assert trl_line(sample) == {"messages": messages}
    assert sample_metadata(sample) == {"id": "r/e/a", "perspective": "a",
                                       "scores": {"value": 1.0, "passed": False, "scorers": "{}"},
                                       "provenance": {"seed": 3}, "synthetic": True}


def test_dpo_pairs_keep_their_metadata_beside_them(tmp_path):
    good = worlds.make_run(tmp_path / "good", worlds.ledger_data(), 6)
    sloppy = worlds.make_run(tmp_path / "sloppy", worlds.scenario_cases()[1].values[0], 6)
    res = _export([good, sloppy], tmp_path / "dpo.jsonl", fmt="dpo")
    pairs, meta = worlds.read_lines(tmp_path / "dpo.jsonl"), worlds.read_lines(res.metadata["train"])
    assert len(pairs) == len(meta) == res.card["dpo"]["pairs"] > 0
    assert all(set(p) <= {"prompt", "chosen", "rejected", "tools"} for p in pairs)
    assert all(set(m) == {"id", "scores", "provenance", "synthetic"} for m in meta)
    assert all(m["id"].startswith("good/") and ">sloppy/" in m["id"] for m in meta)


def test_a_metadata_file_that_is_a_run_file_or_another_output_is_refused(runs, tmp_path):
    run = runs["ledger"]
    res = cli("export", str(run), "--format", "openai", "--out", str(run / "export"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "the metadata file" in res.stderr and "a run directory may hold no other .jsonl file" in res.stderr
    res = cli("export", str(run), "--format", "trl", "--out", str(tmp_path / "x.jsonl"), "--validation", "0.2",
              "--val-out", str(tmp_path / "x.meta.jsonl"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "the metadata file" in res.stderr and "x.meta.jsonl is the --val-out file" in res.stderr, res.stderr
    assert not list(tmp_path.iterdir())
