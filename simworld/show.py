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
from typing import Any

import orjson
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from simworld.errors import SimworldError, suggest
from simworld.export.source import RunInfo, ScoreLookup, compact_scores, perspective_dicts, training_view
from simworld.replay import RECORD_ERRORS, record_problem

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
    if scores:
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


def listing(console: Console, records: list[dict[str, Any]], lookup: ScoreLookup | None) -> list[str]:
    """Print the records as a table; returns one line per record too damaged to list (its id and why)."""
    table = Table(title="episodes", title_justify="left")
    for col in ("episode", "task", "outcome", "termination", "events", "score"):
        # Folded, never cut short with an ellipsis: an id is what --episode takes.
        table.add_column(col, justify="right" if col in ("events", "score") else "left", overflow="fold")
    damaged = []
    for r in records:
        try:
            o = r.get("outcome") or {}
            score = compact_scores(lookup.get(r))["value"] if lookup else None
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
