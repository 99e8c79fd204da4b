"""Print trajectories as a person reads them (`simworld show`).

Each role gets a colour; tool calls show their arguments, tool results are truncated sensibly (long
JSON keeps its head and says how much was cut); world notices and invalid moves are marked; the
outcome (state diff, missing outputs, metrics) and the scores close the episode. With a
perspective and ``llama3``, the exact training text that perspective's sample becomes.

Record content is shown, never obeyed: every string from a record reaches rich as plain `Text`
(no markup, no emoji codes) with its control characters and bidi controls written out visibly.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from pydantic_core import to_jsonable_python
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from simworld import registry
from simworld.errors import ScenarioError, SimworldError, suggest
from simworld.export.source import RunInfo, ScoreLookup, compact_scores, open_run, perspective_dicts, training_view
from simworld.replay import RECORD_ERRORS, record_problem
from simworld.runio import SCENARIO_FILE, run_plugins
from simworld.scenario import Scenario, read_yaml

ROLE_COLOURS = ("cyan", "green", "magenta", "yellow", "blue", "red")
MAX_RESULT_CHARS = 600

# A terminal obeys these (ESC starts escape sequences, C1 0x9b is CSI, 0x85 a line break, \r and
# \b overwrite, bidi controls reorder what follows) and rich drops some of them silently.
_CONTROLS = [c for c in range(0x20) if chr(c) not in "\n\t"] + list(range(0x7F, 0xA0))
_BIDI_CONTROLS = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_VISIBLE = str.maketrans({c: f"\\x{c:02x}" for c in _CONTROLS} | {c: f"\\u{c:04x}" for c in _BIDI_CONTROLS})
_VISIBLE_IN_JSON = str.maketrans({c: f"\\u{c:04x}" for c in _CONTROLS + _BIDI_CONTROLS})


def visible(text: str) -> str:
    """`text` with control characters (but newline and tab) and bidi controls written out as
    ``\\x1b``, ``\\u202e``: a terminal shows them instead of acting on them."""
    return text.translate(_VISIBLE)


def visible_json(text: str) -> str:
    """Serialized JSON safe for a terminal, still valid JSON of the same value: control and bidi
    characters (raw inside strings, where JSON allows them) become ``\\u`` escapes."""
    return text.translate(_VISIBLE_IN_JSON)


def _plain(value: Any) -> str:
    return visible(str(value))


def truncate(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    """`text` cut to about `limit` characters, saying how much was left out."""
    if limit <= 0 or len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit)
    cut = cut if cut > limit // 2 else limit
    return text[:cut] + f" … [{len(text) - cut:,} more characters]"


def select_records(records: Iterator[dict[str, Any]], episodes: tuple[str, ...] = (), failed: bool = False,
                   sample: int | None = None, seed: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
    """The records to show: by id, the failed ones, or a reproducible random sample (reservoir)."""
    if episodes:
        wanted = set(episodes)
        found = {r["episode_id"]: r for r in records if r.get("episode_id") in wanted}
        missing = [e for e in episodes if e not in found]
        if missing:
            raise SimworldError(f"no episode {missing[0]!r} in the run")
        return [found[e] for e in episodes]
    if failed:
        # (`simworld show` skips records of the wrong shape before; any other counts as failed here.)
        records = (r for r in records if not (isinstance(r.get("outcome"), dict) and r["outcome"].get("success")))
    if sample is not None:
        rng = random.Random(seed)
        reservoir: list[dict[str, Any]] = []
        for i, r in enumerate(records):
            if i < sample:
                reservoir.append(r)
            else:
                j = rng.randint(0, i)
                if j < sample:
                    reservoir[j] = r
        return reservoir
    out = []
    for r in records:
        out.append(r)
        if limit is not None and len(out) >= limit:
            break
    return out


def _colours(run: RunInfo) -> dict[str, str]:
    return {role: ROLE_COLOURS[i % len(ROLE_COLOURS)] for i, role in enumerate(run.scenario.roles)}


def _call_text(call: dict[str, Any], max_chars: int) -> str:
    args = truncate(orjson.dumps(call.get("arguments") or {}).decode(), max_chars)
    return f"→ {_plain(call['name'])}({visible(args)})"


def _content(value: Any, max_chars: int) -> str:
    return visible(truncate(str(value or ""), max_chars))


def event_lines(record: dict[str, Any], run: RunInfo, max_result: int = MAX_RESULT_CHARS) -> list[Text]:
    """One Text per event of the global log; message content, call arguments, tool results and
    notices are each truncated to about `max_result` characters (0: never)."""
    colours = _colours(run)
    lines: list[Text] = []
    for i, ev in enumerate(record.get("events") or []):
        speaker = ev.get("speaker") or ev.get("role", "?")
        colour = colours.get(speaker, "white")
        t = Text()
        t.append(f"{i:>3} ", style="dim")
        if ev["role"] == "tool":
            style = "red" if ev.get("error") else "dim " + colour
            t.append(f"    ⤷ {_plain(ev.get('name') or 'tool')} → {_plain(speaker)}: ", style="bold " + style)
            t.append(_content(ev.get("content"), max_result), style=style)
        elif speaker == "world":
            t.append(f"[world → {_plain(ev.get('audience') or 'all')}] ", style="bold dim")
            t.append(_content(ev.get("content"), max_result), style="dim italic")
        else:
            t.append(_plain(speaker), style=f"bold {colour}")
            kind = run.kinds.get(speaker, ev["role"])
            t.append(f" ({_plain(kind)})", style="dim")
            t.append(": ")
            if ev.get("invalid"):
                t.append("INVALID ", style="bold red")
                t.append(f"({_content(ev['invalid'], max_result)}) ", style="red")
            if ev.get("content"):
                t.append(_content(ev["content"], max_result), style=colour)
            for call in ev.get("tool_calls") or []:
                t.append("\n      " + _call_text(call, max_result), style="bold " + colour)
        lines.append(t)
    return lines


def header(record: dict[str, Any]) -> Text:
    task = record.get("task") or {}
    prov = record.get("provenance") or {}
    t = Text()
    t.append(_plain(record.get("episode_id")), style="bold")
    t.append(f"  scenario {_plain(record.get('scenario'))}  seed {_plain(record.get('seed'))}\n", style="dim")
    t.append(f"task {_plain(task.get('type'))} ({_plain(task.get('instance_id'))})", style="bold")
    if task.get("goal"):
        t.append("  goal " + visible(truncate(orjson.dumps(task["goal"]).decode(), 300)))
    agents = prov.get("agent_ids") or {r: a.get("type") for r, a in (record.get("agents") or {}).items()}
    t.append("\nagents " + _plain(", ".join(f"{r}={a}" for r, a in agents.items())), style="dim")
    if record.get("variation"):
        t.append("\nvariation " + visible(truncate(orjson.dumps(record["variation"]).decode(), 300)), style="dim")
    if prov.get("parent"):
        t.append(f"\nforked from {_plain(prov['parent'])} at event {_plain(prov.get('fork_at'))}", style="dim")
    return t


def outcome_text(record: dict[str, Any], scores: dict[str, Any] | None,
                 max_chars: int = MAX_RESULT_CHARS) -> Text:
    o = record.get("outcome") or {}
    t = Text()
    ok = o.get("success")
    t.append("SUCCESS" if ok else "FAILURE", style="bold green" if ok else "bold red")
    t.append(f"  termination {_plain(o.get('termination'))}")
    if o.get("state_match") is not None:
        t.append(f"  state {'matches' if o['state_match'] else 'differs'}",
                 style="green" if o["state_match"] else "red")
    if o.get("error"):
        t.append(f"\nerror: {_content(o['error'], max_chars)}", style="red")
    for d in (o.get("diff") or [])[:10]:
        line = f"{d['table']}[{d['row']}].{d['field']}: expected {d['expected']!r}, got {d['actual']!r}"
        t.append(f"\n  {_content(line, max_chars)}", style="red")
    if o.get("missing_outputs"):
        t.append(f"\nmissing outputs: {_content(', '.join(map(str, o['missing_outputs'])), max_chars)}", style="red")
    t.append(f"\ninvalid moves {_plain(o.get('invalid_moves', 0))}, tool errors {_plain(o.get('tool_errors', 0))}",
             style="dim")
    if o.get("metrics"):
        t.append("\nmetrics " + visible(truncate(orjson.dumps(o["metrics"]).decode(), 400)), style="dim")
    if scores is None:
        t.append("\nscores unavailable: not stored by simworld score, and not computable without the run's plugin",
                 style="dim")
    elif scores:
        t.append("\nscores ")
        t.append(_plain(", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items())))
    return t


def show_record(console: Console, record: dict[str, Any], run: RunInfo, scores: dict[str, Any] | None,
                max_result: int = MAX_RESULT_CHARS) -> None:
    """Print one trajectory: header, every event, outcome and scores."""
    body = Group(header(record), Text(""), *event_lines(record, run, max_result), Text(""),
                 outcome_text(record, scores, max_result))
    console.print(Panel(body, expand=True))


def perspective_text(record: dict[str, Any], run: RunInfo, role: str, fmt: str, scores: dict[str, Any]) -> str:
    """The sample `role`'s perspective becomes (``llama3`` text) or its messages (``messages``)."""
    if role not in run.scenario.roles:
        raise SimworldError(f"unknown role {role!r}{suggest(role, run.scenario.roles)}")
    if run.kinds[role] != "assistant":
        raise SimworldError(f"role {role!r} is of kind user: only assistant-side roles become training samples")
    from simworld.export.source import samples_of

    sample = next((s for s in samples_of(run, record, scores) if s.perspective == role), None)
    if sample is None:
        raise SimworldError(f"{_plain(record['episode_id'])}: {role} never acted; no sample")
    if fmt == "llama3":
        from simworld.export.formats import llama3_line

        return llama3_line(sample)["text"]
    msgs = training_view(perspective_dicts(record.get("events") or [], role, (record.get("system") or {}).get(role)))
    return orjson.dumps(msgs, option=orjson.OPT_INDENT_2).decode()


def listing(console: Console, records: list[dict[str, Any]], lookup: ScoreLookup | None,
            scorable: bool = True) -> list[str]:
    """Print the records as a table (a score unavailable here as "-", see :func:`record_scores`);
    returns one line per record too damaged to list (its id and why)."""
    table = Table(title="episodes", title_justify="left")
    for col in ("episode", "task", "outcome", "termination", "events", "score"):
        # Folded, never cut short with an ellipsis: an id is what --episode takes.
        table.add_column(col, justify="right" if col in ("events", "score") else "left", overflow="fold")
    damaged = []
    for r in records:
        try:
            o = r.get("outcome") or {}
            scores = record_scores(lookup, r, scorable) if lookup else None
            score = None if scores is None else scores["value"]
            row = (Text(_plain(r.get("episode_id", "?"))), Text(_plain((r.get("task") or {}).get("type", "?"))),
                   Text("success", style="green") if o.get("success") else Text("failure", style="red"),
                   Text(_plain(o.get("termination", ""))), str(len(r.get("events") or [])),
                   "-" if score is None else f"{score:.2f}")
        except RECORD_ERRORS as exc:
            damaged.append(f"episode {_plain(r.get('episode_id', '?'))}: {record_problem(r, exc)}")
            continue
        table.add_row(*row)
    console.print(table)
    return damaged


# ----------------------------------------------------------------------------------------------
# A run made with a plugin that is not loaded here


class ShownRun(NamedTuple):
    """A run as `simworld show` reads it."""

    info: RunInfo
    missing: str
    """What the run's scenario names that is not registered here, with its verb (``world 'bank' and
    agent 'teller' are``); "" when everything is registered."""
    load_hint: str
    """How to load what is missing: the plugins the run's manifest records, or where plugins come from."""
    scorable: bool
    """Its scores can be computed here (its world and scorers are registered); else only those
    `simworld score` stored are shown."""
    world_known: bool

    @property
    def note(self) -> str:
        """One line for a run made with a plugin that is not loaded here ("" for any other run)."""
        if not self.missing:
            return ""
        scores = "" if self.scorable else ", scores only where `simworld score` stored them"
        return visible(f"{self.info.path}: {self.missing} not registered here (the run was made with a plugin): "
                       f"shown from its records{scores}; {self.load_hint}")


def open_shown_run(path: str) -> ShownRun:
    """The run directory `path` for `simworld show`, which only reads trajectories: a run made with a
    plugin that is not loaded here (its world, task, agents or scorers unknown) is still shown, with
    :attr:`ShownRun.note`. Anything else wrong with the run's scenario raises as :func:`open_run` does."""
    try:
        return ShownRun(open_run(path), "", "", True, True)
    except ScenarioError:
        sc = _scenario_as_written(path)
        missing = _unregistered(sc) if sc is not None else ""
        if not missing:
            raise
    world_known = sc.world.type in registry.WORLDS
    scorable = world_known and all(name in registry.SCORERS for name in sc.scoring)
    kinds = {role: spec.kind for role, spec in sc.roles.items()}
    if scorable:
        from simworld.scoring.report import scorer_names

        scorers = scorer_names(sc)
    else:
        scorers = []  # (nothing is computed: only stored scores are shown)
    info = RunInfo(Path(path), sc, kinds, registry.WORLDS.get(sc.world.type), sc.today, scorers)
    plugins = plugins_text(run_plugins(path))
    load = (f"its manifest records the plugins {plugins}" if plugins else
            f"load the plugin that registers them ({registry.PLUGINS_ENV} or a {registry.PLUGINS_ENTRY_POINTS} "
            "entry point)")
    return ShownRun(info, missing, load, scorable, world_known)


def _scenario_as_written(path: str) -> Scenario | None:
    """The run's scenario.yaml checked for its shape only, not against the registries; None when it
    has not the shape of a scenario either."""
    try:
        data, _ = read_yaml((Path(path) / SCENARIO_FILE).read_text(encoding="utf-8"), SCENARIO_FILE)
        return Scenario.model_validate(to_jsonable_python(data))
    except (OSError, UnicodeDecodeError, SimworldError, ValueError):  # (a ValidationError is a ValueError)
        return None


def _unregistered(sc: Scenario) -> str:
    """What the scenario names that no registered world, task, agent or scorer is, with its verb:
    ``"world 'bank' and agents 'teller' and 'client' are"``; "" for nothing."""
    registry.load_builtins()
    world, tasks = sc.world.type, registry.TASKS.get(sc.world.type, {})
    by_kind = {
        "world": [world] if world not in registry.WORLDS else [],
        "task": [sc.task.type] if world in registry.WORLDS and sc.task.type not in tasks else [],
        "agent": list(dict.fromkeys(r.agent.type for r in sc.roles.values() if r.agent.type not in registry.AGENTS)),
        "scorer": list(dict.fromkeys(n for n in sc.scoring if n not in registry.SCORERS)),
    }
    parts = [f"{kind}{'s' if len(names) > 1 else ''} {_and([repr(n) for n in names])}"
             for kind, names in by_kind.items() if names]
    if not parts:
        return ""
    return f"{_and(parts)} {'is' if sum(map(len, by_kind.values())) == 1 else 'are'}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def plugins_text(plugins: list[dict[str, str]]) -> str:
    """The plugins a run's manifest records, as a person sets them up again:
    ``SIMWORLD_PLUGINS=my_bank, entry point bank = my_bank (my-bank 0.2)``."""
    modules = [p["module"] for p in plugins if p.get("source") == registry.PLUGINS_ENV]
    out = [f"{registry.PLUGINS_ENV}={','.join(modules)}"] if modules else []
    for p in plugins:
        if "entry_point" in p:
            package = " ".join(p[k] for k in ("package", "version") if p.get(k))
            out.append(f"entry point {p['entry_point']} = {p['module']}{f' ({package})' if package else ''}")
    return ", ".join(out)


def record_scores(lookup: ScoreLookup, record: dict[str, Any], scorable: bool = True) -> dict[str, Any] | None:
    """The record's scores as a sample carries them (:func:`compact_scores`); None when they are
    unavailable: not stored by `simworld score` and not `scorable` here."""
    computed = lookup.computed
    line = lookup.get(record)
    if not scorable and lookup.computed > computed:
        return None
    return compact_scores(line)
