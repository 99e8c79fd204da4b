"""`--mix FILE:FRACTION` with a file too short for the fraction: the export mixes in what the file
has, and says so on stderr (asked vs got, and that the file has no more), in the summary line and
in the card; a file long enough gets no such note."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

import test_export_worlds as worlds
from test_replay import cli


@pytest.fixture(scope="module")
def ledger(tmp_path_factory) -> Path:
    return worlds.make_run(tmp_path_factory.mktemp("shortfall") / "ledger", worlds.ledger_data(), 30)


def _external(path: Path, n: int, copies: int = 1) -> Path:
    lines = [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                           {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]} for i in range(n)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines for _ in range(copies)))
    return path


def _export(ledger: Path, out: Path, spec: str, *more: str):
    res = cli("export", str(ledger), "--format", "openai", "--out", str(out), "--mix", spec, *more)
    assert res.returncode == 0, res.stderr
    return res, orjson.loads(out.with_name(out.name.replace(".jsonl", ".card.json")).read_bytes())


def test_a_file_that_runs_out_says_so_on_stderr(ledger, tmp_path):
    ext = _external(tmp_path / "real.jsonl", 10)
    res, card = _export(ledger, tmp_path / "o.jsonl", f"{ext}:0.5")
    synthetic = card["counts"]["source"]["synthetic"]  # (50% of the output: as many external ones)
    assert synthetic > 10 and card["counts"]["source"]["external"] == 10
    mix = card["mix"][0]
    assert (mix["samples"], mix["wanted"], mix["exhausted"], mix["left_out"]) == (10, synthetic, True, 0)
    got = 10 / (synthetic + 10)
    assert mix["achieved"] == pytest.approx(got)
    assert (f"note: --mix {ext}:0.5 ran out: 10 conversations mixed in ({got:.1%} of the output), not the "
            f"{synthetic} that 50.0% asks for; the file has no more") in res.stderr
    assert f"mixed 10 from {ext} ({got:.1%}; 50.0% asked, the file ran out)" in res.stdout
    md = (tmp_path / "o.card.md").read_text()
    assert f"({got:.1%} of the output, 50.0% requested; the file ran out, {synthetic} were asked for)" in md


def test_conversations_left_out_are_told_apart_from_those_mixed_in(ledger, tmp_path):
    ext = _external(tmp_path / "twice.jsonl", 10, copies=2)  # every conversation twice: dedup keeps one
    res, card = _export(ledger, tmp_path / "d.jsonl", f"{ext}:0.5")
    mix = card["mix"][0]
    assert (mix["samples"], mix["left_out"], mix["exhausted"]) == (10, 10, True)
    got, synthetic = mix["achieved"], card["counts"]["source"]["synthetic"]
    assert card["duplicates_removed"]["exact"] == 10 + (30 - synthetic)  # (the run's own repeats, one sample each)
    assert (f"ran out: 10 conversations mixed in ({got:.1%} of the output) (10 of its conversations left out, see "
            f"the card), not the {synthetic} that 50.0% asks for") in res.stderr
    assert "10 of its conversations left out as duplicates or filtered" in (tmp_path / "d.card.md").read_text()


def test_a_file_long_enough_gets_no_note(ledger, tmp_path):
    ext = _external(tmp_path / "plenty.jsonl", 40)
    res, card = _export(ledger, tmp_path / "p.jsonl", f"{ext}:0.25")
    mix = card["mix"][0]
    wanted = round(card["counts"]["source"]["synthetic"] / 3)  # 25% of the output: a third of the synthetic
    assert (mix["samples"], mix["wanted"], mix["exhausted"]) == (wanted, wanted, False) and wanted < 40
    assert "ran out" not in res.stdout and res.stderr == ""
    assert f"mixed {wanted} from {ext} ({mix['achieved']:.1%}; 25.0% asked)" in res.stdout
