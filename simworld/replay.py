"""Replay: re-execute recorded episodes and check that the record is what the world produces.

For each trajectory the world is regenerated from its parameters and seed and the task from the
scenario and the episode seed (so the state, the task and the tool RNG are the ones the episode
had). The recorded actions (every user/assistant message, with its tool calls) are then applied
through the same turn engine, :class:`~simworld.episode.Episode`, without any agent or model.
Every event the engine produces (tool results, notices, error observations) must equal the
recorded one, and so must the final state hash and the outcome. The first difference is reported
with the episode id and the event index.

`fork` replays a prefix (through event N) and lets other agents continue from that state; the
new trajectory records its parent episode and the fork point.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from simworld.episode import AgentFailure, Episode, EpisodeSpec, continue_episode
from simworld.errors import DamagedRecord, SimworldError, UnknownName, one_line
from simworld.runio import iter_records
from simworld.scenario import Scenario, load_scenario
from simworld.types import Message, Trajectory
from simworld.world import ToolCrash, episode_crash

SCENARIO_FILE = "scenario.yaml"


@dataclass
class Mismatch:
    """Where a replay first differs from the record."""

    where: str
    """``event 7``, ``final_state_hash``, ``outcome``, ``task``, ``world``, ``record``."""
    field: str = ""
    recorded: Any = None
    replayed: Any = None
    note: str = ""
    """Said after `where` (for a tool result: the call it answers)."""
    cause: str = ""
    """``world version`` when the record was made by another version of its world (every episode
    of the run then differs the same way)."""

    def describe(self, limit: int = 160) -> str:
        """One line: where, the path to the first differing value inside the field, and the two
        values (strings quoted, so whitespace shows; long ones cut around the difference)."""
        what = f"{self.where}{self.note}" + (f" {self.field}" if self.field else "")
        if self.recorded is None and self.replayed is None:
            return what
        path, a, b = _locate(self.recorded, self.replayed)
        if isinstance(a, str) and isinstance(b, str):
            a, b = _around(a, b, limit)
        return f"{what}{path}: recorded {_short(a, limit)} but replay gives {_short(b, limit)}"


_ABSENT = object()


def _locate(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any]:
    """The path (``.key`` / ``[i]``) to the first difference inside two JSON-like values, and the
    values there (``_ABSENT`` where one side has no such key or item)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            x, y = a.get(key, _ABSENT), b.get(key, _ABSENT)
            if x != y:
                return _locate(x, y, f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            x = a[i] if i < len(a) else _ABSENT
            y = b[i] if i < len(b) else _ABSENT
            if x != y:
                return _locate(x, y, f"{path}[{i}]")
    return path, a, b


def _around(a: str, b: str, limit: int) -> tuple[str, str]:
    """Two long strings cut to a window around their first difference (marked with …)."""
    if len(a) <= limit and len(b) <= limit:
        return a, b
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    start = max(0, i - limit // 3)
    cut = [("…" if start else "") + t[start:start + limit - 2] + ("…" if len(t) > start + limit - 2 else "")
           for t in (a, b)]
    return cut[0], cut[1]


def _short(v: Any, limit: int) -> str:
    if v is _ABSENT:
        return "nothing"
    text = orjson.dumps(v, default=str).decode()
    if isinstance(v, str):
        return text  # already cut around the difference
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass
class ReplayResult:
    episode_id: str
    mismatch: Mismatch | None = None
    events_checked: int = 0
    episode: Episode | None = field(default=None, repr=False)
    """The replayed episode (its final state and the task's expected state), when it could be built."""

    @property
    def ok(self) -> bool:
        return self.mismatch is None


def episode_for(traj: Trajectory, scenario: Scenario, episode_id: str | None = None,
                make_agents: bool = False) -> Episode:
    """A fresh Episode with the trajectory's world, task and RNGs (no agents unless asked)."""
    spec = EpisodeSpec(episode_id=episode_id or traj.episode_id, index=traj.episode_index, seed=traj.seed,
                       variation=dict(traj.variation), task_seed=traj.task_seed)
    try:
        return Episode(scenario, spec, make_agents=make_agents)
    except (UnknownName, ValidationError) as exc:
        # The run's scenario was built already; what fails here is the record's own variation.
        raise DamagedRecord(f"its variation cannot be applied to the run's scenario: {one_line(exc)}") from None


def _first_field_diff(recorded: Message, replayed: Message) -> tuple[str, Any, Any] | None:
    if recorded == replayed:
        return None
    a, b = recorded.model_dump(), replayed.model_dump()
    for key in a:
        if a[key] != b[key]:
            return key, a[key], b[key]
    return "message", a, b


_SETUP_FIELDS = ("scenario", "world", "agents", "system", "tools", "task")
"""What a record says of its episode's setup; all of it follows from the scenario, the variation
and the seeds, and all of it reaches training data (system prompts and tool lists) or scores."""


def _check_setup(traj: Trajectory, ep: Episode, fields: tuple[str, ...] = _SETUP_FIELDS) -> Mismatch | None:
    fresh = ep.trajectory().model_dump(mode="json", include=set(fields))
    recorded = traj.model_dump(mode="json", include=set(fields))
    world = dict(fresh["world"])
    if "version" not in recorded["world"]:  # recorded before worlds were versioned: the rest must match
        fresh["world"].pop("version", None)
    for name in fields:
        if recorded[name] != fresh[name]:
            if name == "world":
                other = world_version_note(recorded[name], world)
                if other:
                    return Mismatch("world", note=other, cause="world version")
            path, _, _ = _locate(recorded[name], fresh[name])
            key = path.lstrip(".").split(".")[0].split("[")[0] if path else ""
            if isinstance(recorded[name], dict) and key in recorded[name]:
                return Mismatch(name, key, recorded[name].get(key), fresh[name].get(key))
            return Mismatch(name, "", recorded[name], fresh[name])
    return None


def world_version_note(recorded: dict[str, Any], fresh: dict[str, Any]) -> str:
    """When a record's world was built by another version of its world than the one installed,
    what to tell the user (the same params and seed then build other data, so the record cannot be
    replayed here); '' when the versions agree. A record from before worlds were versioned has
    none: it is taken as another version when its world differs."""
    was, now = recorded.get("version"), fresh.get("version")
    if was == now:
        return ""
    name = f"the {fresh.get('type')} world"
    if was is None:
        return (f": recorded by {name} as it was before world versions, whose data differ from what this "
                f"simworld (version {now}) builds from the same params and seed; replay the run with the "
                "simworld version that recorded it")
    return (f": recorded by version {was} of {name}, this simworld has version {now}; replay the run with the "
            "simworld version that recorded it")


def _apply(traj: Trajectory, ep: Episode, upto: int | None = None,
           before_step: Callable[[Message], None] | None = None) -> Mismatch | None:
    """Step the recorded actions through `ep`, comparing every event; stop after event `upto`.
    `before_step(action)` is called before each recorded action is applied (its role is `ep.current`)."""
    events = traj.events
    last = len(events) - 1 if upto is None else upto
    for i in range(last + 1):
        ev = events[i]
        if i == len(ep.events):
            # The engine waits for an action: the record must hold one from the current role.
            if ep.done:
                return Mismatch(f"event {i}", "", "an event after the episode ended",
                                f"the episode ended ({ep.termination})")
            if ev.role not in ("user", "assistant") or ev.speaker != ep.current:
                return Mismatch(f"event {i}", "speaker", f"{ev.speaker} ({ev.role})", f"{ep.current} to act")
            action = Message(role=ev.role, content=ev.content, tool_calls=list(ev.tool_calls), invalid=ev.invalid)
            if before_step is not None:
                before_step(action)
            ep.step(action)
        diff = _first_field_diff(ev, ep.events[i])
        if diff is not None:
            return Mismatch(f"event {i}", diff[0], diff[1], diff[2], note=_result_of(events, i))
    return None


def _result_of(events: list[Message], i: int) -> str:
    """`` (the result of event J's call NAME)`` for a tool result: a result that differs most often
    means the call's arguments were altered."""
    ev = events[i]
    if ev.role != "tool" or not ev.tool_call_id:
        return ""
    for j in range(i - 1, -1, -1):
        for call in events[j].tool_calls:
            if call.id == ev.tool_call_id:
                args = orjson.dumps(call.arguments, default=str).decode()
                return f" (the result of event {j}'s call {call.name}{args if len(args) <= 80 else ''})"
    return ""


def replay_trajectory(traj: Trajectory, scenario: Scenario) -> ReplayResult:
    """Re-execute one recorded episode; the result names the first difference, if any. A bug of the
    world's tools raises :class:`~simworld.world.ToolCrash` (the world's to fix, not the record's)."""
    if traj.scenario_hash != scenario.content_hash:
        return ReplayResult(traj.episode_id, Mismatch("scenario", "hash", traj.scenario_hash, scenario.content_hash))
    ep = episode_for(traj, scenario)
    result = ReplayResult(traj.episode_id, episode=ep)
    result.mismatch = _check_setup(traj, ep) or _apply(traj, ep)
    if result.mismatch is not None:
        return result
    result.events_checked = len(traj.events)
    if len(ep.events) > len(traj.events):
        extra = ep.events[len(traj.events)]
        result.mismatch = Mismatch(f"event {len(traj.events)}", "", "no event (end of record)",
                                   f"{extra.role} from {extra.speaker}: {extra.content[:80]}")
        return result
    if not ep.done and traj.outcome.termination == "error":
        ep.fail(traj.outcome.error or "error")
    if not ep.done:
        result.mismatch = Mismatch("termination", "", traj.outcome.termination or "(none)",
                                   f"the episode is still running ({ep.current} to act)")
        return result
    final_hash = ep.state.state_hash()
    if final_hash != traj.final_state_hash:
        result.mismatch = Mismatch("final_state_hash", "", traj.final_state_hash, final_hash)
        return result
    outcome = ep.outcome().model_dump(mode="json")
    recorded = traj.outcome.model_dump(mode="json")
    if outcome != recorded:
        key = next((k for k in recorded if recorded[k] != outcome.get(k)), "outcome")
        result.mismatch = Mismatch("outcome", key, recorded.get(key), outcome.get(key))
    return result


def load_run_scenario(run_dir: str | Path) -> Scenario:
    """The resolved scenario of a run directory (its ``scenario.yaml``)."""
    path = Path(run_dir) / SCENARIO_FILE
    if not Path(run_dir).is_dir():
        raise SimworldError(f"{run_dir}: not a run directory")
    if not path.exists():
        raise SimworldError(f"{run_dir}: no {SCENARIO_FILE}; not a simworld run directory")
    return load_scenario(path, recorded=True)


def parse_record(record: dict[str, Any]) -> Trajectory | str:
    """A Trajectory, or one line saying why the record is not one."""
    try:
        return Trajectory.model_validate(record)
    except ValidationError as exc:
        return f"not a valid trajectory: {one_line(exc)}"


RECORD_ERRORS = (KeyError, TypeError, AttributeError, IndexError, ValueError)
"""What reading a record of the wrong shape as plain dicts raises (a well-formed record raises none)."""


def record_problem(record: Any, exc: BaseException) -> str:
    """Why `record`, reading which raised `exc` (one of RECORD_ERRORS), is not a trajectory. Re-raises
    `exc` when the record is a valid trajectory after all: then the fault is simworld's, not the run's
    (unless `exc` is a :class:`~simworld.errors.DamagedRecord`, which says what is wrong itself)."""
    if isinstance(exc, DamagedRecord):
        return f"not a trajectory of this run: {exc}"
    reason = parse_record(record) if isinstance(record, dict) else "not a valid trajectory: not a JSON object"
    if not isinstance(reason, str):
        raise exc
    return reason


def replay_run(run_dir: str | Path, episode_ids: set[str] | None = None, scenario: Scenario | None = None,
               problems: list[tuple[str, str]] | None = None) -> Iterator[ReplayResult]:
    """Replay the (latest) record of every episode of a run, or only of `episode_ids`. Lines of the
    shards that hold no record are listed in `problems` (see :func:`~simworld.runio.iter_records`).
    A bug of the world's tools stops it with an :class:`~simworld.errors.EpisodeCrash` naming the
    episode, the tool and the call."""
    sc = scenario or load_run_scenario(run_dir)
    for record in iter_records(run_dir, problems=problems):
        eid = str(record.get("episode_id", ""))
        if episode_ids is not None and eid not in episode_ids:
            continue
        traj = parse_record(record)
        if isinstance(traj, str):
            yield ReplayResult(eid, Mismatch("record", traj))  # the field says why; there is nothing to compare
            continue
        try:
            yield replay_trajectory(traj, sc)
        except DamagedRecord as exc:
            yield ReplayResult(eid, Mismatch("record", f"not a trajectory of this run: {exc}"))
        except ToolCrash as exc:  # the world's bug: no verdict on this record or any after it
            raise episode_crash(traj.episode_id, exc, " on replay") from exc


# ----------------------------------------------------------------------------------------------
# Forking


def turn_boundaries(traj: Trajectory) -> list[int]:
    """Event indices after which the next recorded event is an action (where a fork may start)."""
    return [i - 1 for i, ev in enumerate(traj.events)
            if i > 0 and ev.role in ("user", "assistant") and ev.speaker in traj.agents]


def fork_trajectory(traj: Trajectory, scenario: Scenario, fork_at: int, agents_scenario: Scenario) -> Trajectory:
    """Replay `traj` through event `fork_at`, then continue with the agents of `agents_scenario`.

    `agents_scenario` is the run's scenario with other agents (``--set roles.R.agent.type=...``);
    its world and task must be the same. What it sets wins over the parent's variation (as ``--set``
    does in a run): a path it overrides is dropped from the variation the fork is built with.
    Before taking over, every agent is brought through the prefix's turns of its role
    (:meth:`~simworld.agent.Agent.observe`), so a scripted customer goes on with its script instead
    of starting it again. The new episode id is ``<parent>-fork<N>-<hash>``; ``provenance.parent``
    and ``provenance.fork_at`` record where it came from. A bug of the world's tools, in the replayed
    prefix or the fork's own turns, raises :class:`~simworld.errors.EpisodeCrash` (one line, exit 1).
    """
    n = len(traj.events)
    if not 0 <= fork_at < n:
        raise SimworldError(f"{traj.episode_id}: --fork-at {fork_at} is outside the record's events 0..{n - 1}")
    bounds = turn_boundaries(traj)
    if fork_at not in bounds and fork_at != n - 1:
        before = max((b for b in bounds if b < fork_at), default=None)
        after = min((b for b in bounds if b > fork_at), default=None)
        options = " or ".join(str(b) for b in (before, after) if b is not None)
        raise SimworldError(f"{traj.episode_id}: event {fork_at} is inside a turn; fork at a turn boundary"
                            + (f" ({options})" if options else ""))
    if traj.scenario_hash and traj.scenario_hash != scenario.content_hash:
        raise SimworldError(f"{traj.episode_id}: the record is of another scenario than the run's scenario.yaml")
    new_id = f"{traj.episode_id}-fork{fork_at}-{agents_scenario.content_hash[:6]}"
    overridden = [p for p in traj.variation if p in scenario.variations and p not in agents_scenario.variations]
    base = traj.model_copy(update={"variation": {p: v for p, v in traj.variation.items() if p not in overridden}}) \
        if overridden else traj
    try:
        ep = episode_for(base, agents_scenario, episode_id=new_id, make_agents=True)
    except DamagedRecord as exc:
        raise SimworldError(f"{traj.episode_id}: cannot fork: {exc}") from None
    except ToolCrash as exc:  # (a task's gold plan runs the world's tools)
        raise episode_crash(traj.episode_id, exc, " on replay") from exc

    def catch_up(taken: Message) -> None:
        role = ep.current
        try:
            asyncio.run(ep.agents[role].observe(ep.view(role), taken))
        except AgentFailure as exc:
            raise SimworldError(f"{traj.episode_id}: cannot fork: the {role} agent failed while catching up on the "
                                f"prefix: {exc}") from None

    # The fork's agents and prompts are its own; its world and task must be the parent's.
    try:
        problem = _check_setup(traj, ep, ("world", "task")) or _apply(traj, ep, upto=fork_at, before_step=catch_up)
    except ToolCrash as exc:
        raise episode_crash(traj.episode_id, exc, " on replay") from exc
    if problem is not None:
        raise SimworldError(f"{traj.episode_id}: cannot fork: replay differs at {problem.describe()}")
    if len(ep.events) != fork_at + 1:
        raise SimworldError(f"{traj.episode_id}: event {fork_at} is inside a turn")
    try:
        new = asyncio.run(continue_episode(ep))
    except ToolCrash as exc:  # in the fork's own turns: as a run stops on it
        raise episode_crash(new_id, exc) from exc
    prov = new.provenance.model_copy(update={"parent": traj.episode_id, "fork_at": fork_at})
    return new.model_copy(update={"provenance": prov})


def missing_episodes(run_dir: str | Path, recorded: set[str]) -> tuple[list[str], str | None]:
    """The episodes a run's manifest says were run that have no record, and the run's status
    (None without a manifest: a directory of forks)."""
    path = Path(run_dir) / "manifest.json"
    try:
        manifest = orjson.loads(path.read_bytes())
        episodes, seed, status = int(manifest["episodes"]), int(manifest["seed"]), str(manifest["status"])
    except FileNotFoundError:
        return [], None
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise SimworldError(f"{path}: unreadable manifest (not the JSON `simworld run` writes)") from None
    from simworld.episode import episode_id

    name = load_run_scenario(run_dir).name  # (ids only: no variation to draw, whichever draw the run used)
    ids = (episode_id(name, seed, i) for i in range(episodes))
    return [eid for eid in ids if eid not in recorded], status
