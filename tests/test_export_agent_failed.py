"""An episode whose agent failed (``outcome.termination == "error"``: a model call that kept failing)
was cut short by the failure: it is no conversation to train on, and the run's resume re-runs it.
`simworld run` exits 1 while any are left, so `run && export` stops; `export` leaves their samples
out, counted as ``agent_failed`` and named in a note.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import yaml

import ledger_world
from simworld.agent import Agent, AgentParams
from simworld.episode import AgentFailure
from simworld.registry import register_agent

ROOT = Path(__file__).resolve().parent.parent


class OutageParams(AgentParams):
    every: int = 3
    """Fails in the episodes whose index is a multiple of `every` (while SIMWORLD_TEST_FLAKY is set)."""


@register_agent("outage_clerk")
class OutageClerk(Agent):
    """The ledger clerk, failing as an LLM agent fails when its server is down."""

    Params = OutageParams

    def __init__(self, params: OutageParams, role: str, rng) -> None:
        super().__init__(params, role, rng)
        self.inner = ledger_world.LedgerClerk(ledger_world.LedgerClerk.Params(type="ledger_clerk"), role, rng)

    async def act(self, view):
        if os.environ.get("SIMWORLD_TEST_FLAKY") and view.episode.spec.index % self.params.every == 0 \
                and view.messages[-1].role == "tool":  # (after its call: a conversation cut short)
            raise AgentFailure("clerk (model m): still failing after 2 attempts: APIConnectionError")
        return await self.inner.act(view)


def simworld(*args, flaky: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "SIMWORLD_PLUGINS": "test_export_agent_failed"}
    env.pop("SIMWORLD_TEST_FLAKY", None)
    if flaky:
        env["SIMWORLD_TEST_FLAKY"] = "1"
    return subprocess.run([sys.executable, "-m", "simworld", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def test_run_exits_1_while_episodes_failed_in_their_agent_and_export_leaves_them_out(tmp_path):
    data = ledger_world.scenario_data()
    data["roles"]["clerk"]["agent"] = {"type": "outage_clerk"}
    scenario = tmp_path / "ledger.yaml"
    scenario.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    first = simworld("run", scenario, "-n", 9, "--out", run, flaky=True)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "3 episodes failed in their agent; re-run the same command to retry them." in first.stdout
    failed = {r["episode_id"] for r in map(orjson.loads, _lines(run)) if r["outcome"]["termination"] == "error"}
    assert len(failed) == 3

    for fmt in ("llama3", "openai"):
        out = tmp_path / f"{fmt}.jsonl"
        exported = simworld("export", run, "--format", fmt, "--out", out)
        assert exported.returncode == 0, exported.stderr
        assert "note: left out 3 samples of episodes whose agent failed" in exported.stderr
        meta = out if fmt == "llama3" else out.with_name(f"{fmt}.meta.jsonl")
        ids = [orjson.loads(line)["id"] for line in meta.read_text().splitlines()]
        assert len(ids) == 6 and not {i.split("/")[1] for i in ids} & failed
        card = orjson.loads(out.with_name(f"{fmt}.card.json").read_bytes())
        assert card["filtered"]["agent_failed"] == 3

    second = simworld("run", scenario, "-n", 9, "--out", run)  # the server is back: the resume retries them
    assert second.returncode == 0, second.stdout + second.stderr
    assert "3 failed episodes retried" in second.stdout
    exported = simworld("export", run, "--format", "llama3", "--out", tmp_path / "all.jsonl")
    assert exported.returncode == 0 and "agent failed" not in exported.stderr
    assert len((tmp_path / "all.jsonl").read_text().splitlines()) == 9


def _lines(run: Path) -> list[bytes]:
    return [line for shard in sorted(run.glob("trajectories-*.jsonl")) for line in shard.read_bytes().splitlines()]
