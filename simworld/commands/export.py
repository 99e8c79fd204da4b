"""`simworld export`: trajectories as training data (llama3, openai, trl, sharegpt, dpo) with a card."""

from __future__ import annotations

import shlex
import sys
from datetime import datetime

import click

FORMAT_CHOICES = ("llama3", "openai", "trl", "sharegpt", "dpo")


@click.command("export")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--format", "fmt", type=click.Choice(FORMAT_CHOICES), default="llama3", show_default=True,
              help="Output format.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=str), help="Output JSONL file.")
@click.option("--min-score", type=click.FloatRange(0, 1), default=None,
              help="Keep trajectories whose mean score is at least this.")
@click.option("--only-success", is_flag=True, help="Keep only successful episodes.")
@click.option("--task-type", "task_types", multiple=True, metavar="TYPE", help="Keep only this task type (repeatable).")
@click.option("--scenario", "scenarios", multiple=True, metavar="NAME", help="Keep only this scenario (repeatable).")
@click.option("--no-dedup", is_flag=True, help="Keep exact and near duplicates.")
@click.option("--no-near-dedup", is_flag=True, help="Remove exact duplicates only.")
@click.option("--near-dup-bits", type=click.IntRange(0, 32), default=10, show_default=True,
              help="How many of 128 SimHash bits two near duplicates may differ in.")
@click.option("--validation", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Fraction of task instances held out for validation (split by task instance).")
@click.option("--val-out", type=click.Path(path_type=str), default=None,
              help="Validation file (default: OUT stem + .validation.jsonl); with --validation.")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the train/validation split.")
@click.option("--mix", multiple=True, metavar="FILE:FRACTION",
              help="Blend in external OpenAI-format conversations as this fraction of the output (repeatable; "
                   "not with --format dpo).")
@click.option("--mix-today", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, metavar="YYYY-MM-DD",
              help="llama3: the Today Date of the --mix conversations' system messages (default: none, a real "
                   "conversation has no scenario date; one whose system message states its date keeps it).")
@click.option("--tokenize", is_flag=True, help="llama3: add token ids and a token-level loss mask.")
@click.option("--mask-failed-calls", is_flag=True,
              help="llama3, openai: keep assistant turns whose tool call returned an error in the conversation "
                   "but out of the loss (invalid / weight 0).")
@click.option("--scorer", "scorers", multiple=True, metavar="NAME",
              help="Scorers of the exported scores (default: the scenario's); a RUN/scores/scores.jsonl "
                   "that `simworld score` wrote with other scorers is then not used.")
def command(runs: tuple[str, ...], fmt: str, out: str, min_score: float | None, only_success: bool,
            task_types: tuple[str, ...], scenarios: tuple[str, ...], no_dedup: bool, no_near_dedup: bool,
            near_dup_bits: int, validation: float, val_out: str | None, split_seed: int, mix: tuple[str, ...],
            mix_today: datetime | None, tokenize: bool, mask_failed_calls: bool, scorers: tuple[str, ...]) -> None:
    """Export the trajectories of one or more RUNS as training data.

    One sample per trajectory per assistant-side perspective (each party of a negotiation). Writes
    OUT (and the validation split), plus a dataset card beside it (OUT stem + .card.md / .card.json).
    openai, trl, sharegpt and dpo lines hold only what their trainer reads; each sample's id, scores
    and provenance go in OUT stem + .meta.jsonl, line for line. Scores come from
    RUN/scores/scores.jsonl when `simworld score` wrote it, else are computed. Files an earlier
    export to OUT wrote beside it and this one does not (OUT stem + .validation.jsonl, .meta.jsonl,
    .validation.meta.jsonl) are removed, and named.
    """
    from rich.console import Console

    from simworld.errors import counted
    from simworld.export import ExportOptions, export_runs
    from simworld.export.card import TRAINER_MAX_LENGTH
    from simworld.runio import unfinished_run_note

    opts = ExportOptions(fmt=fmt, out=out, min_score=min_score, only_success=only_success, task_types=task_types,
                         scenarios=scenarios, dedup=not no_dedup, near_dedup=not no_near_dedup,
                         near_dup_bits=near_dup_bits, validation=validation, val_out=val_out, split_seed=split_seed,
                         mix=mix, mix_today=mix_today.date() if mix_today else None, tokenize=tokenize,
                         mask_failed_calls=mask_failed_calls, scorers=scorers,
                         command="simworld " + shlex.join(sys.argv[1:]))
    result = export_runs(runs, opts)
    console = Console()
    card = result.card
    parts = [f"{n:,} {k}" for k, n in result.written.items()]
    dup = card["duplicates_removed"]
    console.print(f"exported {' + '.join(parts)} {'pairs' if fmt == 'dpo' else 'samples'} ({fmt}) -> "
                  + ", ".join(str(p) for p in result.outputs.values()), highlight=False, soft_wrap=True)
    if result.metadata:
        console.print("metadata (id, scores, provenance; line for line): "
                      + ", ".join(str(p) for p in result.metadata.values()), highlight=False, soft_wrap=True)
    notes = [f"duplicates removed: {dup['exact']:,} exact, {dup['near']:,} near"]
    if card["filtered"]:
        notes.append("samples filtered out: " + ", ".join(f"{k} {v:,}" for k, v in card["filtered"].items()))
    if card.get("invalid_turns_left_out"):
        notes.append(f"turns the environment rejected left out: {card['invalid_turns_left_out']:,}")
    for m in card["mix"]:
        short = ", the file ran out" if m["exhausted"] else ""
        notes.append(f"mixed {m['samples']:,} from {m['file']} ({m['achieved']:.1%}; {m['requested']:.1%} "
                     f"asked{short})")
    console.print("; ".join(notes), highlight=False, soft_wrap=True)
    tokens = card["tokens_per_sample"]
    if tokens.get("samples"):
        about = "~" if tokens["estimated"] else ""
        over = tokens[f"longer_than_{TRAINER_MAX_LENGTH}"]
        unit = "pair" if fmt == "dpo" else "sample"
        console.print(f"tokens per {'pair (prompt + chosen)' if fmt == 'dpo' else 'sample'}"
                      f"{' (estimated)' if tokens['estimated'] else ''}: p50 {about}{tokens['p50']:,}, max "
                      f"{about}{tokens['max']:,}" + (f"; {counted(over, unit)} longer than {TRAINER_MAX_LENGTH:,}, "
                                                     "TRL's default max_length (see the card)" if over else ""),
                      highlight=False, soft_wrap=True)
    console.print(f"card: {result.card_paths[0]}", highlight=False, soft_wrap=True)
    if result.removed:
        click.echo(f"note: removed {', '.join(map(str, result.removed))}: an earlier export to {out} wrote "
                   f"{'them' if len(result.removed) > 1 else 'it'} and this one does not", err=True)
    for run in dict.fromkeys(runs):
        unfinished = unfinished_run_note(run)
        if unfinished:
            click.echo(f"note: {unfinished}", err=True)
    if card["filtered"].get("agent_failed"):
        click.echo(f"note: left out {counted(card['filtered']['agent_failed'], 'sample')} of episodes whose agent "
                   "failed (a model call that kept failing, say): re-run their `simworld run` command to retry "
                   "them", err=True)
    for m in card["mix"]:
        if m["exhausted"]:
            left_out = f" ({m['left_out']:,} of its conversations left out, see the card)" if m["left_out"] else ""
            click.echo(f"note: --mix {m['file']}:{m['requested']:g} ran out: {counted(m['samples'], 'conversation')} "
                       f"mixed in ({m['achieved']:.1%} of the output){left_out}, not the {m['wanted']:,} that "
                       f"{m['requested']:.1%} asks for; the file has no more", err=True)
    for problem in card.get("score_files_unreadable", ()):
        click.echo(f"note: cannot read {problem}; scores computed from the records", err=True)
    for path in card.get("score_files_stale", ()):
        click.echo(f"note: {path} is older than the run's trajectories (run appended records after `simworld "
                   "score`); scores computed from the records; `simworld score` again stores them", err=True)
    for path, names in card.get("score_files_of_other_scorers", {}).items():
        click.echo(f"note: {path} holds the scores of {', '.join(names) or 'no scorer'}, not of --scorer "
                   f"{' '.join(scorers)}; scores computed from the records", err=True)
    for run, n in card.get("records_of_another_scenario", {}).items():
        click.echo(f"note: {run}: {n:,} of its records were made under another scenario than its scenario.yaml "
                   "(edited since?); their samples carry the file's settings (date, prompts); `simworld replay` "
                   "names them", err=True)
    notes = card.get("malformed_records", [])
    for bad in notes:
        click.echo(f"skipped record {bad}", err=True)
    more = card["malformed_records_skipped"] - len(notes)
    if more > 0:
        click.echo(f"skipped {more:,} more records that are not valid trajectories or lines that hold none "
                   "(simworld replay lists them)", err=True)
    if card.get("call_texts_left_out"):
        click.echo(f"note: left out the text of {card['call_texts_left_out']:,} assistant turns that also call a "
                   "tool: the text holds <tool_call>, which LLaMA-Factory would read as the start of the call",
                   err=True)
    if fmt == "dpo" and not sum(result.written.values()):
        console.print("note: no preference pairs: a pair needs two trajectories of the same task instance and "
                      "seed, played against the same other agents, whose scores differ, e.g. export a run of "
                      "another agent made with the same --seed together with this one (simworld export RUN_A "
                      "RUN_B --format dpo ...)", highlight=False, soft_wrap=True)
    differs = card.get("dpo", {}).get("skipped_counterpart_differs", 0)
    if differs:
        click.echo(f"note: {counted(differs, 'group')} of one task instance, seed and perspective made no pair: "
                   "their scores differ only between trajectories whose other roles' agents differ too, so the "
                   "gap need not come from the perspective's own moves; pair runs that change one role's agent "
                   "only", err=True)
