"""`simworld show`: listing, selection, colours by role, truncation, the exact training text, and
record content shown, never obeyed (no escape sequence, control byte or markup from a record reaches
a real terminal)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios

import orjson
import pytest
from rich.console import Console

import test_export_worlds as worlds
from simworld.export import ExportOptions, export_runs
from simworld.export.source import ScoreLookup, compact_scores, open_run
from simworld.runio import iter_records
from simworld.show import event_lines, select_records, show_record, truncate, visible
from test_replay import ROOT, cli


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


# What a terminal obeys (erase screen, cursor moves, colours, hyperlinks, window titles, bell, backspace,
# carriage return, 8-bit CSI and NEL, bidi overrides), rich markup and an emoji code.
HOSTILE = ("CTRL:\x07\x08\x0b\x0c\r\x7f\x00 ANSI:\x1b[2J\x1b[H\x1b[31mRED\x1b[0m OSC:\x1b]0;pwned-title\x07 "
           "OSC8:\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\ MARKUP:[reverse red]TERM[/] "
           "[link=http://evil.example]clickme[/link] [/] :smile: RTL:\u202eevil\u202c C1:\x9b2J\x85 END")
# Every control a terminal could act on but newline and tab, and the bidi controls.
OBEYED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
RICH_STYLE = re.compile("\x1b\\[[0-9;]*m")


@pytest.fixture(scope="module")
def hostile_run(run, tmp_path_factory):
    """A copy of `run` with HOSTILE in every field show prints: the first record in its messages, calls,
    results, invalid reasons and outcome; the second in its id, task type and termination; the third
    has a 200 kB user message. Returns the run and those three episode ids."""
    copy = tmp_path_factory.mktemp("hostile") / "run"
    shutil.copytree(run, copy)
    shard = sorted(copy.glob("trajectories-*.jsonl"))[0]
    records = [orjson.loads(line) for line in shard.read_bytes().splitlines()]
    first, second, third = records[:3]
    for ev in first["events"]:
        if ev.get("content"):
            ev["content"] = HOSTILE + " " + ev["content"]
        if ev.get("invalid"):
            ev["invalid"] = HOSTILE
        if ev["role"] == "tool":
            ev["name"] = f"{ev.get('name')}\x1b[2J[bold]"
        for call in ev.get("tool_calls") or []:
            call["arguments"] = {**call["arguments"], "note": HOSTILE}
            call["name"] += "\x1b[2J[bold]"
    first["outcome"].update(success=False, error=HOSTILE, termination=HOSTILE, missing_outputs=[HOSTILE],
                            diff=[{"table": "t[red]", "row": "\x1b[2J", "field": "f", "expected": HOSTILE,
                                   "actual": 1}])
    second["episode_id"] = "ep[/]x [link=http://evil.example]id[/link]\x1b[2J"
    second["task"]["type"] = "[reverse red]TYPE[/] [/]\x1b]0;title\x07"
    second["outcome"].update(success=False, termination="[link=http://evil.example]term[/link] [/]\x9b2J")
    third["events"][0]["content"] = "A" * 200_000
    third["outcome"]["success"] = False
    shard.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return copy, [r["episode_id"] for r in (first, second, third)]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES")}
    return {**env, "PYTHONPATH": str(ROOT / "tests"), "SIMWORLD_PLUGINS": "test_export_worlds", **extra}


def show_in_terminal(*args: str, styled: bool) -> str:
    """What a real pseudo-terminal (120 columns) receives from `simworld show ARGS`, its \\r\\n back to
    \\n. `styled`: a colour terminal; otherwise a dumb one, to which rich sends no escape at all."""
    env = _env(TERM="xterm-256color", COLORTERM="truecolor") if styled else _env(TERM="dumb")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "simworld", "show", *args], stdin=slave, stdout=slave,
                            stderr=slave, env=env, cwd=ROOT)
    os.close(slave)
    out = bytearray()
    try:
        while select.select([master], [], [], 60)[0]:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: the program has closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        proc.wait(timeout=60)
    text = bytes(out).decode()
    assert proc.returncode == 0, text[-3000:]
    return text.replace("\r\n", "\n")


def show_piped(*args: str) -> bytes:
    res = subprocess.run([sys.executable, "-m", "simworld", "show", *args], capture_output=True, env=_env(),
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout


@pytest.mark.parametrize("args,styled", [
    (["--episode", "{0}"], False), (["--episode", "{0}"], True), (["--episode", "{1}"], False),
    (["--failed"], False), (["--failed"], True), (["--random", "8"], False), ([], False), ([], True),
    (["--episode", "{1}", "--perspective", "clerk"], False), (["--episode", "{0}", "--perspective", "clerk"], True),
], ids=["episode", "episode-styled", "markup-id", "failed", "failed-styled", "random", "listing", "listing-styled",
        "perspective-markup-id", "perspective-styled"])
def test_record_content_reaches_a_terminal_shown_never_obeyed(hostile_run, args, styled):
    run, ids = hostile_run
    out = show_in_terminal(str(run), *[a.format(*ids) for a in args], styled=styled)
    if styled:
        assert RICH_STYLE.search(out), "a colour terminal gets rich's styles"
        out = RICH_STYLE.sub("", out)  # rich's own styles: any other escape came from the record
    assert not OBEYED.search(out), repr(OBEYED.search(out))
    assert "😄" not in out
    # Shown as written: the controls spelled out, markup and emoji codes literal (compared as rich's
    # panel and table cells read column by column, without the whitespace where rich wraps and folds).
    cells = [line.split("│")[1:-1] for line in out.splitlines() if line.startswith("│")]
    squashed = re.sub(r"\s", "", "".join("".join(column) for column in zip(*cells)) + out)
    shown = {"listing": ["ep[/]x[link=http://evil.example]id[/link]\\x1b[2J", "[reversered]TYPE[/][/]\\x1b]0;title\\x07",
                         "[link=http://evil.example]term[/link][/]\\x9b2J", "CTRL:\\x07\\x08"],
             "episode": ["CTRL:\\x07\\x08\\x0b\\x0c\\x0d\\x7f\\x00", "\\x1b[2J\\x1b[H\\x1b[31mRED\\x1b[0m",
                         "[link=http://evil.example]clickme[/link]", "[reversered]TERM[/]", ":smile:", "\\u202eevil",
                         "\\x9b2J\\x85"],
             "second": ["ep[/]x[link=http://evil.example]id[/link]\\x1b[2J"]}
    which = "listing" if not args else "second" if "{1}" in args else "episode"
    for needle in shown[which] + (["deposit\\x1b[2J[bold]("] if which == "episode" and len(args) < 3 else []):
        assert needle in squashed, needle


def test_perspective_text_is_exact_when_piped_and_escaped_on_a_terminal(hostile_run, tmp_path):
    run, ids = hostile_run
    export_runs([str(run)], ExportOptions(out=str(tmp_path / "x.jsonl"), dedup=False))
    exported = {x["provenance"]["episode_id"]: x["text"]
                for x in map(orjson.loads, (tmp_path / "x.jsonl").read_bytes().splitlines())}
    text = exported[ids[0]]
    assert all(c in text for c in ("\x1b[2J", "\r", "\x07", "\x9b", "\u202e", ":smile:"))
    args = (str(run), "--episode", ids[0], "--perspective", "clerk", "--format")
    assert show_piped(*args, "llama3") == (text + "\n").encode()
    on_terminal = show_in_terminal(*args, "llama3", styled=True)
    assert on_terminal == visible(text) + "\n" and not OBEYED.search(on_terminal)

    piped_messages = show_piped(*args, "messages")
    assert "\u202e".encode() in piped_messages and b"\\u001b[2J" in piped_messages
    on_terminal = show_in_terminal(*args, "messages", styled=True)
    assert not OBEYED.search(on_terminal) and "\\u202e" in on_terminal
    assert json.loads(on_terminal) == json.loads(piped_messages)  # still the same JSON, only escaped


def test_content_and_call_arguments_are_truncated_like_results(hostile_run):
    run, ids = hostile_run
    info = open_run(run)
    records = {r["episode_id"]: r for r in iter_records(run)}
    long_message = event_lines(records[ids[2]], info)[0].plain
    assert len(long_message) < 700 and "… [199,4" in long_message and long_message.endswith(" more characters]")
    assert len(event_lines(records[ids[2]], info, max_result=0)[0].plain) > 200_000
    calls = [t.plain for t in event_lines(records[ids[0]], info, max_result=60) if "→ deposit" in t.plain]
    assert calls and all("more characters]" in c.split("→ deposit")[1] for c in calls)
    whole = [t.plain for t in event_lines(records[ids[0]], info, max_result=0) if "→ deposit" in t.plain]
    assert all(visible(orjson.dumps(HOSTILE).decode()) in c for c in whole)
    out = show_piped(str(run), "--episode", ids[2]).decode()
    assert len(out) < 20_000 and "AAAA…[199,400morecharacters]" in re.sub(r"[\s│]", "", out)


def test_cli_show_skips_what_is_no_trajectory_and_names_it_as_score_does(run, tmp_path):
    """A corrupt line and a record of the wrong shape: listed neither as a row of None nor silently
    left out, but skipped and named on stderr (the shard and line, the episode and why), exit 1."""
    from test_export_badinput import damaged_copy

    damaged, shard = damaged_copy(run, tmp_path, 4, b"garbage{{{", append=b'{"episode_id": "x", "foo": 1}\n')
    corrupt = f"skipped record {shard} line 4: not a JSON record"
    wrong = "skipped record x: not a valid trajectory: scenario: Field required"
    ids = [r["episode_id"] for r in iter_records(run)]
    listing = cli("show", str(damaged))
    assert listing.returncode == 1 and "Traceback" not in listing.stderr, listing.stderr
    assert sorted(listing.stderr.splitlines()) == sorted([corrupt, wrong])
    assert "None" not in listing.stdout and " x " not in listing.stdout
    assert all(i in listing.stdout for i in ids[:3] + ids[4:]) and ids[3] not in listing.stdout
    for args in (["--failed"], ["--random", "20"]):
        res = cli("show", str(damaged), *args)
        assert res.returncode == 1 and sorted(res.stderr.splitlines()) == sorted([corrupt, wrong]), res.stderr
        assert "None" not in res.stdout
    one = cli("show", str(damaged), "--episode", "x")
    assert one.returncode == 1 and sorted(one.stderr.splitlines()) == sorted(
        [corrupt, "episode x: not a valid trajectory: scenario: Field required"]), one.stderr
    healthy = cli("show", str(damaged), "--episode", ids[0])  # shown; the line that may have been its last named
    assert healthy.returncode == 1 and ids[0] in healthy.stdout and healthy.stderr == corrupt + "\n"
