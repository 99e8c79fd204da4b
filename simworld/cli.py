"""The `simworld` command line. Subcommands load lazily so `simworld --help` stays fast.

Each subcommand is a click command named `command` in `simworld/commands/<name>.py`; add a new
one by adding its module to COMMANDS. User errors (SimworldError) print one line and exit 2.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

COMMANDS = {
    "run": ("simworld.commands.run", "Run episodes of a scenario and write verified trajectories."),
    "validate": ("simworld.commands.validate", "Validate scenario files (every problem, with YAML line)."),
    "schema": ("simworld.commands.schema", "Print the JSON Schema of the scenario format."),
    "list": ("simworld.commands.listing", "List worlds, tasks, tools, agents, scorers and scenarios."),
    "show": ("simworld.commands.show", "Print trajectories of a run as a person reads them."),
    "replay": ("simworld.commands.replay", "Re-execute recorded episodes and verify every result."),
    "score": ("simworld.commands.score", "Score stored trajectories and print a table."),
    "export": ("simworld.commands.export", "Export trajectories as training data."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _) in COMMANDS.items() if importlib.util.find_spec(module) is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        entry = COMMANDS.get(name)
        if entry is None:
            return None
        try:
            module = importlib.import_module(entry[0])
        except ModuleNotFoundError as exc:
            if exc.name == entry[0]:
                return None
            raise
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="simworld")
def cli() -> None:
    """simworld: simulate tool-use and negotiation episodes, verify them, export training data."""


def main(argv: list[str] | None = None) -> Any:
    from simworld import interrupts
    from simworld.errors import ScenarioError, SimworldError

    # Ctrl-C and SIGTERM (kill, timeout, a CI job's end) stop a command alike: what it was writing is
    # cleaned up and what it wrote before stays. Neither lands inside an import.
    interrupts.install()
    try:
        return cli.main(args=argv, prog_name="simworld", standalone_mode=False)
    except click.exceptions.Abort:  # (click's form of a KeyboardInterrupt)
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        # One line, like every other user error, with where to look for the right usage.
        command = exc.ctx.command_path if exc.ctx is not None else "simworld"
        click.echo(f"error: {exc.format_message()} (see '{command} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except ScenarioError as exc:
        for problem in exc.problems:
            click.echo(f"error: {exc.source + ': ' if exc.source else ''}{problem}", err=True)
        sys.exit(exc.exit_code)
    except SimworldError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()
