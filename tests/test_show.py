"""`simworld show`: listing, selection, colours by role, truncation, and the exact training text."""

from __future__ import annotations

import orjson
import pytest
from rich.console import Console

import test_export_worlds as worlds
from simworld.export import ExportOptions, export_runs
from simworld.export.source import ScoreLookup, compact_scores, open_run
from simworld.runio import iter_records
from simworld.runio import iter_records
from simworld.show import event_lines, select_records, show_record, truncate
from test_replay import cli


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return worlds.make_run(tmp_path_factory.mktemp("show") / "run", worlds.scenario_cases()[1].values[0], 8)


def test_truncate_keeps_the_head_and_says_what_was_cut():
    text = "\n".join(f'{{"line": {i}, "data": "{"x" * 30}"}}' for i in range(100))
    out = truncate(text, 200)
    assert out.startswith(text[:100]) and len(out) < 260
    assert f"{len(text) - len(out.split(' … ')[0]):,} more characters" in out
    assert truncate("short", 200) == "short" and truncate(text, 0) == text


def test_events_are_coloured_by_role_with_calls_results_and_invalid_moves(run):
    info = open_run(run)
    rec = next(iter_records(run))
    lines = event_lines(rec, info, max_result=40)
    assert len(lines) == len(rec["events"])
    plain = [t.plain for t in lines]
    assert any("→ deposit(" in p for p in plain)
    assert any("INVALID" in p for p in plain)  # the sloppy clerk's "{not json"
    assert any("⤷ deposit → clerk" in p for p in plain)
    styles = {str(span.style) for t in lines for span in t.spans}
    assert any("cyan" in s for s in styles) and any("green" in s for s in styles)  # user and clerk colours
    console = Console(record=True, width=120, color_system="truecolor")
    show_record(console, rec, info, compact_scores(ScoreLookup(info).get(rec)))
    out = console.export_text()
    assert rec["episode_id"] in out and "tool_validity" in out and ("SUCCESS" in out or "FAILURE" in out)


def test_selection_by_id_failed_and_random_is_reproducible(run):
    info = open_run(run)
    all_ids = [r["episode_id"] for r in iter_records(info.path)]
    picked = select_records(iter_records(info.path), episodes=(all_ids[3], all_ids[1]))
    assert [r["episode_id"] for r in picked] == [all_ids[3], all_ids[1]]
    failed = select_records(iter_records(info.path), failed=True)
    assert {r["episode_id"] for r in failed} == {r["episode_id"] for r in iter_records(run)
                                                  if not r["outcome"]["success"]}
    a = select_records(iter_records(info.path), sample=3, seed=4)
    b = select_records(iter_records(info.path), sample=3, seed=4)
    assert [r["episode_id"] for r in a] == [r["episode_id"] for r in b] and len(a) == 3


def test_cli_show_episode_failed_random_and_listing(run):
    ids = [r["episode_id"] for r in iter_records(run)]
    res = cli("show", str(run), "--episode", ids[2])
    assert res.returncode == 0, res.stderr
    assert ids[2] in res.stdout and "deposit" in res.stdout and "clerk" in res.stdout
    listing = cli("show", str(run))
    assert listing.returncode == 0 and all(i in listing.stdout for i in ids)
    failed = cli("show", str(run), "--failed", "--max-result", "20")
    assert failed.returncode == 0 and "FAILURE" in failed.stdout
    rnd = cli("show", str(run), "--random", "2", "--seed", "1")
    assert rnd.returncode == 0 and rnd.stdout.count("scenario ledger_deposit") == 2


def test_cli_show_perspective_llama3_is_exactly_the_exported_text(run, tmp_path):
    ids = [r["episode_id"] for r in iter_records(run)]
    res = cli("show", str(run), "--episode", ids[0], "--perspective", "clerk", "--format", "llama3")
    assert res.returncode == 0, res.stderr
    export_runs([str(run)], ExportOptions(out=str(tmp_path / "x.jsonl"), dedup=False))
    lines = {x["provenance"]["episode_id"]: x for x in map(orjson.loads, (tmp_path / "x.jsonl").read_bytes().splitlines())}
    assert res.stdout == lines[ids[0]]["text"] + "\n"
    msgs = cli("show", str(run), "--episode", ids[0], "--perspective", "clerk", "--format", "messages")
    assert [m["role"] for m in orjson.loads(msgs.stdout)][:2] == ["system", "user"]


@pytest.mark.parametrize("args,needle", [
    (["--episode", "nope"], "no episode 'nope'"),
    (["--perspective", "clrek", "--episode", "{id}"], "did you mean 'clerk'"),
    (["--perspective", "user", "--episode", "{id}"], "kind user"),
    (["--failed", "--random", "2"], "use one of"),
    (["--format", "llama3"], "needs --perspective"),
])
def test_cli_show_errors_are_one_line(run, args, needle):
    first = next(iter_records(run))["episode_id"]
    res = cli("show", str(run), *[a.replace("{id}", first) for a in args])
    assert res.returncode == 2 and needle in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_cli_show_names_a_damaged_record_in_one_line(run, tmp_path):
    import shutil

    copy = tmp_path / "damaged"
    shutil.copytree(run, copy)
    shard = sorted(copy.glob("trajectories-*.jsonl"))[0]
    lines = shard.read_bytes().splitlines()
    record = orjson.loads(lines[0])
    record["events"] = "garbage"
    shard.write_bytes(b"\n".join([orjson.dumps(record)] + lines[1:]) + b"\n")
    clerk = next(r for r, k in open_run(copy).kinds.items() if k == "assistant")
    for extra in ([], ["--perspective", clerk]):
        res = cli("show", str(copy), "--episode", record["episode_id"], *extra)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.strip() == f"episode {record['episode_id']}: not a valid trajectory: events: " \
                                     "Input should be a valid list"
