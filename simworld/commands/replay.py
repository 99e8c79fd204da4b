"""`simworld replay`: re-execute every recorded episode and verify results, hashes and outcomes."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import click


@click.command("replay")
@click.argument("run", type=click.Path(path_type=str))
@click.option("--episode", "episodes", multiple=True, metavar="ID", help="Replay only this episode (repeatable).")
@click.option("--fork-at", type=click.IntRange(min=0), default=None, metavar="N",
              help="With --episode and --out: restore the state after event N and continue with the agents "
                   "given by --set.")
@click.option("--out", type=click.Path(path_type=str), default=None,
              help="Directory for forked trajectories (created; appended to; not a run of `simworld run`).")
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE",
              help="With --fork-at: the continuation's agents, system prompts, personas, max_turns or "
                   "scoring, e.g. --set roles.support.agent.type=llm (they win over the scenario's variations).")
@click.option("--quiet", "-q", is_flag=True, help="Print only mismatches and the summary line.")
def command(run: str, episodes: tuple[str, ...], fork_at: int | None, out: str | None, sets: tuple[str, ...],
            quiet: bool) -> None:
    """Replay the episodes of RUN without calling any agent or model.

    Regenerates each episode's world and task from its seed and the run's scenario, re-applies the
    recorded actions, and checks every tool result and notice, the final state hash and the
    outcome. Prints the first differing event of each mismatching episode and exits 1 if any.
    """
    from simworld.errors import SimworldError, counted

    if fork_at is not None:
        if len(episodes) != 1 or out is None:
            raise SimworldError("--fork-at needs exactly one --episode and --out DIR, a directory for the forks "
                                "(new, or one holding earlier forks; not a run directory)")
        from simworld.runio import check_run_out

        check_run_out(out)  # ('' or a folder of other files: an unset shell variable, not a place for forks)
        _fork(run, episodes[0], fork_at, out, sets)
        return
    if sets or out:
        raise SimworldError("--set and --out apply with --fork-at")
    from simworld.replay import missing_episodes, replay_run
    from simworld.runio import unfinished_run_state

    wanted = set(episodes) if episodes else None
    total = bad = events = versioned = 0
    seen: set[str] = set()
    problems: list[tuple[str, str]] = []
    for result in replay_run(run, wanted, problems=problems):
        total += 1
        seen.add(result.episode_id)
        events += result.events_checked
        if result.ok:
            if not quiet:
                click.echo(f"ok {result.episode_id} ({counted(result.events_checked, 'event')})")
            continue
        bad += 1
        if result.mismatch.cause == "world version":
            # Every episode of a run recorded by another version says the same: a few lines, then a count.
            versioned += 1
            if versioned > 3:
                continue
        click.echo(f"MISMATCH {result.episode_id}: {result.mismatch.describe()}")
    if versioned > 3:
        click.echo(f"MISMATCH {versioned - 3:,} more episodes recorded with another version of the world")
    if wanted:
        missing = sorted(wanted - seen)
        if missing:
            raise SimworldError(f"{run}: no episode {missing[0]!r}")
    # A verifier also answers for what it could not read: unreadable lines, and episodes the
    # manifest says were run that have no record. Both are expected only of an unfinished run.
    missing, status = missing_episodes(run, seen) if not wanted else ([], None)
    unfinished = status is not None and status != "complete"
    if not total and not problems and status == "complete" and not missing:
        click.echo(f"note: {run}: the run is complete with 0 episodes (it asked for none); nothing to replay")
        return
    gaps = 0
    for kind, where in problems:
        if kind == "torn" and unfinished:
            click.echo(f"note: {where}")
            continue
        gaps += 1
        click.echo(f"UNREADABLE {where}")
    if missing and unfinished:
        click.echo(f"note: {unfinished_run_state(run, status, len(missing) + total, len(missing))}")
    elif missing:
        gaps += len(missing)
        for eid in missing[:10]:
            click.echo(f"MISSING {eid}: in the manifest, no record in the shards")
        if len(missing) > 10:
            click.echo(f"MISSING {counted(len(missing) - 10, 'more episode')}")
    if not total and not gaps:
        raise SimworldError(f"{run}: no trajectories to replay")
    summary = counted(bad, "mismatch", "mismatches") if bad else "all match"
    if gaps:
        summary += f"; {counted(gaps, 'unreadable or missing record')}"
    click.echo(f"replayed {counted(total, 'episode')} ({counted(events, 'event')}): {summary}")
    if bad or gaps:
        sys.exit(1)


_FORK_SETTABLE = re.compile(r"^(roles\.[^.]+\.(agent(\..+)?|system_prompt|persona)|max_turns|scoring(\..+)?)$")


def _fork(run: str, episode: str, fork_at: int, out: str, sets: tuple[str, ...]) -> None:
    from simworld.errors import SimworldError, counted
    from simworld.replay import fork_trajectory, load_run_scenario, parse_record
    from simworld.runio import iter_records, write_atomic
    from simworld.runner import scenario_yaml
    from simworld.scenario import parse_overrides, scenario_from_data

    overrides = parse_overrides(sets)
    for key in overrides:
        if not _FORK_SETTABLE.match(key):
            raise SimworldError(f"--set {key}: a fork goes on in its parent's world with its parent's task; it can set "
                                "roles.ROLE.agent..., roles.ROLE.system_prompt, roles.ROLE.persona, max_turns "
                                "and scoring")
    dest = Path(out)
    if dest.exists() and dest.resolve() == Path(run).resolve():
        raise SimworldError(f"--out {out} is the run being forked; write forks to a directory of their own")
    if (dest / "manifest.json").exists():
        raise SimworldError(f"--out {out} is a run directory; write forks to a directory of their own")
    scenario = load_run_scenario(run)
    record = next((r for r in iter_records(run) if r.get("episode_id") == episode), None)
    if record is None:
        raise SimworldError(f"{run}: no episode {episode!r}")
    traj = parse_record(record)
    if isinstance(traj, str):
        raise SimworldError(f"{run}: episode {episode}: {traj}")
    # (the parent's recorded scenario: the rules of a newer simworld apply only to what --set changes)
    agents_sc = scenario_from_data(scenario.model_dump(mode="json"), source=f"{run}/scenario.yaml",
                                   overrides=overrides, recorded=True) if sets else scenario
    new = fork_trajectory(traj, scenario, fork_at, agents_sc)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        sc_file = dest / "scenario.yaml"
        if sc_file.exists():
            existing = load_run_scenario(dest)
            if existing.content_hash != agents_sc.content_hash:
                raise SimworldError(f"{out} holds a run of another scenario; use a new --out directory")
        else:
            write_atomic(sc_file, scenario_yaml(agents_sc))
        repaired = _append_fork(dest / "trajectories-forks.jsonl", new.to_jsonl())
    except OSError as exc:
        raise SimworldError(f"cannot write {out}: {exc.strerror or exc}") from None
    if repaired:
        click.echo(f"repaired {repaired}", err=True)
    o = new.outcome
    click.echo(f"forked {episode} at event {fork_at} -> {new.episode_id} in {out}: "
               f"{counted(len(new.events), 'event')}, "
               f"{'success' if o.success else 'failure'} ({o.termination})")


def _append_fork(path: Path, line: bytes) -> str | None:
    """Append one fork record so the file stays whole lines: a write that fails (a full disk) is
    cut back, and a torn last line an earlier failure or crash left is cut before appending (the
    new record would otherwise be glued to it). Returns a note of what was cut, if anything."""
    from simworld.errors import counted
    from simworld.runio import ShardWriter, truncate_tail

    note = None
    if path.exists():
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            end = size
            while end > 0:  # back to the last newline, a block at a time
                start = max(0, end - (1 << 16))
                fh.seek(start)
                nl = fh.read(end - start).rfind(b"\n")
                if nl >= 0:
                    end = start + nl + 1
                    break
                end = start
        if end < size:
            truncate_tail(path, end)
            note = f"{path.name}: cut {counted(size - end, 'byte')} of a torn last line"
    writer = ShardWriter(path)
    try:
        writer.write(line)
    finally:
        writer.close()
    return note
