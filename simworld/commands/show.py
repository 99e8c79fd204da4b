"""`simworld show`: print trajectories of a run as a person reads them."""

from __future__ import annotations

import sys

import click


@click.command("show")
@click.argument("run", type=click.Path(path_type=str))
@click.option("--episode", "episodes", multiple=True, metavar="ID", help="Show this episode (repeatable).")
@click.option("--failed", is_flag=True, help="Show failed episodes.")
@click.option("--random", "sample", type=click.IntRange(min=1), default=None, metavar="N",
              help="Show N episodes drawn at random (reproducible with --seed).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --random.")
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True,
              help="At most this many episodes (with --failed, or when listing).")
@click.option("--perspective", metavar="ROLE", default=None,
              help="Show what this assistant-side role's training sample is, instead of the global log.")
@click.option("--format", "fmt", type=click.Choice(["pretty", "llama3", "messages"]), default="pretty",
              show_default=True,
              help="With --perspective: llama3 prints the exact training text, messages its messages as JSON. "
                   "Piped or redirected, byte for byte; on a terminal, control characters and bidi "
                   "controls are shown escaped (\\x1b, \\u202e) instead of sent.")
@click.option("--max-result", type=click.IntRange(min=0), default=600, show_default=True,
              help="Truncate message content, tool-call arguments, tool results, notices and outcome errors "
                   "to about this many characters (0: never).")
def command(run: str, episodes: tuple[str, ...], failed: bool, sample: int | None, seed: int, limit: int,
            perspective: str | None, fmt: str, max_result: int) -> None:
    """Print trajectories of RUN: speakers coloured by role, tool calls and results, outcome and scores.

    Without --episode, --failed or --random, lists the run's first episodes. Record content is shown,
    never obeyed: control characters in it are printed escaped (\\x1b), [markup] and :emoji: as written.
    Records that are not valid trajectories, and shard lines that hold none, are skipped and named
    on stderr (exit status 1), as `simworld score` names them.
    """
    from rich.console import Console
    from rich.text import Text

    from simworld.errors import SimworldError
    from simworld.export.pipeline import skipped_lines, trajectory_record
    from simworld.export.source import ScoreLookup
    from simworld.replay import RECORD_ERRORS, record_problem
    from simworld.runio import iter_records
    from simworld.show import (listing, open_shown_run, perspective_text, record_scores, select_records, show_record,
                               visible, visible_json)

    if sum(bool(x) for x in (episodes, failed, sample)) > 1:
        raise SimworldError("use one of --episode, --failed and --random")
    if fmt != "pretty" and perspective is None:
        raise SimworldError(f"--format {fmt} needs --perspective ROLE")
    shown = open_shown_run(run)
    info, scorable = shown.info, shown.scorable
    if perspective is not None and not shown.world_known:
        raise SimworldError(visible(f"--perspective needs the tools of world {info.scenario.world.type!r}, which is "
                                    f"not registered here; {shown.load_hint}"))
    if shown.note:
        click.echo(f"note: {shown.note}", err=True)
    console = Console(highlight=False, markup=False, emoji=False)
    unreadable: list[tuple[str, str]] = []
    skipped: list[str] = []  # what was read and cannot be shown: its episode id or line, and why

    def trajectories():
        for record in iter_records(info.path, problems=unreadable):
            checked = trajectory_record(record)
            if type(checked) is str:
                skipped.append(visible(f"{record['episode_id']}: {checked}"))
            else:
                yield checked

    # An episode asked for by id is named as damaged when it is (below); the others are skipped.
    records = select_records(iter_records(info.path, problems=unreadable) if episodes else trajectories(),
                             episodes, failed, sample, seed, limit if not sample and not episodes else None)
    skipped += map(visible, skipped_lines(info.path, unreadable))
    for where in skipped:
        click.echo(f"skipped record {where}", err=True)
    lookup = ScoreLookup(info)
    stdout = sys.stdout
    try:
        if not (episodes or failed or sample) and perspective is None:
            damaged_rows = listing(console, records, lookup, scorable)
            console.print("show one with --episode ID", style="dim")
            for line in damaged_rows:
                click.echo(line, err=True)
            if damaged_rows or skipped:
                raise SystemExit(1)
            return
        if not records:
            console.print("no episodes match")
            if skipped:
                raise SystemExit(1)
            return
        damaged = len(skipped)
        for record in records:
            checked = trajectory_record(record)
            if type(checked) is str:
                click.echo(visible(f"episode {record['episode_id']}: {checked}"), err=True)
                damaged += 1
                continue
            record = checked
            try:
                scores = record_scores(lookup, record, scorable)
                if perspective is not None:
                    text = perspective_text(record, info, perspective, "llama3" if fmt == "pretty" else fmt,
                                            scores or {})
                    if fmt == "pretty":
                        console.rule(Text(visible(f"{record['episode_id']} as {perspective} (llama3)")))
                        console.print(Text(visible(text)), soft_wrap=True)
                    elif stdout.isatty():
                        click.echo(visible(text) if fmt == "llama3" else visible_json(text))
                    else:
                        _write_exact(stdout, text + "\n")
                else:
                    show_record(console, record, info, scores, max_result)
            except RECORD_ERRORS as exc:
                click.echo(visible(f"episode {record.get('episode_id', '?')}: {record_problem(record, exc)}"), err=True)
                damaged += 1
        if damaged:
            raise SystemExit(1)
    finally:
        lookup.close()


def _write_exact(stdout, text: str) -> None:
    # click.echo would strip ANSI sequences from a pipe: the training text is written as it is, in UTF-8.
    stdout.flush()
    stdout.buffer.write(text.encode("utf-8"))
    stdout.buffer.flush()
