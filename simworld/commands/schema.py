"""`simworld schema`: the JSON Schema of the scenario format (for editors and linters)."""

from __future__ import annotations

import json

import click


@click.command("schema")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True, path_type=str), default=None,
              help="Write to this file instead of standard output.")
@click.option("--strict", is_flag=True, help="List the registered world, task, tool, agent and scorer names as "
              "an enum, so that an editor flags any other name (default: it suggests them and accepts others).")
def command(output: str | None, strict: bool) -> None:
    """Print the JSON Schema of scenario YAML files.

    Point an editor at it (e.g. `# yaml-language-server: $schema=scenario.schema.json`) to get
    completion and checking of scenario files as you type. The world, task, tool, agent and
    scorer names registered now (plugins of $SIMWORLD_PLUGINS included) are offered for
    completion, and the parameters of each world, task and agent under world.params,
    task.params and roles.*.agent; with --strict any other name is marked as an error.
    """
    from simworld.errors import SimworldError
    from simworld.scenario import json_schema

    text = json.dumps(json_schema(strict), indent=2, sort_keys=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise SimworldError(f"cannot write {output}: {exc.strerror or exc}") from None
