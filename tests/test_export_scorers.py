"""`simworld export --scorer`: the exported scores are those scorers' even when `simworld score`
stored others; without --scorer the stored file is used as it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simworld", *args], cwd=cwd, capture_output=True, text=True)


def _scorers(meta: Path) -> list[set[str]]:
    return [set(orjson.loads(orjson.loads(line)["scores"]["scorers"])) for line in meta.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("scorers")
    res = _cli("run", str(ROOT / "scenarios/retail/cancel_pending_order.yaml"), "--episodes", "6", "--out", "run", cwd=tmp)
    assert res.returncode == 0, res.stderr
    res = _cli("score", "run", cwd=tmp)  # the scenario's scorers, stored
    assert res.returncode == 0, res.stderr
    return tmp


def test_requested_scorers_are_computed_when_the_stored_file_holds_others(scored_run):
    res = _cli("export", "run", "--format", "openai", "--scorer", "state_match", "--scorer", "tool_validity",
               "--out", "a.jsonl", cwd=scored_run)
    assert res.returncode == 0, res.stderr
    assert _scorers(scored_run / "a.meta.jsonl") == [{"state_match", "tool_validity"}] * 6
    assert "holds the scores of collateral_damage" in res.stderr and "scores computed from the records" in res.stderr
    card = orjson.loads((scored_run / "a.card.json").read_bytes())
    assert card["scores_computed_during_export"] == 6
    assert list(card["score_files_of_other_scorers"].values()) == [
        ["collateral_damage", "heuristics", "outputs_stated", "policy_violations", "state_match", "tool_validity"]]
    assert "Score file by other scorers" in (scored_run / "a.card.md").read_text()


def test_the_stored_file_is_used_without_scorer_and_when_it_holds_the_requested_ones(scored_run):
    stored = orjson.loads((scored_run / "run/scores/scores.jsonl").read_bytes().splitlines()[0])
    for name, extra in (("b", ()), ("c", [a for n in sorted(stored["scores"]) for a in ("--scorer", n)])):
        res = _cli("export", "run", "--format", "openai", *extra, "--out", f"{name}.jsonl", cwd=scored_run)
        assert res.returncode == 0, res.stderr
        assert "scores computed" not in res.stderr
        card = orjson.loads((scored_run / f"{name}.card.json").read_bytes())
        assert card["scores_computed_during_export"] == 0 and "score_files_of_other_scorers" not in card
        assert _scorers(scored_run / f"{name}.meta.jsonl") == [set(stored["scores"])] * 6
