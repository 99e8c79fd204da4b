"""`simworld validate`: check scenario files, listing every problem with its YAML path and line."""

from __future__ import annotations

from pathlib import Path

import click


def scenario_files(paths: tuple[str, ...]) -> list[Path]:
    """The files named, with directories expanded to the .yaml/.yml files under them."""
    out: list[Path] = []
    for name in paths:
        p = Path(name)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
        else:
            out.append(p)
    return out


@click.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE",
              help="Validate with these overrides applied, as `simworld run --set` would.")
def command(files: tuple[str, ...], sets: tuple[str, ...]) -> None:
    """Validate scenario FILES (or directories of them).

    Prints every problem as `FILE: yaml.path (line N): message`, with a suggestion for misspelt
    names, and exits with status 2 if there is any; prints an OK line per valid file otherwise.
    """
    from simworld import registry
    from simworld.errors import ScenarioError, SimworldError, counted
    from simworld.scenario import load_scenario, parse_overrides

    registry.load_builtins()  # a broken plugin is one error for the whole command, not per file
    try:
        overrides = parse_overrides(sets)
    except SimworldError as exc:
        click.echo(f"error: {exc}")
        raise SystemExit(2) from None
    paths = scenario_files(files)
    if not paths:
        click.echo(f"error: no scenario files found in {', '.join(files)}")
        raise SystemExit(2)
    bad = 0
    for path in paths:
        try:
            sc = load_scenario(path, overrides)
        except ScenarioError as exc:
            bad += 1
            for problem in exc.problems:
                click.echo(f"{path}: {problem}")
            continue
        except SimworldError as exc:
            bad += 1
            message = str(exc)
            click.echo(message if message.startswith(str(path)) else f"{path}: {message}")
            continue
        roles = ", ".join(f"{name} ({spec.kind}: {spec.agent.type})" for name, spec in sc.roles.items())
        extra = f", {counted(len(sc.variations), 'variation')}" if sc.variations else ""
        click.echo(f"{path}: OK: {sc.name}: world {sc.world.type}, task {sc.task.type}, roles {roles}{extra}")
    if bad:
        total = len(paths)
        click.echo(f"{bad:,} of {counted(total, 'scenario file')} invalid", err=True)
        raise SystemExit(2)
