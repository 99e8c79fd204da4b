"""Plugin authors' worlds: a world without a `Params` model, tools with bugs (an exception, an answer
JSON cannot hold, a NaN), and a run read back where its plugin is not loaded (`simworld show`, the
manifest's record of the plugins).

The plugin is a real module written to a temporary directory and loaded by real `simworld`
processes through ``SIMWORLD_PLUGINS`` or a ``simworld.plugins`` entry point; this test process
never registers it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from simworld.runio import manifest_plugins
from simworld.show import open_shown_run, plugins_text
from simworld.types import ToolCall
from simworld.world import NoParams, Table, ToolContext, ToolCrash, World, WorldData

PLUGIN = "kiosk_plugin"
PLUGIN_SOURCE = '''
"""A kiosk: shelves with stock. The world has no Params; $KIOSK_MODE makes its peek tool buggy."""
import os
import re

import numpy as np

from simworld.agent import Agent
from simworld.registry import register_agent, register_scorer, register_task, register_world
from simworld.scoring.base import Score
from simworld.task import TaskGenerator, TaskInstance
from simworld.types import ToolCall
from simworld.world import Table, World, WorldData


@register_world("kiosk")
class KioskWorld(World):
    """A kiosk with five shelves."""

    @classmethod
    def build(cls, params, rng):
        return WorldData({"shelf": Table("shelf", {"stock": rng.integers(1, 50, 5).astype(np.int64)})})


@KioskWorld.tool(consumes=["shelf"])
def peek(ctx, row: int) -> dict:
    """How many items a shelf holds."""
    mode = os.environ.get("KIOSK_MODE", "")
    if mode == "raise":
        raise KeyError("boom")
    if mode == "set":
        return {"stock": {1, 2}}
    if mode == "nan":
        return {"row": row, "stock": float("nan")}
    return {"row": row, "stock": int(ctx.state.get("shelf", "stock", row))}


@register_task("kiosk", "count")
class CountTask(TaskGenerator):
    """Say how many items a shelf holds."""

    def sample(self, world, state, rng):
        row = int(rng.integers(5))
        return TaskInstance("count", f"shelf-{row}", {"row": row}, {"user": {"row": row}},
                            [ToolCall(id="g0", name="peek", arguments={"row": row})], state.snapshot(),
                            [str(int(state.get("shelf", "stock", row)))])


@register_agent("kiosk_user")
class KioskUser(Agent):
    """Asks about one shelf, then leaves."""

    async def act(self, view):
        return f"How many on shelf {view.private['row']}?" if view.turn == 0 else "Thanks ###STOP###"


@register_agent("kiosk_clerk")
class KioskClerk(Agent):
    """Peeks at the shelf asked about and says the count."""

    async def act(self, view):
        last = view.messages[-1]
        if last.role == "tool":
            return f"It holds {re.findall(r'stock.: *([0-9]+)', last.content)[0]}."
        return '{"name": "peek", "parameters": {"row": %s}}' % re.findall(r"[0-9]+", last.content)[-1]


@register_scorer("kiosk_brevity")
def kiosk_brevity(events) -> Score:
    """Short conversations score higher."""
    return Score(value=1.0 / len(events), passed=True)
'''

SCENARIO = """\
name: kiosk_count
world: {type: kiosk}
task: {type: count}
first_speaker: user
max_turns: 8
episodes: 3
scoring: [state_match, kiosk_brevity]
roles:
  user: {kind: user, agent: {type: kiosk_user}}
  clerk: {kind: assistant, agent: {type: kiosk_clerk}, tools: [peek]}
"""


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plugin")
    (path / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    (path / "kiosk.yaml").write_text(SCENARIO)
    return path


def simworld(*args: str, cwd: Path, plugin: bool = True, **env: str) -> subprocess.CompletedProcess:
    """`simworld ARGS` in a fresh process, with the kiosk plugin loaded (`plugin`) or not."""
    full = {k: v for k, v in os.environ.items() if k not in ("SIMWORLD_PLUGINS", "PYTHONPATH", "SIMWORLD_DEBUG")}
    if plugin:
        full.update(PYTHONPATH=str(cwd), SIMWORLD_PLUGINS=PLUGIN)
    full.update(env)
    return subprocess.run([sys.executable, "-m", "simworld", *args], capture_output=True, text=True, env=full,
                          cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def kiosk_run(plugin_dir) -> Path:
    """A complete run of the kiosk scenario, made with the plugin."""
    proc = simworld("run", "kiosk.yaml", "--out", "runs/kiosk", cwd=plugin_dir)
    assert proc.returncode == 0, proc.stderr
    return plugin_dir / "runs" / "kiosk"


# ----------------------------------------------------------------------------------------------
# A world without Params


def test_a_world_without_params_takes_none():
    class Bare(World):
        name = "test_bare"  # (the name keys World.load's cache)

        @classmethod
        def build(cls, params, rng):
            return WorldData({"t": Table("t", {"x": np.zeros(2, np.int64)})})

    assert Bare.Params is NoParams
    assert Bare.load(None, 0).params == NoParams()
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Bare.load({"size": 3}, 0)


def test_a_plugin_world_without_params_validates_runs_and_is_listed(plugin_dir, kiosk_run, tmp_path):
    ok = simworld("validate", "kiosk.yaml", cwd=plugin_dir)
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stderr
    bad = simworld("validate", "kiosk.yaml", "--set", "world.params.size=3", cwd=plugin_dir)
    assert bad.returncode == 2
    assert "kiosk.yaml: world.params.size (from --set world.params.size): unknown field 'size'" in bad.stdout
    schema = simworld("schema", "-o", str(tmp_path / "schema.json"), cwd=plugin_dir)
    assert schema.returncode == 0, schema.stderr
    defs = json.loads((tmp_path / "schema.json").read_text())["$defs"]
    assert defs["NoParams"]["additionalProperties"] is False
    listed = simworld("list", "worlds", cwd=plugin_dir)
    assert listed.returncode == 0 and "kiosk" in listed.stdout and "A kiosk with five shelves" in listed.stdout
    records = [json.loads(line) for shard in sorted(kiosk_run.glob("trajectories-*.jsonl"))
               for line in shard.read_text().splitlines()]
    assert len(records) == 3 and all(r["outcome"]["success"] for r in records)
    assert all(r["world"]["params"] == {} for r in records)


# ----------------------------------------------------------------------------------------------
# Tools with bugs


class Shop(World):
    """A world of this test only (never registered)."""

    name = "test_shop"

    @classmethod
    def build(cls, params, rng):
        return WorldData({"shelf": Table("shelf", {"stock": np.arange(3, dtype=np.int64)})})


@Shop.tool(writes=True)
def restock(ctx: ToolContext, row: int, answer: str = "ok") -> object:
    """Write, then answer as told."""
    ctx.state.set("shelf", "stock", row, 99)
    if answer == "raise":
        raise ZeroDivisionError("division by zero")
    if answer == "empty_error":
        raise RuntimeError()
    return {"ok": {"row": row, "note": None, "prices": np.array([1.5, 2.0])}, "nan32": {"prices": [np.float32("nan")]},
            "array_inf": {"prices": np.array([[1.0, np.inf]])}, "bare_inf": float("-inf"), "bytes": b"x"}[answer]


def test_a_tool_parameter_without_a_type_is_refused_when_the_tool_is_declared(tmp_path):
    """Its schema would be {} (anything): a model would be told nothing of what to pass."""
    with pytest.raises(TypeError, match="tool 'peek_any': parameter 'row' has no type annotation; annotate it"):
        @Shop.tool()
        def peek_any(ctx: ToolContext, row) -> dict:  # noqa: ANN001
            """Forgot the annotation."""
            return {}
    assert "peek_any" not in Shop.tools
    (tmp_path / "unannotated.py").write_text(PLUGIN_SOURCE.replace("def peek(ctx, row: int)", "def peek(ctx, row)"))
    res = simworld("list", "worlds", cwd=tmp_path, SIMWORLD_PLUGINS="unannotated", PYTHONPATH=str(tmp_path))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == ("error: SIMWORLD_PLUGINS: cannot import plugin module 'unannotated': TypeError: "
                                  "tool 'peek': parameter 'row' has no type annotation; annotate it (Any takes any "
                                  "JSON value) so that the tool's schema says what it takes")


def _call(answer: str) -> tuple[World, object, Exception | None]:
    world = Shop.load(None, 0)
    state = world.new_state()
    try:
        world.call(state, ToolCall(id="c", name="restock", arguments={"row": 1, "answer": answer}),
                   np.random.default_rng(0))
    except ToolCrash as exc:
        return world, state, exc
    return world, state, None


def test_a_tool_that_answers_well_is_unchanged():
    world = Shop.load(None, 0)
    state = world.new_state()
    result = world.call(state, ToolCall(id="c", name="restock", arguments={"row": 1}), np.random.default_rng(0))
    assert result.content == '{"row":1,"note":null,"prices":[1.5,2.0]}' and not result.error
    assert state.get("shelf", "stock", 1) == 99


@pytest.mark.parametrize(("answer", "problem"), [
    ("raise", "ZeroDivisionError: division by zero"),
    ("empty_error", "RuntimeError"),
    ("bytes", "its answer is not JSON: Type is not JSON serializable: bytes"),
    ("nan32", "its answer holds nan at prices[0], which JSON cannot hold (it would be recorded as null)"),
    ("array_inf", "its answer holds inf at prices[0][1], which JSON cannot hold (it would be recorded as null)"),
    ("bare_inf", "its answer is -inf, which JSON cannot hold (it would be recorded as null)"),
])
def test_a_tool_bug_is_a_crash_naming_the_tool_and_call_and_undoes_its_writes(answer, problem):
    _, state, exc = _call(answer)
    assert isinstance(exc, ToolCrash) and exc.tool == "restock"
    assert str(exc) == f'in tool restock (call restock{{"row":1,"answer":"{answer}"}}): {problem}'
    assert state.get("shelf", "stock", 1) == 1  # the write before the bug is undone


@pytest.mark.parametrize(("mode", "problem"), [
    ("raise", "KeyError: 'boom'"),
    ("set", "its answer is not JSON: Type is not JSON serializable: set"),
    ("nan", "its answer holds nan at stock, which JSON cannot hold (it would be recorded as null)"),
])
def test_a_run_stops_on_a_tool_bug_with_one_line_naming_the_tool(plugin_dir, mode, problem):
    proc = simworld("run", "kiosk.yaml", "--out", f"runs/bug-{mode}", "--episodes", "1", cwd=plugin_dir,
                    KIOSK_MODE=mode)
    call = json.loads((plugin_dir / f"runs/bug-{mode}/manifest.json").read_text())
    assert call["status"] == "failed"
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: episode kiosk_count-s0-000000 crashed in tool peek (call peek{\"row\":")
    assert lines[-1].endswith(f"): {problem} (set SIMWORLD_DEBUG=1 for the traceback)")
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------------------------
# Reading a run without its plugin


def test_the_manifest_records_the_plugins_a_run_loaded(plugin_dir, kiosk_run, tmp_path):
    manifest = json.loads((kiosk_run / "manifest.json").read_text())
    assert manifest["plugins"] == [{"module": PLUGIN, "source": "SIMWORLD_PLUGINS"}]
    assert manifest["sessions"][-1]["plugins"] == manifest["plugins"]
    # An installed package declaring the plugin as an entry point, the same run resumed with it:
    # the manifest keeps every session's plugins.
    dist = plugin_dir / "kiosk_plugin-0.3.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kiosk-plugin\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text(f"[simworld.plugins]\nkiosk = {PLUGIN}\n")
    copy = tmp_path / "kiosk"
    subprocess.run(["cp", "-r", str(kiosk_run), str(copy)], check=True)
    try:
        proc = simworld("run", "kiosk.yaml", "--out", str(copy), "--episodes", "4", cwd=plugin_dir, plugin=False,
                        PYTHONPATH=str(plugin_dir))
    finally:
        for f in dist.iterdir():
            f.unlink()
        dist.rmdir()
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((copy / "manifest.json").read_text())
    entry = {"entry_point": "kiosk", "module": PLUGIN, "source": "entry point", "package": "kiosk-plugin",
             "version": "0.3"}
    assert manifest["sessions"][-1]["plugins"] == [entry]
    assert manifest["plugins"] == [{"module": PLUGIN, "source": "SIMWORLD_PLUGINS"}, entry]
    assert plugins_text(manifest["plugins"]) == (f"SIMWORLD_PLUGINS={PLUGIN}, "
                                                 f"entry point kiosk = {PLUGIN} (kiosk-plugin 0.3)")


def test_a_manifest_from_before_plugins_were_recorded_reads_as_none():
    assert manifest_plugins({"status": "complete"}) == []
    assert manifest_plugins({"plugins": "qa_bank"}) == []
    assert manifest_plugins({"plugins": [{"module": "a", "source": "SIMWORLD_PLUGINS"}, 3, {"source": "x"}]}) == [
        {"module": "a", "source": "SIMWORLD_PLUGINS"}]


def test_show_reads_a_run_whose_plugin_is_not_loaded(plugin_dir, kiosk_run):
    note = (f"note: {kiosk_run}: world 'kiosk', agents 'kiosk_user' and 'kiosk_clerk' and scorer 'kiosk_brevity' "
            "are not registered here (the run was made with a plugin): shown from its records, scores only where "
            f"`simworld score` stored them; its manifest records the plugins SIMWORLD_PLUGINS={PLUGIN}\n")
    listed = simworld("show", str(kiosk_run), cwd=plugin_dir, plugin=False)
    assert (listed.returncode, listed.stderr) == (0, note)
    assert "kiosk_count-s0-000002" in listed.stdout and "success" in listed.stdout
    rows = [line for line in listed.stdout.splitlines() if "kiosk_count-s0" in line]
    assert len(rows) == 3 and all(row.rstrip("│ ").endswith("-") for row in rows)  # no score computed
    one = simworld("show", str(kiosk_run), "--episode", "kiosk_count-s0-000001", "--max-result", "0", cwd=plugin_dir,
                   plugin=False)
    assert one.returncode == 0, one.stderr
    assert "→ peek(" in one.stdout and "⤷ peek → clerk" in one.stdout and "SUCCESS" in one.stdout
    assert "scores unavailable" in one.stdout
    asked = simworld("show", str(kiosk_run), "--episode", "kiosk_count-s0-000001", "--perspective", "clerk",
                     cwd=plugin_dir, plugin=False)
    assert (asked.returncode, asked.stderr) == (2, "error: --perspective needs the tools of world 'kiosk', which is "
                                                   "not registered here; its manifest records the plugins "
                                                   f"SIMWORLD_PLUGINS={PLUGIN}\n")
    # Scores `simworld score` stored with the plugin are shown without it.
    score = simworld("score", str(kiosk_run), cwd=plugin_dir)
    assert score.returncode == 0, score.stderr
    scored = simworld("show", str(kiosk_run), "--episode", "kiosk_count-s0-000001", cwd=plugin_dir, plugin=False)
    assert scored.returncode == 0 and "kiosk_brevity 0.20" in scored.stdout and "unavailable" not in scored.stdout


def test_show_names_where_plugins_come_from_when_the_manifest_does_not_say(kiosk_run, tmp_path):
    copy = tmp_path / "old"
    subprocess.run(["cp", "-r", str(kiosk_run), str(copy)], check=True)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["plugins"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    shown = open_shown_run(str(copy))
    assert shown.info.scenario.world.type == "kiosk" and not shown.world_known and not shown.scorable
    assert shown.note.endswith("; load the plugin that registers them (SIMWORLD_PLUGINS or a simworld.plugins "
                               "entry point)")


def test_show_still_refuses_a_run_scenario_that_is_wrong_otherwise(kiosk_run, tmp_path):
    from simworld.errors import ScenarioError

    copy = tmp_path / "bad"
    subprocess.run(["cp", "-r", str(kiosk_run), str(copy)], check=True)
    text = (copy / "scenario.yaml").read_text()
    (copy / "scenario.yaml").write_text(text.replace("max_turns: 8", "max_turns: -1"))
    with pytest.raises(ScenarioError, match="unknown world 'kiosk'"):
        open_shown_run(str(copy))
