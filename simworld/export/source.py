"""Reading runs for export: one :class:`Sample` per trajectory per assistant-side perspective.

Records are used as the plain dicts the shards hold (no pydantic per record): export runs at tens
of thousands of samples per second. :func:`perspective_dicts` is :func:`simworld.perspective.perspective`
over dicts (a test keeps the two equal).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from simworld import registry
from simworld.episode import STOP
from simworld.replay import load_run_scenario, parse_record
from simworld.scenario import Scenario
from simworld.scoring.base import ScoringContext, world_of
from simworld.scoring.report import SCORES_DIR, SCORES_FILE, score_line, scorer_names
from simworld.types import ToolSpec


def perspective_dicts(events: list[dict[str, Any]], role: str, system: str | None) -> list[dict[str, Any]]:
    """Role `role`'s view of a global event log of dicts (see :mod:`simworld.perspective`)."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system})
    for ev in events:
        audience = ev.get("audience")
        if audience is not None and audience != role:
            continue
        if ev.get("speaker") == role:
            if ev["role"] == "tool":
                out.append({"role": "tool", "content": ev.get("content", ""), "tool_call_id": ev.get("tool_call_id"),
                            "name": ev.get("name"), "error": bool(ev.get("error"))})
            else:
                msg: dict[str, Any] = {"role": "assistant", "content": ev.get("content", "")}
                if ev.get("tool_calls"):
                    msg["tool_calls"] = ev["tool_calls"]
                if ev.get("invalid"):
                    msg["invalid"] = ev["invalid"]
                out.append(msg)
            continue
        content = ev.get("content")
        if ev["role"] == "tool" or not content:
            continue
        if out and out[-1]["role"] == "user":
            out[-1] = {"role": "user", "content": out[-1]["content"] + "\n\n" + content}
        else:
            out.append({"role": "user", "content": content})
    return out


def training_view(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A perspective cut to end with its last assistant turn, without the user simulator's stop marker."""
    end = len(messages)
    while end and messages[end - 1]["role"] != "assistant":
        end -= 1
    out = messages[:end]
    for i, m in enumerate(out):
        if m["role"] == "user" and STOP in m["content"]:
            out[i] = {**m, "content": m["content"].replace(STOP, "").strip()}
    return out


@dataclass
class RunInfo:
    """What every trajectory of one run shares."""

    path: Path
    scenario: Scenario
    kinds: dict[str, str]
    world_cls: Any
    today: dt.date
    scorers: list[str]
    _worlds: dict[bytes, Any] = field(default_factory=dict, repr=False)
    _tools: dict[tuple[bytes, tuple[str, ...]], tuple[list[ToolSpec], list[dict[str, Any]]]] = \
        field(default_factory=dict, repr=False)

    def tools_for(self, record: dict[str, Any], role: str) -> tuple[list[ToolSpec], list[dict[str, Any]]]:
        """(ToolSpecs, OpenAI tool dicts) `role` had in this episode, from its world instance: a world
        may shape a tool's schema from its parameters (a negotiation's make_offer)."""
        world = record.get("world") or {}
        wkey = orjson.dumps([world.get("type"), world.get("params"), world.get("seed")], option=orjson.OPT_SORT_KEYS)
        names = tuple((record.get("tools") or {}).get(role) or ())
        hit = self._tools.get((wkey, names))
        if hit is None:
            instance = self._worlds.get(wkey)
            if instance is None:
                instance = self._worlds[wkey] = world_of({"type": self.scenario.world.type, **world})
            specs = instance.tool_specs(list(names))
            hit = self._tools[(wkey, names)] = (specs, [t.openai() for t in specs])
        return hit


@dataclass
class Sample:
    """One perspective of one trajectory (or one external conversation), ready to format."""

    id: str
    perspective: str
    messages: list[dict[str, Any]]
    """system/user/assistant/tool dicts; assistant ``tool_calls`` hold ``{"id", "name", "arguments"}``."""
    tools: list[Any]
    """ToolSpecs (or OpenAI-shaped tool dicts for external data)."""
    tools_openai: list[dict[str, Any]]
    today: dt.date
    scores: dict[str, Any]
    provenance: dict[str, Any]
    synthetic: bool = True
    split_key: str = ""
    world: str = ""
    success: bool = True
    record: dict[str, Any] | None = field(default=None, repr=False)


def open_run(path: str | Path, requested_scorers: tuple[str, ...] = ()) -> RunInfo:
    """Scenario, role kinds, world class, tool specs and date of a run directory."""
    sc = load_run_scenario(path)
    world_cls = registry.get_world(sc.world.type)
    kinds = {role: spec.kind for role, spec in sc.roles.items()}
    return RunInfo(Path(path), sc, kinds, world_cls, sc.today, scorer_names(sc, requested_scorers))


class ScoreLookup:
    """Scores of a run's trajectories: from ``RUN/scores/scores.jsonl`` when `simworld score` wrote
    it (read in step with the records, which come in the same order), else computed here."""

    def __init__(self, run: RunInfo) -> None:
        self.run = run
        self.ctx = ScoringContext(run.scenario)
        path = run.path / SCORES_DIR / SCORES_FILE
        self._fh = open(path, "rb") if path.exists() else None
        self._offsets: dict[str, int] | None = None
        self.computed = 0

    def _index(self) -> dict[str, int]:
        offsets: dict[str, int] = {}
        assert self._fh is not None
        self._fh.seek(0)
        pos = 0
        for line in self._fh:
            i = line.find(b'"episode_id":"')
            if i >= 0 and line.endswith(b"\n"):
                offsets[line[i + 14:line.find(b'"', i + 14)].decode()] = pos
            pos += len(line)
        return offsets

    def get(self, record: dict[str, Any]) -> dict[str, Any]:
        eid = record["episode_id"]
        if self._fh is not None:
            if self._offsets is None:
                line = self._fh.readline()
                if line.endswith(b"\n") and f'"episode_id":"{eid}"'.encode() in line[:400]:
                    return orjson.loads(line)
                self._offsets = self._index()  # out of step (the run grew since): look lines up
            pos = self._offsets.get(eid)
            if pos is not None:
                self._fh.seek(pos)
                return orjson.loads(self._fh.readline())
        traj = parse_record(record)
        if isinstance(traj, str):
            return {"value": 0.0, "passed": False, "scores": {}, "error": traj}
        self.computed += 1
        return score_line(traj, self.run.scorers, self.ctx)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def compact_scores(line: dict[str, Any]) -> dict[str, Any]:
    """What a sample carries: each scorer's value, the mean, and whether all passed."""
    out: dict[str, Any] = {name: s["value"] for name, s in line.get("scores", {}).items()}
    out["value"] = line.get("value", 0.0)
    out["passed"] = bool(line.get("passed", False))
    return out


def provenance_of(run: RunInfo, record: dict[str, Any], scores: dict[str, Any]) -> dict[str, Any]:
    prov = record.get("provenance") or {}
    task = record.get("task") or {}
    return {
        "run": os.path.basename(os.path.normpath(str(run.path))),
        "scenario": record.get("scenario"),
        "scenario_hash": record.get("scenario_hash"),
        "episode_id": record.get("episode_id"),
        "seed": record.get("seed"),
        "episode_index": record.get("episode_index"),
        "variation": record.get("variation") or {},
        "task_type": task.get("type"),
        "instance_id": task.get("instance_id"),
        "agents": prov.get("agent_ids") or {r: a.get("type") for r, a in (record.get("agents") or {}).items()},
        "models": prov.get("models") or {},
        "simworld_version": prov.get("simworld_version"),
        "parent": prov.get("parent"),
        "fork_at": prov.get("fork_at"),
        "success": bool((record.get("outcome") or {}).get("success")),
        "scores": scores,
        "synthetic": bool(prov.get("synthetic", True)),
    }


def samples_of(run: RunInfo, record: dict[str, Any], scores: dict[str, Any]) -> Iterator[Sample]:
    """One sample per assistant-kind role that took at least one turn; ids are ``RUN/EPISODE/ROLE``
    (RUN: the run directory's name), unique across the runs of one export."""
    events = record.get("events") or []
    system = record.get("system") or {}
    prov = provenance_of(run, record, scores)
    task = record.get("task") or {}
    for role, kind in run.kinds.items():
        if kind != "assistant":
            continue
        msgs = training_view(perspective_dicts(events, role, system.get(role)))
        if not any(m["role"] == "assistant" for m in msgs):
            continue
        tools, tools_openai = run.tools_for(record, role)
        yield Sample(id=f"{prov['run']}/{record['episode_id']}/{role}", perspective=role, messages=msgs, tools=tools,
                     tools_openai=tools_openai, today=run.today, scores=scores, provenance={**prov, "perspective": role},
                     synthetic=prov["synthetic"], split_key=f"{record.get('scenario')}\x00{task.get('instance_id')}",
                     world=run.scenario.world.type, success=prov["success"], record=record)
