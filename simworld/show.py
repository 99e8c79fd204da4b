"""Print trajectories as a person reads them (`simworld show`).

Each role gets a colour; tool calls show their arguments, tool results are truncated sensibly (long
JSON keeps its head and says how much was cut); world notices and invalid moves are marked; the
outcome (state diff, missing outputs, metrics) and the scores close the episode. With a
perspective and ``llama3``, the exact training text that perspective's sample becomes.
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
        # A record of the wrong shape counts as failed: it is shown, and says what is wrong with it.
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


def _call_text(call: dict[str, Any]) -> str:
    args = orjson.dumps(call.get("arguments") or {}).decode()
    return f"→ {call['name']}({args})"


def event_lines(record: dict[str, Any], run: RunInfo, max_result: int = MAX_RESULT_CHARS) -> list[Text]:
    """One Text per event of the global log."""
    colours = _colours(run)
    lines: list[Text] = []
    for i, ev in enumerate(record.get("events") or []):
        speaker = ev.get("speaker") or ev.get("role", "?")
        colour = colours.get(speaker, "white")
        t = Text()
        t.append(f"{i:>3} ", style="dim")
        if ev["role"] == "tool":
            style = "red" if ev.get("error") else "dim " + colour
            t.append(f"    ⤷ {ev.get('name') or 'tool'} → {speaker}: ", style="bold " + style)
            t.append(truncate(ev.get("content", ""), max_result), style=style)
        elif speaker == "world":
            t.append(f"[world → {ev.get('audience') or 'all'}] ", style="bold dim")
            t.append(truncate(ev.get("content", ""), max_result), style="dim italic")
        else:
            t.append(f"{speaker}", style=f"bold {colour}")
            kind = run.kinds.get(speaker, ev["role"])
            t.append(f" ({kind})", style="dim")
            t.append(": ")
            if ev.get("invalid"):
                t.append("INVALID ", style="bold red")
                t.append(f"({ev['invalid']}) ", style="red")
            if ev.get("content"):
                t.append(ev["content"], style=colour)
            for call in ev.get("tool_calls") or []:
                t.append("\n      " + _call_text(call), style="bold " + colour)
        lines.append(t)
    return lines


def header(record: dict[str, Any]) -> Text:
    task = record.get("task") or {}
    prov = record.get("provenance") or {}
    t = Text()
    t.append(f"{record.get('episode_id')}", style="bold")
    t.append(f"  scenario {record.get('scenario')}  seed {record.get('seed')}\n", style="dim")
    t.append(f"task {task.get('type')} ({task.get('instance_id')})", style="bold")
    if task.get("goal"):
        t.append("  goal " + truncate(orjson.dumps(task["goal"]).decode(), 300))
    agents = prov.get("agent_ids") or {r: a.get("type") for r, a in (record.get("agents") or {}).items()}
    t.append("\nagents " + ", ".join(f"{r}={a}" for r, a in agents.items()), style="dim")
    if record.get("variation"):
        t.append("\nvariation " + orjson.dumps(record["variation"]).decode(), style="dim")
    if prov.get("parent"):
        t.append(f"\nforked from {prov['parent']} at event {prov.get('fork_at')}", style="dim")
    return t


def outcome_text(record: dict[str, Any], scores: dict[str, Any] | None) -> Text:
    o = record.get("outcome") or {}
    t = Text()
    ok = o.get("success")
    t.append("SUCCESS" if ok else "FAILURE", style="bold green" if ok else "bold red")
    t.append(f"  termination {o.get('termination')}")
    if o.get("state_match") is not None:
        t.append(f"  state {'matches' if o['state_match'] else 'differs'}",
                 style="green" if o["state_match"] else "red")
    if o.get("error"):
        t.append(f"\nerror: {o['error']}", style="red")
    for d in (o.get("diff") or [])[:10]:
        t.append(f"\n  {d['table']}[{d['row']}].{d['field']}: expected {d['expected']!r}, got {d['actual']!r}",
                 style="red")
    if o.get("missing_outputs"):
        t.append(f"\nmissing outputs: {', '.join(o['missing_outputs'])}", style="red")
    t.append(f"\ninvalid moves {o.get('invalid_moves', 0)}, tool errors {o.get('tool_errors', 0)}", style="dim")
    if o.get("metrics"):
        t.append("\nmetrics " + truncate(orjson.dumps(o["metrics"]).decode(), 400), style="dim")
    if scores:
        t.append("\nscores ")
        t.append(", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items()))
    return t


def show_record(console: Console, record: dict[str, Any], run: RunInfo, scores: dict[str, Any] | None,
                max_result: int = MAX_RESULT_CHARS) -> None:
    """Print one trajectory: header, every event, outcome and scores."""
    body = Group(header(record), Text(""), *event_lines(record, run, max_result), Text(""),
                 outcome_text(record, scores))
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
        raise SimworldError(f"{record['episode_id']}: {role} never acted; no sample")
    if fmt == "llama3":
        from simworld.export.formats import llama3_line

        return llama3_line(sample)["text"]
    msgs = training_view(perspective_dicts(record.get("events") or [], role, (record.get("system") or {}).get(role)))
    return orjson.dumps(msgs, option=orjson.OPT_INDENT_2).decode()


def listing(console: Console, records: list[dict[str, Any]], lookup: ScoreLookup | None) -> list[str]:
    """Print the records as a table; returns one line per record too damaged to list (its id and why)."""
    table = Table(title="episodes", title_justify="left")
    for col in ("episode", "task", "outcome", "termination", "events", "score"):
        table.add_column(col, justify="right" if col in ("events", "score") else "left")
    damaged = []
    for r in records:
        try:
            o = r.get("outcome") or {}
            score = compact_scores(lookup.get(r))["value"] if lookup else None
            row = (str(r.get("episode_id", "?")), str((r.get("task") or {}).get("type", "?")),
                   Text("success", style="green") if o.get("success") else Text("failure", style="red"),
                   str(o.get("termination", "")), str(len(r.get("events") or [])),
                   "-" if score is None else f"{score:.2f}")
        except RECORD_ERRORS as exc:
            damaged.append(f"episode {r.get('episode_id', '?')}: {record_problem(r, exc)}")
            continue
        table.add_row(*row)
    console.print(table)
    return damaged
