"""A bug of a world's tool met outside `simworld run`: on `replay`, `replay --fork-at`, and the replay a
scorer asks for (`score`, `export`, `show`). It is the world's bug, neither the record's nor the
scorer's: one line naming the episode, the tool and the call, exit status 1, and nothing written
before lost. Also: a tool that raises SimworldError after writing leaves the state as it was.

The plugin (the kiosk of test_plugin_worlds) is a real module in a temporary directory, loaded by real
`simworld` processes; it records its run with the tool working and is read back with
``$KIOSK_MODE=raise`` (plugin v2, with a bug).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import ledger_world
import runner_plugin
from test_plugin_worlds import PLUGIN, PLUGIN_SOURCE, SCENARIO, Shop, simworld
from simworld.errors import SimworldError
from simworld.registry import register_agent
from simworld.runio import iter_records
from simworld.runner import EpisodeCrash, run_batch
from simworld.scenario import scenario_from_data
from simworld.types import ToolCall
from simworld.world import ToolContext

HINT = " (set SIMWORLD_DEBUG=1 for the traceback)"
CRASH = ' in tool peek (call peek{"row":%d}): KeyError: \'boom\''


@pytest.fixture(scope="module")
def kiosk(tmp_path_factory) -> Path:
    """A directory with the plugin and a complete run recorded with its tool working (``runs/kiosk``)."""
    path = tmp_path_factory.mktemp("kiosk")
    (path / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    # collateral_damage replays the episode (ctx.replayed())
    (path / "kiosk.yaml").write_text(SCENARIO.replace("[state_match,", "[state_match, collateral_damage,"))
    proc = simworld("run", "kiosk.yaml", "--out", "runs/kiosk", "-q", cwd=path)
    assert proc.returncode == 0, proc.stderr
    return path


def _row(kiosk: Path, episode: str) -> int:
    record = next(r for r in iter_records(kiosk / "runs/kiosk") if r["episode_id"] == episode)
    return record["task"]["goal"]["row"]


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_replay_stops_on_a_tool_bug_with_one_line(kiosk):
    ok = simworld("replay", "runs/kiosk", cwd=kiosk)
    assert ok.returncode == 0 and "all match" in ok.stdout, ok.stdout + ok.stderr
    proc = simworld("replay", "runs/kiosk", cwd=kiosk, KIOSK_MODE="raise")
    row = _row(kiosk, "kiosk_count-s0-000000")
    assert _one_error_line(proc) == f"error: episode kiosk_count-s0-000000 crashed on replay{CRASH % row}{HINT}"
    debug = simworld("replay", "runs/kiosk", cwd=kiosk, KIOSK_MODE="raise", SIMWORLD_DEBUG="1")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "KeyError: 'boom'" in debug.stderr
    assert debug.stderr.rstrip().endswith(f"crashed on replay{CRASH % row}")  # (no hint: the traceback is there)


def test_a_fork_stops_on_a_tool_bug_in_its_prefix_or_its_own_turns(kiosk, tmp_path):
    episode = "kiosk_count-s0-000001"
    row = _row(kiosk, episode)
    # Event 2 is the tool's answer: the prefix replays the call.
    prefix = simworld("replay", "runs/kiosk", "--episode", episode, "--fork-at", "2", "--out", str(tmp_path / "f"),
                      cwd=kiosk, KIOSK_MODE="raise")
    assert _one_error_line(prefix) == f"error: episode {episode} crashed on replay{CRASH % row}{HINT}"
    assert not (tmp_path / "f" / "trajectories-forks.jsonl").exists()
    # After event 0 the clerk acts anew and calls the tool itself: the fork's episode crashed.
    own = simworld("replay", "runs/kiosk", "--episode", episode, "--fork-at", "0", "--out", str(tmp_path / "f"),
                   cwd=kiosk, KIOSK_MODE="raise")
    line = _one_error_line(own)
    assert line.startswith(f"error: episode {episode}-fork0-") and line.endswith(f" crashed{CRASH % row}{HINT}")


def test_score_export_and_show_blame_the_world_not_the_scorer_and_keep_what_was_written(kiosk, tmp_path):
    run = tmp_path / "kiosk"
    shutil.copytree(kiosk / "runs/kiosk", run)  # (scores of its own)
    row = _row(kiosk, "kiosk_count-s0-000000")
    expected = (f"error: episode kiosk_count-s0-000000 crashed on replay for scorer 'collateral_damage'"
                f"{CRASH % row}{HINT}")
    shown = simworld("show", str(run), "--episode", "kiosk_count-s0-000000", cwd=kiosk, KIOSK_MODE="raise")
    assert _one_error_line(shown) == expected
    export = tmp_path / "out" / "x.jsonl"
    assert simworld("score", str(run), cwd=kiosk).returncode == 0
    assert simworld("export", str(run), "--format", "trl", "--out", str(export), cwd=kiosk).returncode == 0
    scores = {p.name: p.read_bytes() for p in (run / "scores").iterdir()}
    exported = {p.name: p.read_bytes() for p in export.parent.iterdir()}
    assert set(scores) == {"scores.jsonl", "summary.json"} and "x.jsonl" in exported
    assert _one_error_line(simworld("score", str(run), cwd=kiosk, KIOSK_MODE="raise")) == expected
    assert {p.name: p.read_bytes() for p in (run / "scores").iterdir()} == scores
    shutil.rmtree(run / "scores")  # (else the export takes the stored scores and replays nothing)
    assert _one_error_line(simworld("export", str(run), "--format", "trl", "--out", str(export), cwd=kiosk,
                                    KIOSK_MODE="raise")) == expected
    assert {p.name: p.read_bytes() for p in export.parent.iterdir()} == exported


# ----------------------------------------------------------------------------------------------
# In this process


class Vault(Shop):
    """Shop's shelves with a tool of this test only (never registered)."""

    name = "test_vault"


@Vault.tool(writes=True)
def withdraw(ctx: ToolContext, row: int) -> dict:
    """Write, then find that the world cannot give what the scenario asks."""
    ctx.state.set("shelf", "stock", row, 99)
    raise SimworldError("the scenario asks for a vault this world cannot build")


def test_a_tool_that_raises_a_user_error_after_writing_leaves_the_state_as_it_was():
    world = Vault.load(None, 0)
    state = world.new_state()
    before = state.state_hash()
    try:  # as a Gymnasium or PettingZoo user may: catch it and go on with the state
        world.call(state, ToolCall(id="c", name="withdraw", arguments={"row": 2}), np.random.default_rng(0))
    except SimworldError as exc:
        assert "cannot build" in str(exc)
    else:
        raise AssertionError("the SimworldError did not reach the caller")
    assert state.get("shelf", "stock", 2) == 2
    assert state.state_hash() == before and state.diff(world.new_state()) == []


@register_agent("test_multiline_clerk")
class MultilineClerk(ledger_world.LedgerClerk):
    """A clerk with a bug whose message runs over two lines."""

    async def act(self, view):
        raise ValueError("first line\nsecond line")


def test_a_multi_line_exception_in_an_episode_stops_the_run_with_one_line(tmp_path):
    with pytest.raises(EpisodeCrash) as caught:
        run_batch(scenario_from_data(runner_plugin.scenario_data(clerk="test_multiline_clerk")), tmp_path / "run",
                  episodes=1)
    assert str(caught.value) == f"episode ledger_deposit-s0-000000 crashed: ValueError: first line{HINT}"
