"""`simworld score`: (re)score the stored trajectories of a run and print a table."""

from __future__ import annotations

import sys

import click


def render_summary(summary: dict, console) -> None:  # noqa: ANN001
    """The score table by task type and agent, then pass^k."""
    from rich.table import Table

    scorers = sorted({k for row in summary["rows"] for k in row["scorers"]})
    table = Table(title="scores by task type and agent", title_justify="left")
    for name, justify in (("task type", "left"), ("agent", "left"), ("episodes", "right"), ("success", "right"),
                          ("passed", "right"), ("mean", "right")):
        table.add_column(name, justify=justify)
    for name in scorers:
        table.add_column(name, justify="right")
    rows = summary["rows"]
    for i, row in enumerate([*rows, {"task_type": "all", "agent": "", **summary["total"]}]):
        cells = [row["task_type"], row["agent"], f"{row['episodes']:,}", f"{100 * row['success_rate']:.1f}%",
                 f"{100 * row['pass_rate']:.1f}%", f"{row['mean_value']:.3f}"]
        cells += [f"{row['scorers'][n]:.3f}" if n in row["scorers"] else "-" for n in scorers]
        table.add_row(*cells, end_section=i == len(rows) - 1)
    console.print(table)
    if summary["pass_k"]:
        console.print("pass^k over " + f"{summary['task_instances']:,} task instances: "
                      + ", ".join(f"{k} {v:.3f}" for k, v in summary["pass_k"].items()), highlight=False)
    for bad in summary.get("bad_records", []):
        console.print(f"skipped record {bad}", highlight=False)


@click.command("score")
@click.argument("run", type=click.Path(path_type=str))
@click.option("--scorer", "scorers", multiple=True, metavar="NAME",
              help="Run only this scorer (repeatable; default: the scenario's `scoring`, else all).")
def command(run: str, scorers: tuple[str, ...]) -> None:
    """Score the trajectories stored in RUN without re-running them.

    Writes RUN/scores/scores.jsonl (one line per episode; scores-NAME.jsonl for --scorer) and
    RUN/scores/summary.json; the trajectory shards are never rewritten. Prints the table by task
    type and agent, and pass^k over repeated seeds of the same task instance.
    """
    from rich.console import Console

    from simworld.scoring.report import score_run

    summary, path = score_run(run, scorers)
    console = Console(width=None if sys.stdout.isatty() else 200)  # a pipe gets the whole table
    console.print(f"{run}: scored {summary.total.episodes:,} episodes with {', '.join(summary.names)} -> {path}",
                  highlight=False, soft_wrap=True)
    render_summary(summary.as_dict(), console)
