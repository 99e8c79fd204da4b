"""Reading runs for export: one :class:`Sample` per trajectory per assistant-side perspective.

Records are used as the plain dicts the shards hold (no pydantic per record).
:func:`perspective_dicts` is :func:`simworld.perspective.perspective` over dicts (a test keeps the
two equal). The llama3 export skips even those: :func:`render_events` turns a role's events into
its normalized messages, Llama 3 text, loss spans, card counts and dedup text in one pass (tests
keep it equal to the perspective path).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from simworld import registry
from simworld.episode import STOP
from simworld.errors import DamagedRecord, SimworldError, one_line
from simworld.llama3.format import EMPTY_TURN, EOM, EOT, FAILED_CALL, HEADERS, tool_call_json
from simworld.replay import load_run_scenario, parse_record
from simworld.runio import shard_paths
from simworld.scenario import Scenario
from simworld.scoring.base import ScoringContext, world_of
from simworld.scoring.report import SCORES_DIR, SCORES_FILE, score_line, scorer_names
from simworld.types import ToolSpec


def json_text(text: str) -> str:
    """`text` as it may go into a JSON line: a path whose name is not UTF-8 (which Python holds as
    lone surrogates) shows its undecodable bytes as ``\\xNN`` escapes."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = text.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "backslashreplace")


class MalformedEvent(ValueError):
    """An event of a record has a field of the wrong type (the record is not a valid trajectory)."""


def _text(ev: dict[str, Any]) -> str:
    content = ev.get("content", "")
    if type(content) is not str:
        raise MalformedEvent("content is not a string")
    return content


def _calls(ev: dict[str, Any]) -> list[dict[str, Any]]:
    """An event's tool calls, each checked for the fields every format writes."""
    calls = ev.get("tool_calls") or []
    if type(calls) is not list:
        raise MalformedEvent("tool_calls is not a list")
    for c in calls:
        if type(c) is not dict or type(c.get("name")) is not str or type(c.get("id", "")) is not str \
                or type(c.get("arguments", {})) is not dict:
            raise MalformedEvent(_BAD_CALL)
    return calls


_BAD_CALL = "a tool call without a string name and id and an arguments object"


def perspective_dicts(events: list[dict[str, Any]], role: str, system: str | None) -> list[dict[str, Any]]:
    """Role `role`'s view of a global event log of dicts (see :mod:`simworld.perspective`: another
    role's rejected move or blank text is not in it). Raises (MalformedEvent, KeyError, ...) on
    events of the wrong shape."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system})
    for ev in events:
        audience = ev.get("audience")
        if audience is not None and audience != role:
            continue
        if ev.get("speaker") == role:
            if ev["role"] == "tool":
                out.append({"role": "tool", "content": _text(ev), "tool_call_id": ev.get("tool_call_id"),
                            "name": ev.get("name"), "error": bool(ev.get("error"))})
            else:
                msg: dict[str, Any] = {"role": "assistant", "content": _text(ev)}
                calls = _calls(ev)
                if calls:
                    msg["tool_calls"] = calls
                if ev.get("invalid"):
                    msg["invalid"] = ev["invalid"]
                out.append(msg)
            continue
        if ev["role"] == "tool":
            continue
        content = _text(ev)
        if not content or ev.get("invalid") or content.isspace():
            continue
        if out and out[-1]["role"] == "user":
            out[-1] = {"role": "user", "content": out[-1]["content"] + "\n\n" + content}
        else:
            out.append({"role": "user", "content": content})
    return out


def training_view(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A perspective cut to end with its last assistant turn, without the user simulator's stop marker."""
    return training_view_and_tail(messages)[0]


def training_view_and_tail(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(:func:`training_view` of a perspective, the messages the cut left out): the tail holds the
    results of the last turn's calls, which decide whether they failed and answer all but the last
    of parallel calls."""
    end = len(messages)
    while end and messages[end - 1]["role"] != "assistant":
        end -= 1
    out = messages[:end]
    for i, m in enumerate(out):
        if m["role"] == "user" and STOP in m["content"]:
            out[i] = {**m, "content": m["content"].replace(STOP, "").strip()}
    return out, messages[end:]


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
    _last_world: tuple[dict[str, Any], bytes] | None = field(default=None, repr=False)
    name: str = ""
    """The run directory's name (sample ids and provenance carry it)."""
    scorers_requested: bool = False
    """`scorers` were named by the user (``--scorer``): a stored score file by other scorers is not used."""

    assistant_roles: list[str] = field(default_factory=list, init=False)
    """The roles whose perspectives become samples (kind assistant), in the scenario's order."""
    world_type: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.name = json_text(os.path.basename(os.path.normpath(str(self.path))))
        self.assistant_roles = [role for role, kind in self.kinds.items() if kind == "assistant"]
        self.world_type = self.scenario.world.type

    def tools_for(self, record: dict[str, Any], role: str) -> tuple[list[ToolSpec], list[dict[str, Any]]]:
        """(ToolSpecs, OpenAI tool dicts) `role` had in this episode, from its world instance: a world
        may shape a tool's schema from its parameters (a negotiation's make_offer)."""
        world = record.get("world") or {}
        last = self._last_world
        if last is not None and last[0] is record:  # the record's other roles: its world's key once per record
            wkey = last[1]
        else:
            wkey = orjson.dumps([world.get("type"), world.get("params"), world.get("seed")], option=orjson.OPT_SORT_KEYS)
            self._last_world = (record, wkey)
        names = tuple((record.get("tools") or {}).get(role) or ())
        hit = self._tools.get((wkey, names))
        if hit is None:
            instance = self._worlds.get(wkey)
            try:
                if instance is None:
                    instance = self._worlds[wkey] = world_of({"type": self.scenario.world.type, **world})
                unknown = [n for n in names if n not in instance.tools]
            except (SimworldError, ValueError, TypeError) as exc:  # (pydantic's ValidationError is a ValueError)
                raise DamagedRecord(f"its world cannot be loaded: {one_line(exc)}") from None
            if unknown:
                raise DamagedRecord(f"tools.{role}: {unknown[0]!r} is no tool of world {self.scenario.world.type!r}")
            specs = instance.tool_specs(list(names))
            hit = self._tools[(wkey, names)] = (specs, [t.openai() for t in specs])
        return hit


class Sample:
    """One perspective of one trajectory (or one external conversation), ready to format.

    A trajectory's sample keeps its record and builds :attr:`messages` only when asked: the
    ``llama3`` export renders straight from the record's events (:func:`render_events`) and never
    needs them.
    """

    __slots__ = ("id", "perspective", "_messages", "_tail", "system_prompt", "tools", "tools_openai", "today",
                 "scores", "written_scores", "provenance", "synthetic", "split_key", "world", "success", "record",
                 "rendered")

    def __init__(self, id: str, perspective: str, messages: list[dict[str, Any]] | None, tools: list[Any],
                 tools_openai: list[dict[str, Any]], today: dt.date, scores: dict[str, Any],
                 provenance: dict[str, Any], synthetic: bool = True, split_key: str = "", world: str = "",
                 success: bool = True, record: dict[str, Any] | None = None, system_prompt: str | None = None,
                 written_scores: dict[str, Any] | None = None) -> None:
        self.id = id
        self.perspective = perspective
        self._messages = messages
        """system/user/assistant/tool dicts; assistant ``tool_calls`` hold ``{"id", "name", "arguments"}``."""
        self._tail: list[dict[str, Any]] = []
        if system_prompt is None and messages and messages[0]["role"] == "system":
            system_prompt = messages[0]["content"]
        self.system_prompt = system_prompt or ""
        self.tools = tools
        """ToolSpecs (or OpenAI-shaped tool dicts for external data)."""
        self.tools_openai = tools_openai
        self.today = today
        self.scores = scores
        """Each scorer's value, ``value`` and ``passed`` (:func:`compact_scores`): what filters and the card read."""
        self.written_scores = written_scores if written_scores is not None else scores_written(scores)
        """`scores` as a line holds them (:func:`scores_written`)."""
        self.provenance = provenance
        """Where the sample came from, as written (:func:`provenance_of`)."""
        self.synthetic = synthetic
        self.split_key = split_key
        self.world = world
        self.success = success
        self.record = record
        self.rendered: RoleRender | None = None
        """The one-pass render of this role's events, when the llama3 export made it."""

    @property
    def messages(self) -> list[dict[str, Any]]:
        if self._messages is None:
            assert self.record is not None
            self._messages, self._tail = training_view_and_tail(perspective_dicts(
                self.record.get("events") or [], self.perspective, self.system_prompt or None))
        return self._messages

    @property
    def tail(self) -> list[dict[str, Any]]:
        """What followed :attr:`messages` in the role's view (the results of its last turn's calls,
        what others said after it); see :func:`training_view_and_tail`."""
        self.messages  # noqa: B018
        return self._tail

    def detach(self) -> None:
        """Build the messages and drop the record (a sample held in memory for later)."""
        self.messages  # noqa: B018
        self.record = None

    def __repr__(self) -> str:
        return f"Sample(id={self.id!r}, perspective={self.perspective!r})"


_H_USER, _H_ASSISTANT, _H_TOOL = HEADERS["user"], HEADERS["assistant"], HEADERS["tool"]


class RoleRender(NamedTuple):
    """One role's training view of a trajectory, rendered in one pass over its events
    (:func:`render_events`): what the llama3 line, the dataset card and deduplication need."""

    conversation: list[dict[str, Any]]
    """The normalized messages after the system message (``conversation_messages`` of the view)."""
    text: str
    """The Llama 3 text of `conversation` (no ``<|begin_of_text|>``, no system message)."""
    spans: list[list[int]]
    """Loss spans, shifted by the offset :func:`render_events` was given."""
    turns: int
    """Assistant turns in `conversation` (a turn with parallel calls is one per call, as written)."""
    calls: int
    """Tool calls made in the view."""
    sequence: list[str]
    """The tools called, in order, leaving out calls whose result was an error when any was."""
    dedup_text: str
    """What near-duplicate detection compares (:func:`simworld.export.curation.dedup_text`)."""


def render_events(events: list[dict[str, Any]], role: str, offset: int = 0, mask_failed: bool = False) -> RoleRender | None:
    """`role`'s training view of `events` (``training_view(perspective_dicts(...))`` without the
    system message), normalized as :func:`~simworld.llama3.format.conversation_messages` does and
    rendered as Llama 3 text in one pass. None when there is no assistant turn, or in the one case
    left to the general path: the last assistant turn makes parallel calls, another message follows,
    and a result of this role comes after that. A turn the environment rejected, or one with no
    text and no call, is marked ``invalid`` (:func:`~simworld.llama3.format.invalid_reason`) and left
    out of the spans; with `mask_failed`, so is a turn whose call got an error result, as
    ``conversation_messages`` does. Equal to the general path (a test compares them over every scenario)."""
    h_user, h_assistant, eot, eom, isspace = _H_USER, _H_ASSISTANT, EOT, EOM, str.isspace
    conv: list[dict[str, Any]] = []
    pieces: list[str] = []
    spans: list[Any] = []  # the piece number of each turn in the loss mask, made character spans at the end
    parts: list[str] = []  # what deduplication compares, in the order of the view's messages
    errors: list[tuple[int, Any, bool]] = []  # (position in parts, call id, error) of each result
    names: list[tuple[str, Any]] = []
    call_turns: list[tuple[int, int, Any]] = []  # (message number, span number, call id) of each call turn
    pending: str | None = None  # other speakers' text, merged into one user message
    group: tuple[str, list[dict[str, Any]], list[dict[str, Any]], Any] | None = None  # parallel calls, results, invalid
    grouped = False  # results still join the group
    group_end = 0
    cut = None
    turns = 0
    any_error = False  # a result of this role was an error
    for ev in events:
        audience = ev.get("audience")
        if audience is not None and audience != role:
            continue
        if ev.get("speaker") != role:
            if ev["role"] == "tool":
                continue
            content = ev.get("content", "")
            if type(content) is not str:
                raise MalformedEvent("content is not a string")
            # (another role's rejected move, or blank text, is not in this role's view)
            if content and not ev.get("invalid") and not isspace(content):
                grouped = False  # a message between the results ends them
                pending = content if pending is None else pending + "\n\n" + content
            continue
        if group is not None and (not grouped or ev["role"] != "tool"):
            # A later turn of this role: the results are in the view, each after its call.
            _close_group(group, conv, pieces, spans, call_turns)
            group = None
        if pending is not None:
            if STOP in pending:
                pending = pending.replace(STOP, "").strip()
            conv.append({"role": "user", "content": pending})
            pieces += (h_user, pending, eot)
            parts.append(pending)
            pending = None
        content = ev.get("content", "")
        if type(content) is not str:
            raise MalformedEvent("content is not a string")
        if ev["role"] == "tool":
            call_id = ev.get("tool_call_id")
            name = ev.get("name")
            item = {"role": "tool", "content": content, "tool_call_id": call_id}
            if name:
                item["name"] = name
            error = bool(ev.get("error"))
            errors.append((len(parts), call_id, error))
            any_error = any_error or error
            parts.append(content)
            if group is not None:  # (grouped: a later message would have closed it)
                group[2].append(item)
            else:
                conv.append(item)
                pieces += (_H_TOOL, content, eot)
            continue
        calls = ev.get("tool_calls")
        if calls and type(calls) is not list:
            raise MalformedEvent("tool_calls is not a list")  # (each call is checked by _call_of)
        parts.append(content)
        turns += 1
        bad = ev.get("invalid")
        if calls and len(calls) > 1:
            turns += len(calls) - 1
            # (a rejected turn's calls were never run: the card does not count them)
            group = (content, [_call_of(c, [] if bad else names, parts) for c in calls], [], bad)
            grouped, group_end = True, len(parts)
            cut = None  # decided by what follows
            continue
        pieces.append(h_assistant)
        if calls:
            call = _call_of(calls[0], [] if bad else names, parts)
            body = content + tool_call_json(call["name"], call["arguments"]) + eom
            if bad:  # rejected: its call was never run
                conv.append({"role": "assistant", "content": content, "tool_calls": [call], "invalid": bad})
            else:
                call_turns.append((len(conv), len(spans), call["id"]))
                conv.append({"role": "assistant", "content": content, "tool_calls": [call]})
                spans.append(len(pieces))
        else:
            body = content + eot
            # (isspace: the engine's strip() test of an empty turn, without a copy of the text)
            if bad or not content or isspace(content):
                conv.append({"role": "assistant", "content": content, "invalid": bad or EMPTY_TURN})
            else:
                conv.append({"role": "assistant", "content": content})
                spans.append(len(pieces))
        pieces.append(body)
        cut = (len(conv), len(pieces), len(spans), len(parts), turns, len(names))
    if group is not None:  # the last turn: the view ends with its last call
        _close_group(group, conv, pieces, spans, call_turns, last_turn=True)
        cut = (len(conv), len(pieces), len(spans), group_end, turns, len(names))
    if cut is None:
        return None  # no turn, or results of the last turn came after another message (the general path)
    n_conv, n_pieces, n_spans, n_parts, turns, n_names = cut
    if n_conv < len(conv):
        del conv[n_conv:], pieces[n_pieces:], spans[n_spans:]
    del parts[n_parts:], names[n_names:]
    if any_error:
        last = {call_id: err for _, call_id, err in errors}  # the last result of an id decides, in the view or after
        failed = {call_id for call_id, err in last.items() if err}
        sequence = [name for name, call_id in names if call_id not in failed]
    else:
        failed = set()
        sequence = [name for name, _ in names]
    if mask_failed and failed:
        dropped = set()
        for i, k, call_id in call_turns:
            if i < n_conv and call_id in failed:
                conv[i]["invalid"] = FAILED_CALL
                dropped.add(k)
        spans = [k for j, k in enumerate(spans) if j not in dropped]
    # Spans from piece numbers: a turn's span is its body piece, end token included.
    ends = list(accumulate(map(len, pieces), initial=offset))
    spans = [[ends[k], ends[k + 1]] for k in spans]
    return RoleRender(conv, "".join(pieces), spans, turns, len(names), sequence, "\n".join(parts))


def _call_of(c: dict[str, Any], names: list[tuple[str, Any]], parts: list[str]) -> dict[str, Any]:
    """The normalized call dict of a recorded call, checked as :func:`_calls` checks it (noted for
    the card and deduplication)."""
    if type(c) is not dict:
        raise MalformedEvent(_BAD_CALL)
    name, call_id, args = c.get("name"), c.get("id", ""), c.get("arguments", {})
    if type(name) is not str or type(call_id) is not str or type(args) is not dict:
        raise MalformedEvent(_BAD_CALL)
    names.append((name, c.get("id")))
    parts.append(dedup_call_text(name, args))
    return {"id": call_id, "name": name, "arguments": args}


def dedup_call_text(name: str, arguments: dict[str, Any] | None) -> str:
    """How a call reads in the text near-duplicate detection compares: its name and JSON arguments."""
    return name + " " + orjson.dumps(arguments or {}).decode()


def _close_group(group: tuple[str, list[dict[str, Any]], list[dict[str, Any]], Any], conv: list[dict[str, Any]],
                 pieces: list[str], spans: list[Any], call_turns: list[tuple[int, int, Any]],
                 last_turn: bool = False) -> None:
    """Render an assistant turn with parallel calls as conversation_messages splits it: one turn per
    call (the text with the first), each followed by its result, then results that answer none. The
    view's `last_turn` ends with its last call. A turn the environment rejected (its ``invalid``
    reason, the group's last item) is out of the spans, each of its calls marked with the reason."""
    content, calls, found, bad = group
    results: dict[Any, dict[str, Any]] = {}
    for j, item in enumerate(found):
        results.setdefault(item["tool_call_id"] or f"#{j}", item)  # the first result of an id counts
    ids = {c["id"] for c in calls}
    for k, call in enumerate(calls):
        text = content if k == 0 else ""
        if bad:
            conv.append({"role": "assistant", "content": text, "tool_calls": [call], "invalid": bad})
            pieces.append(_H_ASSISTANT)
        else:
            call_turns.append((len(conv), len(spans), call["id"]))
            conv.append({"role": "assistant", "content": text, "tool_calls": [call]})
            pieces.append(_H_ASSISTANT)
            spans.append(len(pieces))
        pieces.append(text + tool_call_json(call["name"], call["arguments"]) + EOM)
        result = results.get(call["id"])
        if result is not None and not (last_turn and k == len(calls) - 1):
            _put_result(result, conv, pieces)
    if last_turn:
        return
    for result in results.values():
        if result["tool_call_id"] not in ids:
            _put_result(result, conv, pieces)


def _put_result(item: dict[str, Any], conv: list[dict[str, Any]], pieces: list[str]) -> None:
    conv.append(item)
    pieces.append(_H_TOOL)
    pieces.append(item["content"])
    pieces.append(EOT)


def open_run(path: str | Path, requested_scorers: tuple[str, ...] = ()) -> RunInfo:
    """Scenario, role kinds, world class, tool specs and date of a run directory."""
    sc = load_run_scenario(path)
    world_cls = registry.get_world(sc.world.type)
    kinds = {role: spec.kind for role, spec in sc.roles.items()}
    return RunInfo(Path(path), sc, kinds, world_cls, sc.today, scorer_names(sc, requested_scorers),
                   scorers_requested=bool(requested_scorers))


class ScoreLookup:
    """Scores of a run's trajectories: from ``RUN/scores/scores.jsonl`` when `simworld score` wrote
    it (read in step with the records, which come in the same order), else computed here.

    A score file older than one of the run's shards is not used: `run` appended records after it
    was written (more episodes, or failed episodes retried on resume, whose old score lines it
    still holds under the same episode ids). Its scores are computed instead, and :attr:`stale` says so.
    Nor is one written by other scorers than the run's requested ones (:attr:`other_scorers`).
    """

    def __init__(self, run: RunInfo) -> None:
        self.run = run
        self.ctx = ScoringContext(run.scenario)
        self.path = run.path / SCORES_DIR / SCORES_FILE
        self.unreadable: str | None = None
        """Why the score file could not be read (its scores are then computed), or None."""
        self.stale = False
        """The score file is older than the run's trajectories (its scores are then computed)."""
        self.other_scorers: list[str] | None = None
        """The scorers of a score file not used because ``--scorer`` named others, or None."""
        self._fh = None
        self._offsets: dict[str, int] | None = None
        self.computed = 0
        try:
            self._fh = open(self.path, "rb")
        except FileNotFoundError:
            pass
        except OSError as exc:  # a directory, a file it may not read: as if `simworld score` never ran
            self._give_up(exc)
        if self._fh is not None and self._older_than_the_trajectories():
            self.stale = True
            self.close()
            self._fh = None
        if self._fh is not None and run.scorers_requested:
            stored = self._first_line_scorers()
            if stored is not None and stored != sorted(run.scorers):
                self.other_scorers = stored
                self.close()
                self._fh = None

    def _first_line_scorers(self) -> list[str] | None:
        """The scorers of the file's first line (`simworld score` writes every line with the same ones);
        None when it holds no readable line (each line is then checked as usual)."""
        assert self._fh is not None
        try:
            line = _score_line(self._fh.readline())
            self._fh.seek(0)
        except OSError as exc:
            self._give_up(exc)
            return None
        return None if line is None else sorted(line.get("scores", {}))

    def _older_than_the_trajectories(self) -> bool:
        assert self._fh is not None
        scored = os.fstat(self._fh.fileno()).st_mtime_ns
        for shard in shard_paths(self.run.path):
            try:
                if shard.stat().st_mtime_ns > scored:
                    return True
            except OSError:  # gone since: the readers say so
                pass
        return False

    def _give_up(self, exc: OSError) -> None:
        self.unreadable = exc.strerror or str(exc)
        self.close()
        self._fh = None

    def _index(self) -> dict[str, int]:
        offsets: dict[str, int] = {}
        assert self._fh is not None
        self._fh.seek(0)
        pos = 0
        for line in self._fh:
            i = line.find(b'"episode_id":"')
            if i >= 0 and line.endswith(b"\n"):
                try:
                    offsets[line[i + 14:line.find(b'"', i + 14)].decode()] = pos
                except UnicodeDecodeError:  # not a line `simworld score` wrote: its episode's scores are computed
                    pass
            pos += len(line)
        return offsets

    def get(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record's score line; computed when the file has none for it, or a damaged one."""
        if self._fh is not None:
            try:
                stored = self._stored(record["episode_id"])
            except OSError as exc:  # an I/O error mid-file: the rest of the scores are computed
                self._give_up(exc)
                stored = None
            if stored is not None:
                return stored
        traj = parse_record(record)
        if isinstance(traj, str):
            return {"value": 0.0, "passed": False, "scores": {}, "error": traj}
        try:
            line = score_line(traj, self.run.scorers, self.ctx)
        except DamagedRecord as exc:  # its world cannot be loaded from the record (a scorer's bug stops the command)
            return {"value": 0.0, "passed": False, "scores": {}, "error": f"cannot be scored: {one_line(exc)}"}
        self.computed += 1
        return line

    def _stored(self, eid: str) -> dict[str, Any] | None:
        assert self._fh is not None
        stored = None
        if self._offsets is None:
            line = self._fh.readline()
            if line.endswith(b"\n") and line.find(f'"episode_id":"{eid}"'.encode("utf-8", "surrogatepass"), 0, 400) >= 0:
                stored = _score_line(line)
            else:
                self._offsets = self._index()  # out of step (the run grew since): look lines up
        if self._offsets is not None:
            pos = self._offsets.get(eid)
            if pos is not None:
                self._fh.seek(pos)
                stored = _score_line(self._fh.readline())
        return stored

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass


def _score_line(raw: bytes) -> dict[str, Any] | None:
    """A stored score line, or None when it is not one (damaged: the scores are computed instead)."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(line, dict) or not isinstance(line.get("value", 0.0), (int, float)):
        return None
    scores = line.get("scores", {})
    if not isinstance(scores, dict):
        return None
    for v in scores.values():
        if not isinstance(v, dict) or not isinstance(v.get("value"), (int, float)):
            return None
    return line


def compact_scores(line: dict[str, Any]) -> dict[str, Any]:
    """What a sample carries: each scorer's value, the mean, and whether all passed."""
    out: dict[str, Any] = {name: s["value"] for name, s in line.get("scores", {}).items()}
    out["value"] = line.get("value", 0.0)
    out["passed"] = bool(line.get("passed", False))
    return out


def canonical_json(value: dict[str, Any] | None) -> str:
    """`value` as JSON text with sorted keys: the same text for the same content ("{}" for none)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode() if value else "{}"


def scores_written(scores: dict[str, Any]) -> dict[str, Any]:
    """A sample's `scores` (:func:`compact_scores`) as its line (or metadata line) holds them:
    ``value`` (a float), ``passed``, and ``scorers``, each scorer's value as JSON text
    (:func:`canonical_json`).

    The same keys and types in every line, whichever scorers a sample's scenario uses, so that a
    file mixing scenarios is one table for Hugging Face `datasets`, which gives every block of a
    file the types of its first: an object keyed by scorer names, or one with a ``null`` for a
    scorer a sample's run does not use, fails once a later block holds a name (or a number) the
    first block did not. A sample with no scores (an external, ``--mix``, conversation: no
    scorer judged it) has :data:`UNSCORED`."""
    if not scores:
        return dict(UNSCORED)
    return {"value": float(scores.get("value", 0.0)), "passed": bool(scores.get("passed", False)),
            "scorers": canonical_json({k: v for k, v in scores.items() if k != "value" and k != "passed"})}


UNSCORED: dict[str, Any] = {"value": -1.0, "passed": False, "scorers": "{}"}
"""The written `scores` of a sample no scorer judged (an external conversation): the keys and types
of :func:`scores_written`'s, a ``value`` outside a score's [0, 1] (any score threshold leaves it
out), not ``passed``, no scorer."""

EXTERNAL_PROVENANCE: dict[str, Any] = {
    "run": "", "scenario": "", "scenario_hash": "", "episode_id": "", "seed": -1, "episode_index": -1,
    "variation": "{}", "task_type": "", "instance_id": "", "agents": "{}", "models": "{}", "simworld_version": "",
    "parent": "", "fork_at": -1, "success": False, "source": "", "line": -1, "synthetic": False, "perspective": ""}
"""The provenance of an external conversation (``--mix``) before :func:`external_provenance` fills
in its file, line and perspective: :func:`provenance_of`'s keys, in its order, each with a value of
its column's type that says "does not apply" (``""``, -1, ``"{}"`` for the JSON-text maps), never a
``null``; ``success`` is False (no episode ran, no goal was checked), and ``synthetic`` False says
why."""


def external_provenance(source: str, line: int, perspective: str = "assistant") -> dict[str, Any]:
    """The provenance of the external conversation on line `line` of the file `source`
    (:data:`EXTERNAL_PROVENANCE`)."""
    return {**EXTERNAL_PROVENANCE, "source": source, "line": line, "perspective": perspective}


def provenance_of(run: RunInfo, record: dict[str, Any]) -> dict[str, Any]:
    """Where a trajectory's samples come from, as their lines hold it (each sample adds its
    ``perspective``): the same keys with the same types in every line, external conversations'
    (:data:`EXTERNAL_PROVENANCE`) included (see :func:`scores_written` for why). The maps whose
    keys depend on the scenario (``variation``: dotted paths; ``agents`` and ``models``: role
    names) are JSON text (:func:`canonical_json`); an episode that is no fork has ``parent`` ``""``
    and ``fork_at`` -1 (a ``null`` would type the column as null in a block that holds no fork, and
    a fork in a later block could not be loaded). ``source`` (the external file) and ``line`` (its
    line) are ``""`` and -1: a trajectory comes from no external file."""
    prov = record.get("provenance") or {}
    task = record.get("task") or {}
    parent, fork_at = prov.get("parent"), prov.get("fork_at")
    variation, models = record.get("variation"), prov.get("models")
    agents = prov.get("agent_ids") or {r: a.get("type") for r, a in (record.get("agents") or {}).items()}
    return {
        "run": run.name,
        "scenario": record.get("scenario"),
        "scenario_hash": record.get("scenario_hash"),
        "episode_id": record.get("episode_id"),
        "seed": record.get("seed"),
        "episode_index": record.get("episode_index", 0),
        "variation": canonical_json(variation),
        "task_type": task.get("type"),
        "instance_id": task.get("instance_id"),
        "agents": canonical_json(agents),
        "models": canonical_json(models),
        "simworld_version": prov.get("simworld_version"),
        "parent": "" if parent is None else parent,
        "fork_at": -1 if fork_at is None else fork_at,
        "success": bool((record.get("outcome") or {}).get("success")),
        "source": "",
        "line": -1,
        "synthetic": bool(prov.get("synthetic", True)),
    }


def samples_of(run: RunInfo, record: dict[str, Any], scores: dict[str, Any]) -> list[Sample]:
    """One sample per assistant-kind role that took at least one turn; ids are ``RUN/EPISODE/ROLE``
    (RUN: the run directory's name), unique across the runs of one export. `scores`: the record's
    :func:`compact_scores`."""
    events = record.get("events") or []
    roles = [role for role in run.assistant_roles if _speaks(events, role)]
    if not roles:
        return []
    system = record.get("system") or {}
    prov = provenance_of(run, record)
    written_scores = scores_written(scores)  # (once per record: its perspectives share it)
    task = record.get("task") or {}
    world = record.get("world") or {}
    # The task itself, whichever scenario ran it: scenarios over one world (retail's mixed and its
    # single-task scenarios) sample the same task instances, which must land on the same side.
    split_key = f"{world.get('type')}\x00{world.get('fingerprint')}\x00{task.get('type')}\x00{task.get('instance_id')}"
    out = []
    for role in roles:
        tools, tools_openai = run.tools_for(record, role)
        if out:
            prov = prov.copy()  # (each sample its own provenance, the perspective last)
        prov["perspective"] = role
        out.append(Sample(f"{prov['run']}/{record['episode_id']}/{role}", role, None, tools, tools_openai, run.today,
                          scores, prov, prov["synthetic"], split_key, run.world_type, prov["success"], record,
                          system.get(role) or "", written_scores))
    return out


def sample_count(run: RunInfo, record: dict[str, Any]) -> int:
    """How many samples :func:`samples_of` makes of `record` (what a filter that leaves it out removes)."""
    events = record.get("events") or []
    return sum(1 for role in run.assistant_roles if _speaks(events, role))


def distinct_run_names(paths: Sequence[Path]) -> list[str]:
    """A name per run directory for sample ids and provenance: its own name, or, where two runs
    share one, the shortest ending of their paths that tells them apart (``oracle/run``,
    ``noisy/run``); bytes of a name that are not UTF-8 as ``\\xNN`` (:func:`json_text`). The paths
    must be distinct."""
    parts = [Path(os.path.abspath(p)).parts for p in paths]
    names = [p[-1] for p in parts]
    for name in set(names):
        clash = [i for i, n in enumerate(names) if n == name]
        if len(clash) < 2:
            continue
        depth, deepest = 2, max(len(parts[i]) for i in clash)
        while depth < deepest and len({parts[i][-depth:] for i in clash}) < len(clash):
            depth += 1
        for i in clash:
            names[i] = "/".join(parts[i][-depth:]).lstrip("/")
    return [json_text(name) for name in names]


def _speaks(events: list[dict[str, Any]], role: str) -> bool:
    """Whether `role`'s training view has an assistant turn: an event of its own that is not a tool
    result and that it can see."""
    for ev in events:
        if ev.get("speaker") == role and ev["role"] != "tool":
            audience = ev.get("audience")
            if audience is None or audience == role:
                return True
    return False
