"""Export under bad input: a card that cannot be written, records that are not trajectories, wrong
external data, odd score files, paths that are not UTF-8 or too long, NaN options. Each is one
clear line (or a named skipped record), and the previous export, data and card, stays as it was."""

from __future__ import annotations

import copy
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import test_export_worlds as worlds
from simworld.errors import SimworldError
from simworld.export import ExportOptions, export_runs
from simworld.export.card import CardStats, card_paths
from simworld.export.curation import Deduplicator, validate_openai_record
from simworld.export.formats import format_line, llama3_line_parts
from simworld.export.pipeline import _has_special_tokens, _Outputs
from simworld.export.source import Sample
from simworld.replay import parse_record
from simworld.runio import iter_records
from simworld.scoring.report import score_run
from test_export_curation import _can_mount_tmpfs, export_twice_on_a_small_disk
from test_replay import cli
from test_scoring import dead_pid, left_behind


def export(runs, out, **kw):
    return export_runs([str(r) for r in runs], ExportOptions(out=str(out), **kw))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return worlds.make_run(tmp_path_factory.mktemp("bad") / "run", worlds.ledger_data(), 12)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _one_line_error(res: subprocess.CompletedProcess, needle: str) -> None:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and res.stderr.strip().count("\n") == 0, res.stderr
    assert needle in res.stderr, res.stderr


# -- the card is written with the data -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["openai", "dpo"])
def test_a_card_that_cannot_be_written_leaves_the_previous_export_whole(run, tmp_path, fmt):
    out = tmp_path / "o" / "a.jsonl"
    export([run], out)
    (out.parent / "a.card.json").unlink()
    (out.parent / "a.card.json").mkdir()
    before = _snapshot(out.parent)
    res = cli("export", str(run), "--format", fmt, "--out", str(out))
    _one_line_error(res, f"error: cannot write {out.parent / 'a.card.json'}: ")
    assert _snapshot(out.parent) == before  # the llama3 data and its markdown card, unchanged
    assert sorted(p.name for p in out.parent.iterdir()) == ["a.card.json", "a.card.md", "a.jsonl"]


def test_a_rename_that_fails_puts_back_what_the_earlier_ones_replaced(tmp_path):
    """The card is checked before the export starts; a card path that turns into a directory while
    the export runs makes the last rename fail: the data renamed before it is rolled back."""
    out = tmp_path / "a.jsonl"
    md, js = tmp_path / "a.card.md", tmp_path / "a.card.json"
    out.write_bytes(b"old data\n")
    md.write_bytes(b"old card\n")
    outputs = _Outputs({"train": out})
    outputs.write("train", b'{"new": 1}')
    js.mkdir()
    with pytest.raises(SimworldError, match=f"cannot write {js}: "):
        outputs.commit({md: b"new card\n", js: b"{}\n"})
    assert out.read_bytes() == b"old data\n" and md.read_bytes() == b"old card\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.card.json", "a.card.md", "a.jsonl"]
    # And when every rename works, each file is the new one and no second name is left.
    js.rmdir()
    outputs = _Outputs({"train": out})
    outputs.write("train", b'{"new": 1}')
    outputs.commit({md: b"new card\n", js: b"{}\n"})
    assert out.read_bytes() == b'{"new": 1}\n' and md.read_bytes() == b"new card\n" and js.read_bytes() == b"{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.card.json", "a.card.md", "a.jsonl"]


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare -rm to mount a small tmpfs; the rename test "
                                                   "above covers the same rollback")
def test_a_disk_that_fills_up_at_the_card_keeps_the_previous_export(run, tmp_path):
    """A real ENOSPC at the card: a file fills the tmpfs but for room for the new data beside the
    old and one page more."""
    mnt = tmp_path / "mnt"
    fill = ("import os; st = os.statvfs('{m}'); free = st.f_bavail * st.f_frsize; "
            "pages = -(-os.path.getsize('{m}/train.jsonl') // 4096) + 1; "
            "open('{m}/filler', 'wb').write(bytes(free - pages * 4096))").format(m=mnt)
    mnt, err, files = export_twice_on_a_small_disk(run, tmp_path, "1m", f'{sys.executable} -c "{fill}"')
    assert f"cannot write {mnt}/train.card." in err and "No space left on device" in err, err
    assert files == ["filler", "train.card.json", "train.card.md", "train.jsonl"]


def test_no_two_outputs_may_be_one_file(run, tmp_path):
    with pytest.raises(SimworldError, match="the card .*a.card.json is the --val-out file"):
        export([run], tmp_path / "a.jsonl", validation=0.3, val_out=str(tmp_path / "a.card.json"))
    assert list(tmp_path.iterdir()) == []


# -- records that are not trajectories --------------------------------------------------------------


def _with_field(run: Path, tmp_path: Path, key: str, value) -> tuple[Path, str]:
    """A copy of `run` whose 4th record has `key` set to `value` (None: removed); (copy, its episode id)."""
    record = orjson.loads(sorted(run.glob("trajectories-*.jsonl"))[0].read_bytes().splitlines()[3])
    if value is None:
        del record[key]
    else:
        record[key] = value
    return damaged_copy(run, tmp_path, 4, orjson.dumps(record))[0], record.get("episode_id", "?")


BAD_FIELDS = [("seed", 1.5), ("seed", -3), ("seed", [1]), ("seed", None), ("variation", [1]), ("episode_index", "x"),
              ("task", {"type": 5, "instance_id": "i"}), ("task", {"type": "deposit"}),
              ("outcome", {"success": "maybe"}),
              ("agents", {"clerk": 1}), ("world", 5), ("system", {"clerk": 5}), ("tools", {"clerk": "deposit"}),
              ("tools", {"clerk": [{"name": "deposit"}]}), ("provenance", {"simworld_version": "1", "fork_at": "x"}),
              ("provenance", {"synthetic": True}), ("events", {}), ("scenario", 5), ("surprise", 1)]


@pytest.mark.parametrize("key,value", BAD_FIELDS, ids=[f"{k}={orjson.dumps(v).decode()}" for k, v in BAD_FIELDS])
def test_records_replay_rejects_are_skipped_and_named(run, tmp_path, key, value):
    damaged, eid = _with_field(run, tmp_path, key, value)
    record = [r for r in iter_records(damaged) if r.get("episode_id") == eid][0]
    reason = parse_record(record)
    assert isinstance(reason, str)  # replay and score reject it ...
    res = export([damaged], tmp_path / "out.jsonl", dedup=False)
    assert res.written["train"] == 11 and res.card["malformed_records_skipped"] == 1  # ... and export skips it
    assert res.card["malformed_records"] == [f"{eid}: {reason}"]
    assert eid not in {x["provenance"]["episode_id"] for x in worlds.read_samples(tmp_path / "out.jsonl")}
    dpo = export([damaged, run], tmp_path / "dpo.jsonl", fmt="dpo")
    assert dpo.card["malformed_records_skipped"] == 1


@pytest.mark.parametrize("case", [c for c in worlds.scenario_cases() if c.id in (
    "ledger", "haggle", "scenarios/retail/mixed.yaml", "scenarios/negotiation/used_car.yaml")])
def test_records_as_run_writes_them_take_the_quick_check(tmp_path, case):
    """The check export makes of every record knows every field of a trajectory, and the records
    `run` writes pass it as they are (none is validated by pydantic on the way)."""
    from simworld.export.pipeline import _RECORD_FIELDS, _REQUIRED_FIELDS, trajectory_record
    from simworld.types import Trajectory

    assert set(_RECORD_FIELDS) == set(Trajectory.model_fields)
    assert _REQUIRED_FIELDS == {k for k, f in Trajectory.model_fields.items() if f.is_required()}
    records = list(iter_records(worlds.make_run(tmp_path / "run", worlds.scenario_of(case), 6)))
    assert records and all(trajectory_record(r) is r for r in records)


def test_the_command_names_a_skipped_record(run, tmp_path):
    damaged, eid = _with_field(run, tmp_path, "seed", 1.5)
    res = cli("export", str(damaged), "--no-dedup", "--out", str(tmp_path / "out.jsonl"))
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert f"skipped record {eid}: not a valid trajectory: seed: " in res.stderr


def damaged_copy(run: Path, tmp_path: Path, line: int | None = None, text: bytes = b"", append: bytes = b"",
                 status: str | None = None) -> tuple[Path, Path]:
    """A copy of `run` whose shard's `line` (1-based) reads `text`, with `append` after its last
    line and its manifest's `status` set; (copy, its shard)."""
    copy_ = tmp_path / "damaged"
    shutil.copytree(run, copy_)
    shutil.rmtree(copy_ / "scores", ignore_errors=True)
    shard = sorted(copy_.glob("trajectories-*.jsonl"))[0]
    lines = shard.read_bytes().splitlines()
    if line is not None:
        lines[line - 1] = text
    shard.write_bytes(b"\n".join(lines) + b"\n" + append)
    if status is not None:
        manifest = orjson.loads((copy_ / "manifest.json").read_bytes())
        (copy_ / "manifest.json").write_bytes(orjson.dumps({**manifest, "status": status}))
    return copy_, shard


def test_a_line_that_holds_no_record_is_counted_and_named_as_score_names_it(run, tmp_path):
    """A corrupt line is an episode the export leaves out: the card counts it and stderr names its
    shard and line (score and replay name it too), where it used to be one sample fewer unsaid."""
    damaged, shard = damaged_copy(run, tmp_path, 4, b"garbage{{{")
    res = export([damaged], tmp_path / "out.jsonl", dedup=False)
    where = f"{shard} line 4: not a JSON record"
    assert res.written["train"] == 11 and res.card["malformed_records_skipped"] == 1
    assert res.card["malformed_records"] == [where]
    assert "Records skipped as not valid trajectories (or lines that hold no record): 1." in \
        (tmp_path / "out.card.md").read_text()
    assert export([damaged, run], tmp_path / "dpo.jsonl", fmt="dpo").card["malformed_records_skipped"] == 1
    cmd = cli("export", str(damaged), "--no-dedup", "--out", str(tmp_path / "cli.jsonl"))
    assert cmd.returncode == 0 and cmd.stderr == f"skipped record {where}\n", cmd.stderr
    score = cli("score", str(damaged))
    assert f"skipped record {shard.name} line 4: not a JSON record" in score.stdout, score.stdout


TORN = b'{"schema_version":1,"episode_id":"x'


def test_a_torn_last_line_is_damage_in_a_finished_run_and_a_write_under_way_in_an_unfinished_one(run, tmp_path):
    """A run whose manifest says it is complete wrote every line whole: a torn one is damage, named.
    A run still running (or killed) is cut mid-line by design: the episode is not recorded yet, as
    the note about the unfinished run says, and its next `simworld run` cuts the line."""
    damaged, shard = damaged_copy(run, tmp_path, append=TORN)
    res = export([damaged], tmp_path / "a.jsonl", dedup=False)
    assert res.written["train"] == 12 and res.card["malformed_records"] == [
        f"{shard}: a torn last line of {len(TORN)} bytes (an interrupted write; the run's next `simworld run`, or a "
        "fork's next fork, cuts it)"]
    manifest = orjson.loads((damaged / "manifest.json").read_bytes())
    (damaged / "manifest.json").write_bytes(orjson.dumps({**manifest, "status": "running"}))
    res = export([damaged], tmp_path / "b.jsonl", dedup=False)
    assert res.written["train"] == 12 and res.card["malformed_records_skipped"] == 0
    cmd = cli("export", str(damaged), "--no-dedup", "--out", str(tmp_path / "c.jsonl"))
    assert cmd.returncode == 0 and cmd.stderr.startswith(f"note: {damaged}: the run is running") \
        and cmd.stderr.count("\n") == 1, cmd.stderr


def test_a_record_that_is_no_trajectory_is_not_said_to_be_of_another_scenario(run, tmp_path):
    """It has no scenario hash to differ: it is named as skipped, and that is all."""
    damaged, _ = damaged_copy(run, tmp_path, append=b'{"episode_id": "x", "foo": 1}\n')
    res = export([damaged], tmp_path / "a.jsonl", dedup=False)
    assert "records_of_another_scenario" not in res.card
    assert res.card["malformed_records"] == ["x: not a valid trajectory: scenario: Field required"]
    cmd = cli("export", str(damaged), "--no-dedup", "--out", str(tmp_path / "b.jsonl"))
    assert cmd.returncode == 0 and cmd.stderr.startswith("skipped record x: not a valid trajectory: scenario: "), \
        cmd.stderr
    assert "another scenario" not in cmd.stderr


def test_a_value_a_trajectory_reads_is_exported_as_it_reads_it(run, tmp_path):
    damaged, eid = _with_field(run, tmp_path, "seed", "77")  # pydantic reads "77" as 77
    export([damaged], tmp_path / "out.jsonl", dedup=False)
    lines = {x["provenance"]["episode_id"]: x for x in worlds.read_samples(tmp_path / "out.jsonl")}
    assert len(lines) == 12 and lines[eid]["provenance"]["seed"] == 77


@pytest.mark.parametrize("key,value,reason", [
    ("tools", {"clerk": ["deposit", "launch_rocket"]}, "tools.clerk: 'launch_rocket' is no tool of world 'ledger'"),
    ("world", {"type": "ledger", "params": {"accounts": "many"}, "seed": 0}, "cannot be scored: "),
    ("world", {"type": "atlantis"}, "cannot be scored: "),
])
def test_valid_records_naming_what_cannot_be_had_are_skipped(run, tmp_path, key, value, reason):
    damaged, eid = _with_field(run, tmp_path, key, value)
    res = export([damaged], tmp_path / "out.jsonl", dedup=False)
    assert res.written["train"] == 11 and res.card["malformed_records"][0].startswith(f"{eid}: {reason}")
    if value.get("type") == "atlantis":
        assert "unknown world 'atlantis'" in res.card["malformed_records"][0]


# -- external data ----------------------------------------------------------------------------------

_USER = {"role": "user", "content": "hi"}
_CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}


def _tool(parameters):
    return [{"type": "function", "function": {"name": "f", "parameters": parameters}}]


@pytest.mark.parametrize("line,problem", [
    ({"messages": [_USER, {"role": "assistant", "content": "x", "tool_calls": 5}]},
     "messages[1].tool_calls must be a list"),
    ({"messages": [_USER, _CALL, {"role": "tool", "tool_call_id": ["c1"], "content": "r"}]},
     "messages[2].tool_call_id must be a string"),
    ({"messages": [_USER, {"role": "assistant", "content": "x"}], "tools": _tool({"type": "object", "properties": 5})},
     "tools[0].function.parameters.properties: 5 is not of type 'object' (not a valid JSON Schema)"),
    ({"messages": [_USER, {"role": "assistant", "content": "x"}], "tools": _tool({"type": "object", "required": 5})},
     "tools[0].function.parameters.required: 5 is not of type 'array'"),
    ({"messages": [_USER, {"role": "assistant", "content": "x"}],
      "tools": _tool({"type": "object", "properties": ["a"]})}, "parameters.properties: ['a'] is not of type 'object'"),
    ({"messages": [_USER, {"role": "assistant", "content": "x"}],
      "tools": [{"type": "function", "function": {"name": "f", "description": 5}}]},
     "tools[0].function.description must be a string"),
    ({"messages": [_USER, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[" * 150 + "]" * 150}}]}]},
     "arguments must be a JSON object"),
    ({"messages": [_USER, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function",
         "function": {"name": "f", "arguments": '{"a":' + "[" * 300 + "]" * 300 + "}"}}]}]},
     "messages[1].tool_calls[0]: arguments nested more than 100 levels deep"),
])
@pytest.mark.parametrize("fmt", ["llama3", "openai"])
def test_wrong_external_lines_are_one_error_before_anything_is_written(run, tmp_path, line, problem, fmt):
    ext = tmp_path / "real.jsonl"
    ext.write_bytes(orjson.dumps({"messages": [_USER, {"role": "assistant", "content": "fine"}]}) + b"\n"
                    + orjson.dumps(line) + b"\n")
    out = tmp_path / "o" / "mix.jsonl"
    with pytest.raises(SimworldError) as err:
        export([run], out, fmt=fmt, mix=(f"{ext}:0.2",))
    assert str(err.value).startswith(f"{ext}:2: ") and problem in str(err.value), str(err.value)
    assert not out.parent.exists()


_VALID = {"messages": [
    {"role": "system", "content": "You are a travel agent."},
    {"role": "user", "content": "Book flight 3"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "book", "arguments": '{"n": 3}'}},
        {"id": "c2", "type": "function", "function": {"name": "book", "arguments": {"n": 4}}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "booked"},
    {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "ok"}]},
    {"role": "assistant", "content": "Booked.", "weight": 0}],
    "tools": [{"type": "function", "function": {"name": "book", "description": "Book.", "parameters": {
        "type": "object", "properties": {"n": {"type": "integer", "description": "n"}}, "required": ["n"]}}}]}
_VALUES = [None, True, 0, 5, -1, 1.5, "", "x", "<|eot_id|>", "c1", "assistant", "tool", "user", "system", "function",
           [], [1], ["a"], {}, {"a": 1}, {"type": "text", "text": "t"}, [{"type": "text", "text": "t"}],
           [{"type": "image"}], {"type": "object"}, '{"a": 1}', "[1]", "null", "{bad", {"name": "f"}, [[[[1]]]]]
_KEYS = ["content", "tool_calls", "name", "weight", "extra", "arguments", "id", "parameters", "description",
         "properties", "required", "type", "tool_call_id", "role", "function", "tools", "messages"]


def _places(obj, at=()):
    yield at
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _places(v, at + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _places(v, at + (i,))


@st.composite
def _mutated(draw):
    """The valid line above with one to three values replaced, removed or added."""
    line = copy.deepcopy(_VALID)
    for _ in range(draw(st.integers(1, 3))):
        places = list(_places(line))[1:]
        if not places:  # everything removed
            break
        at = draw(st.sampled_from(places))
        parent = line
        for k in at[:-1]:
            parent = parent[k]
        action = draw(st.sampled_from(["set", "set", "drop", "add"]))
        if action == "set" or not isinstance(parent, dict):
            parent[at[-1]] = copy.deepcopy(draw(st.sampled_from(_VALUES)))
        elif action == "drop":
            del parent[at[-1]]
        else:
            parent[draw(st.sampled_from(_KEYS))] = copy.deepcopy(draw(st.sampled_from(_VALUES)))
    return line


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_every_external_line_the_validator_accepts_exports_in_every_format(line):
    try:
        messages, tools = validate_openai_record(line)
    except ValueError:
        return
    sample = Sample(id="real.jsonl:1", perspective="assistant", messages=messages, tools=tools, tools_openai=tools,
                    today=dt.date(2024, 1, 1), scores={}, provenance={"synthetic": False}, synthetic=False,
                    split_key="k")
    _has_special_tokens(sample)
    for fmt in ("llama3", "openai", "trl", "sharegpt"):
        for mask in (False, True) if fmt in ("llama3", "openai") else (False,):
            orjson.dumps(format_line(fmt, sample, None, mask))
    assert b"".join(llama3_line_parts(sample).pieces)
    sample.today = None  # an external conversation without --mix-today: no date lines
    assert "Today Date" not in format_line("llama3", sample)["text"].split("<|eot_id|>", 1)[0]
    Deduplicator().keep(sample)
    CardStats().add(sample, "train")


def test_mix_paths_that_are_no_regular_file_or_hold_nothing(run, tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.jsonl").write_bytes(b"\n\n")
    for spec, problem in ((f"{tmp_path}/folder:0.2", "folder is not a regular file"),
                          ("/dev/zero:0.1", "/dev/zero is not a regular file"),
                          (f"{tmp_path}/empty.jsonl:0.2", "empty.jsonl: holds no conversation to mix in")):
        with pytest.raises(SimworldError, match=problem):
            export([run], tmp_path / "o.jsonl", mix=(spec,))
    assert not (tmp_path / "o.jsonl").exists()


def test_a_mix_fraction_below_half_a_sample_mixes_none(run, tmp_path):
    ext = tmp_path / "real.jsonl"
    ext.write_bytes(b"".join(orjson.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                                        {"role": "assistant", "content": f"answer {i}"}]}) + b"\n"
                             for i in range(50)))
    res = export([run], tmp_path / "few.jsonl", dedup=False, mix=(f"{ext}:0.01",))  # 12 samples: 0.12 of one
    assert res.card["mix"][0]["samples"] == 0 and res.written["train"] == 12
    res = export([run], tmp_path / "some.jsonl", dedup=False, mix=(f"{ext}:0.25",))  # a quarter: 4 of 16
    assert res.card["mix"][0]["samples"] == 4 and res.written["train"] == 16


# -- score files, paths, options ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["not utf-8", "a directory"])
def test_an_odd_score_file_means_scores_computed_from_the_records(run, tmp_path, kind):
    copy_ = tmp_path / "run"
    shutil.copytree(run, copy_)
    shutil.rmtree(copy_ / "scores", ignore_errors=True)
    plain = export([copy_], tmp_path / "plain.jsonl", dedup=False)
    scores = copy_ / "scores" / "scores.jsonl"
    if kind == "a directory":
        scores.mkdir(parents=True)
    else:
        scores.parent.mkdir()
        scores.write_bytes(b'{"episode_id":"\xff","value":1}\n')
    res = cli("export", str(copy_), "--no-dedup", "--out", str(tmp_path / "odd.jsonl"))
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert ("note: cannot read" in res.stderr) == (kind == "a directory")
    got = lambda name: [x["scores"] for x in worlds.read_samples(tmp_path / name)]  # noqa: E731
    assert got("odd.jsonl") == got("plain.jsonl") and plain.card["scores_computed_during_export"] == 12
    shown = cli("show", str(copy_))
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr


def test_paths_that_are_not_utf8_export_with_their_bytes_escaped(run, tmp_path):
    odd_run = tmp_path / os.fsdecode(b"run\xff")
    try:
        shutil.copytree(run, odd_run)
    except OSError:
        pytest.skip("this file system takes only UTF-8 names")
    ext = tmp_path / os.fsdecode(b"real\xfe.jsonl")
    ext.write_bytes(b"".join(orjson.dumps({"messages": [{"role": "user", "content": f"q {i}"},
                                                        {"role": "assistant", "content": f"a {i}"}]}) + b"\n"
                             for i in range(10)))
    out = tmp_path / os.fsdecode(b"out\xfd") / "a.jsonl"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "SIMWORLD_PLUGINS": "test_export_worlds"}
    res = subprocess.run([sys.executable, "-m", "simworld", "export", odd_run, "--out", out, "--validation", "0.3",
                          "--mix", f"{ext}:0.2"], capture_output=True, env=env, timeout=120)
    assert res.returncode == 0 and b"Traceback" not in res.stderr, res.stderr
    lines = worlds.read_samples(out) + worlds.read_samples(out.with_name("a.validation.jsonl"))
    assert {x["id"].split("/")[0] for x in lines if x["synthetic"]} == {"run\\xff"}
    assert {x["provenance"]["source"] for x in lines if not x["synthetic"]} == {str(tmp_path) + "/real\\xfe.jsonl"}
    card = orjson.loads(out.with_name("a.card.json").read_bytes())
    assert card["outputs"]["train"].endswith("out\\xfd/a.jsonl") and "run\\xff" in card["command"]
    assert "out\\xfd" in out.with_name("a.card.md").read_text()


def test_names_too_long_for_the_file_system_are_one_line(run, tmp_path):
    res = cli("export", str(run), "--out", str(tmp_path / ("a" * 300 + ".jsonl")))
    _one_line_error(res, "File name too long")
    assert "cannot write " in res.stderr
    # The data file's name fits, its card's does not: refused before anything is written.
    with pytest.raises(SimworldError, match=r"cannot write .*\.card\.json: File name too long"):
        export([run], tmp_path / ("b" * 246 + ".jsonl"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option", [["--min-score", "nan"], ["--validation", "nan"], ["--mix", "x.jsonl:nan"]])
def test_nan_options_are_refused(run, tmp_path, option):
    res = cli("export", str(run), "--out", str(tmp_path / "o.jsonl"), *option)
    _one_line_error(res, option[0])
    assert not (tmp_path / "o.jsonl").exists()


# -- what a killed export left; an unfinished run --------------------------------------------------------


def test_export_removes_what_a_killed_export_left_and_nothing_of_a_live_process(run, tmp_path, monkeypatch):
    """SIGKILL or SIGTERM leave an export's hidden temporaries (and the old versions kept while the
    files are put in place); the next export into the same place removes those of dead processes.
    A name too long for ``.NAME.tmp-PID`` has its hashed form, removed the same way."""
    out = tmp_path / "o" / ("a" * 245 + ".jsonl")
    finals = [out, tmp_path / "o" / "v.jsonl", *card_paths(out)]
    stale = left_behind(finals, dead_pid(), monkeypatch)
    assert any(not p.name.startswith(".a") for p in stale)  # the hashed form is among them
    other = left_behind([tmp_path / "o" / "b.jsonl"], dead_pid(), monkeypatch)
    exporting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = left_behind(finals, exporting.pid, monkeypatch)
        export([run], out, validation=0.3, val_out=str(finals[1]))
    finally:
        exporting.kill()
        exporting.wait()
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"partial\n" for p in live + other)
    assert all(p.is_file() for p in finals)


def test_export_of_an_unfinished_run_notes_it_and_exports_what_is_recorded(run, tmp_path):
    copy_ = tmp_path / "run"
    shutil.copytree(run, copy_)
    manifest = orjson.loads((copy_ / "manifest.json").read_bytes())
    (copy_ / "manifest.json").write_bytes(orjson.dumps({**manifest, "status": "running", "episodes": 20}))
    res = cli("export", str(copy_), str(run), "--no-dedup", "--out", str(tmp_path / "a.jsonl"))
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr == (f"note: {copy_}: the run is running (or its `simworld run` was killed): some of its 20 "
                          "episodes may not be recorded yet; only those recorded so far are read\n")
    one = export([run], tmp_path / "b.jsonl", dedup=False).written["train"]
    assert one > 0 and f"exported {2 * one:,} train samples" in res.stdout  # both runs, the unfinished one too


# -- output paths that are no file of their own --------------------------------------------------------


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("out, problem", [
    ("", "--out is empty: name the output file"),
    (".", "--out . names a directory, not a file"),
    ("/", "--out / names a directory, not a file"),
    ("..", "--out .. names a directory, not a file"),
    ("new/", "--out new/ names a directory, not a file"),
    ("sub", "--out sub exists and is not a regular file"),
])
def test_an_out_that_names_no_file_is_one_line_and_writes_nothing(run, tmp_path, out, problem):
    """`--out "$DIR"` with DIR unset, `.`, `/`, a trailing slash or an existing directory: never a
    traceback (pathlib's "has an empty name"), never a file named after a folder."""
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    before = _tree(tmp_path)
    res = cli("export", str(run), "--out", out, cwd=work)
    _one_line_error(res, f"error: {problem}")
    res = cli("export", str(run), "--out", "a.jsonl", "--validation", "0.5", "--val-out", out, cwd=work)
    _one_line_error(res, f"error: {problem.replace('--out', '--val-out')}")
    assert _tree(tmp_path) == before


def test_an_output_that_is_a_file_the_export_reads_is_refused(run, tmp_path, monkeypatch):
    """--out (or --val-out, or a card) naming the --mix file or a file of a run, by whatever path (a
    relative one, a symlink): refused before anything is written, the user's data unchanged."""
    ext = tmp_path / "external.jsonl"
    ext.write_bytes(b"".join(orjson.dumps({"messages": [{"role": "user", "content": f"q {i}"},
                                                        {"role": "assistant", "content": f"a {i}"}]}) + b"\n"
                             for i in range(40)))
    copy_ = tmp_path / "run"
    shutil.copytree(run, copy_)
    score_run(copy_)  # RUN/scores/scores.jsonl, which export reads
    shard = sorted(copy_.glob("trajectories-*.jsonl"))[0]
    (tmp_path / "link.jsonl").symlink_to(shard)
    (tmp_path / "ext-link.jsonl").symlink_to(ext)
    monkeypatch.chdir(tmp_path)
    mix = (f"{ext}:0.2",)
    cases = [(dict(out="external.jsonl", mix=mix), "--out external.jsonl is the --mix file"),
             (dict(out="ext-link.jsonl", mix=("external.jsonl:0.2",)), "--out ext-link.jsonl is the --mix file"),
             (dict(out=str(tmp_path / "a.jsonl"), validation=0.3, val_out="./external.jsonl", mix=mix),
              "--val-out external.jsonl is the --mix file"),
             (dict(out="card-of-it", mix=("card-of-it.card.json:0.2",)), "the card card-of-it.card.json is the --mix"),
             (dict(out="link.jsonl"), f"--out link.jsonl is {shard} of run"),
             (dict(out=str(copy_ / "scenario.yaml")), f"--out {copy_ / 'scenario.yaml'} is {copy_ / 'scenario.yaml'}"),
             (dict(out=str(copy_ / "manifest.json")), "manifest.json of run"),
             (dict(out=str(tmp_path / "x.jsonl"), validation=0.3, val_out="link.jsonl"), "--val-out link.jsonl is "),
             (dict(out=str(copy_ / "scores" / "scores.jsonl")), "scores.jsonl of run")]
    (tmp_path / "card-of-it.card.json").write_bytes(ext.read_bytes())  # the --mix file is where a card goes
    before = _tree(tmp_path)
    for kw, problem in cases:
        with pytest.raises(SimworldError, match=re.escape(problem)):
            export_runs([str(copy_)], ExportOptions(**kw))
    assert _tree(tmp_path) == before
