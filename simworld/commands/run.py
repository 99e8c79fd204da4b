"""`simworld run`: run a scenario's episodes into a run directory (resumable)."""

from __future__ import annotations

import sys
import time
from typing import Any

import click


class _ProgressBar:
    """A rich progress bar with episodes/s on stderr, updated at most ~10 times a second."""

    def __init__(self) -> None:
        self.progress: Any = None
        self.task: Any = None
        self.pending = 0
        self.last = 0.0

    def start(self, total: int, done: int) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task: Any) -> Text:
                speed = task.finished_speed or task.speed
                return Text(f"{speed:,.0f} episodes/s" if speed else "- episodes/s", style="cyan")

        self.progress = Progress(TextColumn("episodes"), BarColumn(), MofNCompleteColumn(), Rate(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 console=Console(stderr=True), refresh_per_second=4, speed_estimate_period=10)
        self.progress.start()
        self.task = self.progress.add_task("run", total=total, completed=done)

    def advance(self, n: int) -> None:
        self.pending += n
        now = time.monotonic()
        if now - self.last >= 0.1:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        if self.progress is not None and self.pending:
            self.progress.update(self.task, advance=self.pending)
            self.pending = 0
        self.last = now if now is not None else time.monotonic()

    def stop(self) -> None:
        if self.progress is not None:
            self.flush()
            self.progress.stop()
            self.progress = None


@click.command("run")
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=str))
@click.option("--out", "-o", "out", required=True, metavar="DIR",
              help="Run directory (created; re-running the same command there resumes).")
@click.option("--episodes", "-n", type=click.IntRange(min=0), default=None,
              help="Number of episodes (default: the scenario's `episodes`, or a resumed run's own count if "
                   "larger; a run never shrinks: fewer than it has is refused).")
@click.option("--seed", type=click.IntRange(min=0, max=2**64 - 1), default=None,
              help="Run seed, 0 to 2**64-1 (default: the scenario's `seed`).")
@click.option("--workers", "-w", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes; each writes its own shard.")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=None,
              help="Episodes in flight per worker on one asyncio loop (default: 1 when every agent is "
                   "scripted, 8 when a model is involved).")
@click.option("--max-retries", type=click.IntRange(min=0), default=None,
              help="Set max_retries on every role whose agent has it (model calls).")
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE",
              help="Override a scenario field, e.g. --set roles.support.agent.type=llm, or --set repeats=4 to "
                   "run each task 4 times (for pass^k) (repeatable).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def command(scenario: str, out: str, episodes: int | None, seed: int | None, workers: int,
            concurrency: int | None, max_retries: int | None, sets: tuple[str, ...], quiet: bool) -> None:
    """Run the episodes of SCENARIO and write verified trajectories to --out.

    Writes OUT/scenario.yaml (the resolved scenario), OUT/manifest.json and append-only shards
    OUT/trajectories-*.jsonl, then prints a summary. The same seed gives the same trajectories
    whatever --workers and --concurrency are. Stopped at any moment, the same command resumes:
    finished episodes are kept, a torn last line is repaired, failed episodes are retried.
    """
    from rich.console import Console

    from simworld.errors import counted
    from simworld.runio import check_run_out
    from simworld.runner import resolve_scenario, run_batch
    from simworld.scenario import parse_overrides
    from simworld.summary import uneven_repeats_note

    check_run_out(out)
    sc = resolve_scenario(scenario, sets, seed=seed, max_retries=max_retries)
    bar = _ProgressBar() if not quiet and sys.stderr.isatty() else None
    err = Console(stderr=True)
    try:
        result = run_batch(sc, out, episodes=episodes, workers=workers, concurrency=concurrency, source=scenario,
                           overrides=parse_overrides(sets),
                           command=["simworld", *sys.argv[1:]],
                           on_start=bar.start if bar else None, on_progress=bar.advance if bar else None)
    finally:
        if bar is not None:
            bar.stop()
    for note in result.repaired:
        err.print(f"repaired {note}")
    head = (f"{out}: {counted(result.requested, 'episode')} of {sc.name} (seed {sc.seed}): {result.new:,} run in "
            f"{result.elapsed_s:.1f}s ({result.episodes_per_s:,.0f} episodes/s after {result.setup_s:.1f}s of setup)")
    if result.skipped:
        head += f", {result.skipped:,} already done"
    if result.retried:
        head += f", {result.retried:,} failed episodes retried"
    # Logs and files are read wider than a terminal: do not squeeze the per-group table into 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(head, highlight=False, soft_wrap=True)
    result.summary.render(console)
    uneven = uneven_repeats_note(result.requested, sc.repeats)
    if uneven:
        click.echo(f"note: {uneven}", err=True)
    if result.summary.failed:
        console.print(f"{counted(result.summary.failed, 'episode')} failed in their agent; re-run the same command to "
                      "retry them.", highlight=False)
    if result.status == "interrupted":
        click.echo(f"Interrupted: {result.summary.episodes:,} of {counted(result.requested, 'episode')} are done; "
                   "re-run the same command to resume.", err=True)
        sys.exit(130)
    if result.summary.failed:
        sys.exit(1)  # (so that `simworld run ... && simworld export ...` does not go on with episodes to retry)
