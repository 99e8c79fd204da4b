"""`simworld list`: the registered worlds, tasks, tools, agents and scorers, and scenario files."""

from __future__ import annotations

from pathlib import Path

import click

from simworld.docs_text import clip, doc_summary, summary

SECTIONS = ("worlds", "tasks", "tools", "agents", "scorers", "scenarios")
DOC_WIDTH = 72  # a name's description: the first paragraph of its own docstring, clipped to one line


def scenario_dirs() -> list[Path]:
    """Where scenario files are looked for: ./scenarios, then the source tree of the installed package."""
    import simworld

    candidates = [Path.cwd() / "scenarios", Path(simworld.__file__).resolve().parent.parent / "scenarios"]
    out: list[Path] = []
    for d in candidates:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def find_scenarios() -> list[Path]:
    seen: set[Path] = set()
    out: list[Path] = []
    for d in scenario_dirs():
        for f in sorted(d.rglob("*")):
            if f.suffix in (".yaml", ".yml") and f.is_file() and f.resolve() not in seen:
                seen.add(f.resolve())
                out.append(f)
    return out


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _rows(rows: list[tuple[str, ...]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [("  " + "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1]).rstrip() for r in rows]


def section_lines(what: str) -> list[str]:
    from simworld import registry
    from simworld.errors import counted

    if what == "worlds":
        rows = []
        for name, cls in sorted(registry.WORLDS.items()):
            sizes = f"{counted(len(cls.tools), 'tool')}, {counted(len(registry.TASKS.get(name, {})), 'task')}"
            rows.append((name, sizes, doc_summary(cls, DOC_WIDTH)))
        return _rows(rows)
    if what == "tasks":
        return _rows([(f"{world}/{name}", doc_summary(cls, DOC_WIDTH))
                      for world, tasks in sorted(registry.TASKS.items()) for name, cls in sorted(tasks.items())])
    if what == "tools":
        rows = []
        for world, cls in sorted(registry.WORLDS.items()):
            for name, tool in sorted(cls.tools.items()):
                flow = ", ".join(tool.consumes) + " -> " + ", ".join(tool.produces) if (tool.consumes or tool.produces) else ""
                rows.append((f"{world}.{name}", "write" if tool.writes else "read", clip(flow, 40),
                             summary(tool.description, 60)))
        return _rows(rows)
    if what == "agents":
        from simworld.scenario import agent_kinds, agent_worlds

        rows = []
        for name, cls in sorted(registry.AGENTS.items()):
            params = [f for f in cls.Params.model_fields if f != "type"]
            worlds, kinds = agent_worlds(cls), agent_kinds(cls)
            plays = " / ".join(worlds) if worlds else "any world"
            rows.append((name, plays + (", " + " or ".join(kinds) if kinds else ""),
                         clip(("params: " + ", ".join(params)) if params else "", 50), doc_summary(cls, DOC_WIDTH)))
        return _rows(rows)
    if what == "scorers":
        return _rows([(name, doc_summary(fn, DOC_WIDTH)) for name, fn in sorted(registry.SCORERS.items())])
    rows = []
    from simworld.scenario import read_yaml

    for path in find_scenarios():
        try:
            data, _ = read_yaml(path.read_text(encoding="utf-8"), str(path))
        except Exception as exc:  # a broken file is listed, not fatal
            rows.append((_shown(path), "", f"(unreadable: {str(exc).splitlines()[0][:80]})"))
            continue
        if not isinstance(data, dict):
            rows.append((_shown(path), "", "(not a scenario mapping)"))
            continue
        world = data.get("world", {}) if isinstance(data.get("world"), dict) else {}
        task = data.get("task", {}) if isinstance(data.get("task"), dict) else {}
        rows.append((_shown(path), str(data.get("name", "?")),
                     f"{world.get('type', '?')}/{task.get('type', '?')}"))
    return _rows(rows)


@click.command("list")
@click.argument("what", required=False, type=click.Choice(SECTIONS + ("all",)), default="all")
def command(what: str) -> None:
    """List registered worlds, tasks, tools, agents, scorers, and scenario files.

    Scenario files are looked for under ./scenarios and the scenarios/ folder of the simworld
    source tree. Third-party components registered by modules in $SIMWORLD_PLUGINS are listed too.
    """
    from simworld import registry

    registry.load_builtins()
    sections = SECTIONS if what == "all" else (what,)
    for i, name in enumerate(sections):
        if len(sections) > 1:
            click.echo(("\n" if i else "") + name)
        for line in section_lines(name):
            click.echo(line if len(sections) > 1 else line[2:])
