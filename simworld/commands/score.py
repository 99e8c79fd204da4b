"""`simworld score`: (re)score the stored trajectories of a run and print a table."""

from __future__ import annotations

import sys
from typing import Any

import click

def score_table(summary: dict[str, Any], width: int | None = None) -> tuple[Any, list[str]]:
    """The rich Table of a score summary (`ScoreSummary.as_dict()`), one row per task type and agent,
    and the scorers left out to fit in `width` columns (None: all of them, whatever the width)."""
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    from simworld.errors import rounded

    scorers = sorted({k for row in summary["rows"] for k in row["scorers"]})
    rows = [*summary["rows"], {"task_type": "all", "agent": "", **summary["total"]}]
    probe = Console(width=100_000)

    def build(shown: list[str]) -> Any:
        table = Table(title="scores by task type and agent", title_justify="left")
        # Only the label columns give way when the table is too wide, and they fold: every
        # character stays, so the rows of two agents never look alike.
        table.add_column("task type", overflow="fold")
        table.add_column("agent", overflow="fold")
        for name in ("episodes", "success", "passed", "mean", *shown):
            table.add_column(name.replace("_", " "), justify="right", no_wrap=True)
        for i, row in enumerate(rows):
            cells = [row["task_type"], row["agent"], f"{row['episodes']:,}", f"{rounded(row['success_rate'], 1, 100)}%",
                     f"{rounded(row['pass_rate'], 1, 100)}%", rounded(row["mean_value"], 3)]
            cells += [rounded(row["scorers"][n], 3) if n in row["scorers"] else "-" for n in shown]
            table.add_row(*cells, end_section=i == len(rows) - 2)
        return table

    shown = list(scorers)
    table = build(shown)
    while width is not None and shown and Measurement.get(probe, probe.options, table).maximum > width:
        shown.pop()
        table = build(shown)
    return table, scorers[len(shown):]


def render_summary(summary: dict[str, Any], console: Any, fit: bool = True,
                   details: str = "scores/summary.json") -> None:
    """The score table by task type and agent, then pass^k (over task success).

    `fit`: leave out scorer columns that would not fit in the console's width (they are named, with
    `details`, the file under the run that holds them)."""
    from simworld.summary import pass_k_text

    table, left_out = score_table(summary, console.width if fit else None)
    console.print(table)
    if left_out:
        console.print(f"not shown for want of width: {', '.join(left_out)} (see {details})", highlight=False)
    if summary["pass_k"]:
        values, scope = pass_k_text(summary["pass_k"], summary.get("pass_k_tasks") or {}, summary["tasks"])
        console.print(f"pass^k (all k tries of a task succeed; {scope}): {values}"
                      + ("" if len(summary["pass_k"]) > 1 else
                         "; each task was tried once: run with --set repeats=K for pass^k beyond k=1"), highlight=False)
    for bad in summary.get("bad_records", []):
        console.print(f"skipped record {bad}", highlight=False)


def output_console(summary: dict[str, Any]) -> Any:
    """A terminal's own width; for a pipe or a file, as wide as the whole table (nothing cut)."""
    from rich.console import Console
    from rich.measure import Measurement

    if sys.stdout.isatty():
        return Console()
    table, _ = score_table(summary)
    probe = Console(width=100_000)
    return Console(width=max(80, Measurement.get(probe, probe.options, table).maximum))


@click.command("score")
@click.argument("run", type=click.Path(path_type=str))
@click.option("--scorer", "scorers", multiple=True, metavar="NAME",
              help="Run only this scorer (repeatable; default: the scenario's `scoring`, else all).")
def command(run: str, scorers: tuple[str, ...]) -> None:
    """Score the trajectories stored in RUN without re-running them.

    Writes under RUN/scores/ (the trajectory shards are never rewritten):

    \b
      scores.jsonl        one line of scores per episode
      summary.json        the table below and pass^k
      scores-NAMES.jsonl  with --scorer, unless it names the scenario's own
                          scorers: the lines of those scorers (NAMES joined
                          by '+'), instead of the two files above, which
                          stay as they were

    Prints the table by task type and agent ("success": the task's success; "passed": success and
    every scorer passed), and pass^k: the chance that k tries of the same task instance all succeed
    (tries are episodes that share a task instance; a scenario's `repeats` makes them).
    """
    from simworld.errors import counted
    from simworld.runio import unfinished_run_note
    from simworld.scoring.report import SCORES_DIR, SCORES_FILE, SUMMARY_FILE, score_run

    summary, path = score_run(run, scorers)
    unfinished = unfinished_run_note(run)
    if unfinished:
        click.echo(f"note: {unfinished}", err=True)
    data = summary.as_dict()
    console = output_console(data)
    console.print(f"{run}: scored {counted(summary.total.episodes, 'episode')} with {', '.join(summary.names)} "
                  f"-> {path}", highlight=False, soft_wrap=True)
    render_summary(data, console, details=f"{SCORES_DIR}/{SUMMARY_FILE if path.name == SCORES_FILE else path.name}")
