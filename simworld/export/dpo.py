"""Preference pairs (`--format dpo`) from trajectories of the same task and seed whose scores differ.

Trajectories of one task instance played from the same episode seed (the same scenario run with
other agents, or forks of one episode, which share their history up to the fork point) are
grouped per perspective and per the agents of every other role: a pair's sides differ in the
perspective's own agent only, so the other party did not cause its score gap (the card counts
the task instances whose score gaps lie only between sides played against different agents, as
``skipped_counterpart_differs``). For each group whose best and worst scores differ, and whose two
conversations part at one of this perspective's own turns, one pair is written in TRL's
conversational preference format: ``prompt`` (the messages both share), ``chosen`` (the
continuation of the higher-scored trajectory) and ``rejected`` (the lower-scored one), messages as
in ``--format trl``; the pair's id and both sides' scores and provenance go in the metadata file
beside it. As there, the turns the environment rejected and those with no text and no call are left
out of all three with the notices that answer them (DPO raises the chosen side and lowers the
rejected one, and neither is a move the environment took); a side left with no assistant turn
makes no pair. A turn that says something and calls a tool is two messages there (its text, then the
call); a pair never parts between the two: when two conversations say the same and call
differently, both completions start at the text.

With ``--validation``, pairs are split by task instance as the other formats' samples are
(:func:`~simworld.export.curation.split_of` over the same key), so a DPO and an SFT export with the
same ``--validation`` and ``--split-seed`` hold out the same task instances.

The first pass keeps (episode, score) per trajectory; the second holds only the paired samples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import orjson

from simworld.export.card import CardStats, card_files, messages_characters, scorer_values, tenth
from simworld.export.curation import split_of
from simworld.export.formats import trl_messages, turns_left_out
from simworld.export.pipeline import (ExportOptions, ExportResult, _has_special_tokens, _Outputs, _synthetic_samples,
                                      card_outputs, metadata_paths, output_paths)
from simworld.export.source import RunInfo, Sample


def _key(sample: Sample) -> tuple[Any, ...]:
    p = sample.provenance
    return (p["scenario"], p["instance_id"], p["seed"], sample.perspective)


def _counterparts(sample: Sample) -> bytes:
    """The agent configs of every role but the perspective (a pair's sides differ in its own only)."""
    agents = orjson.loads(sample.provenance["agents"])
    agents.pop(sample.perspective, None)
    return orjson.dumps(agents, option=orjson.OPT_SORT_KEYS)


def _parting(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> int:
    """Where two conversations part: the length of the prefix they share, moved back before a
    shared text message when a call follows it in either (that text and call are one turn)."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    if n and a[n - 1]["role"] == "assistant" and "tool_calls" not in a[n - 1] \
            and any(n < len(x) and "tool_calls" in x[n] for x in (a, b)):
        n -= 1
    return n


def _compare(chosen: dict[str, Any], rejected: dict[str, Any], gaps: Counter[str], lower_on: Counter[str]) -> None:
    """Count a pair's score gap (in tenths) and the scorers on which its rejected side scored lower."""
    gap = float(chosen.get("value", 0.0)) - float(rejected.get("value", 0.0))
    bin_ = tenth(gap)
    gaps["1.0" if bin_ == 10 else f"{bin_ / 10:.1f}-{(bin_ + 1) / 10:.1f}"] += 1
    theirs = scorer_values(rejected)
    for name, v in scorer_values(chosen).items():
        if name in theirs and theirs[name] < v:
            lower_on[name] += 1


def export_dpo(runs: Sequence[RunInfo], opts: ExportOptions, out: Path,
               reads: Collection[tuple[int, int]] = ()) -> ExportResult:
    """The preference pairs of `runs` to `out` (+ validation split, metadata files, card); `reads`:
    the files the export reads, by identity, which it never removes."""
    stats = CardStats()
    for run in runs:
        stats.add_run(run)
    # Samples are keyed by the run's position too, which needs no assumption about their ids.
    # A group is one task instance, seed and perspective played against the same other agents:
    # against another counterpart, a score gap need not come from anything the perspective did.
    tasks: dict[tuple[Any, ...], dict[bytes, list[tuple[float, tuple[int, str]]]]] = {}
    for ri, run in enumerate(runs):
        for sample in _synthetic_samples([run], opts, stats):
            if _has_special_tokens(sample):  # as every other format: a tokenizer would read turn boundaries
                stats.filtered["special_tokens_in_text"] += 1
                continue
            tasks.setdefault(_key(sample), {}).setdefault(_counterparts(sample), []).append(
                (float(sample.scores.get("value", 0.0)), (ri, sample.id)))
    groups = 0
    counterpart_differs = 0  # task groups with a score gap only between sides of different counterparts
    wanted: dict[tuple[int, str], tuple[tuple[Any, ...], str]] = {}
    for task, by_counterparts in tasks.items():
        groups += len(by_counterparts)
        paired = False
        for others, members in by_counterparts.items():
            if len(members) < 2:
                continue
            members.sort(key=lambda m: (-m[0], m[1]))
            (best, best_id), (worst, worst_id) = members[0], members[-1]
            if best > worst:
                key = (*task, others)
                wanted[best_id] = (key, "chosen")
                wanted[worst_id] = (key, "rejected")
                paired = True
        if not paired and len(by_counterparts) > 1:
            values = [v for members in by_counterparts.values() for v, _ in members]
            if max(values) > min(values):
                counterpart_differs += 1
    held: dict[tuple[Any, ...], dict[str, Sample]] = {}
    ignored = CardStats()
    for ri, run in enumerate(runs):
        for sample in _synthetic_samples([run], opts, ignored):
            hit = wanted.get((ri, sample.id))
            if hit is not None:
                sample.detach()
                held.setdefault(hit[0], {})[hit[1]] = sample
    paths = output_paths(opts)
    metadata = metadata_paths(opts)
    outputs = _Outputs(paths, metadata, reads)
    pairs = identical = unrelated = not_ours = no_valid_turn = left_out = 0
    rejected_stats = CardStats()
    gaps: Counter[str] = Counter()
    lower_on: Counter[str] = Counter()
    try:
        for key in sorted(held, key=str):
            both = held[key]
            if len(both) != 2:
                continue
            chosen, rejected = both["chosen"], both["rejected"]
            a, b = trl_messages(chosen.messages, chosen.tail), trl_messages(rejected.messages, rejected.tail)
            if not a or not b:  # every assistant turn of a side was invalid
                no_valid_turn += 1
                continue
            n = _parting(a, b)
            if n == len(a) or n == len(b):
                identical += 1
                continue
            if n == 0:  # not even the system prompt in common: not two answers to one prompt
                unrelated += 1
                continue
            if a[n]["role"] != "assistant" or b[n]["role"] != "assistant":
                not_ours += 1  # they part on what someone else said: no choice of this perspective
                continue
            split = split_of(chosen.split_key, opts.validation, opts.split_seed)
            outputs.write(split, {
                "prompt": a[:n], "chosen": a[n:], "rejected": b[n:],
                **({"tools": chosen.tools_openai} if chosen.tools_openai else {}),
            }, {
                "id": f"{chosen.id}>{rejected.id}",
                "scores": {"chosen": chosen.written_scores, "rejected": rejected.written_scores},
                "provenance": {"chosen": chosen.provenance, "rejected": rejected.provenance},
                "synthetic": True,
            })
            # (the card's characters are those of the messages in hand: prompt + each side's completion)
            stats.add(chosen, split, sum(1 for m in a if m["role"] == "assistant"),
                      messages_characters(a, chosen.tools_openai))
            rejected_stats.add(rejected, split, sum(1 for m in b if m["role"] == "assistant"),
                               messages_characters(b, rejected.tools_openai))
            _compare(chosen.scores, rejected.scores, gaps, lower_on)
            left_out += turns_left_out("dpo", chosen.messages) + turns_left_out("dpo", rejected.messages)
            pairs += 1
        stats.extra["dpo"] = {"groups": groups, "groups_with_a_score_gap": len(wanted) // 2, "pairs": pairs,
                              "skipped_counterpart_differs": counterpart_differs,
                              "skipped_identical": identical, "skipped_no_common_prompt": unrelated,
                              "skipped_diverge_on_other_party": not_ours,
                              "skipped_no_valid_assistant_turn": no_valid_turn,
                              "chosen": stats.outcomes(), "rejected": rejected_stats.outcomes(),
                              "score_gap_histogram": dict(sorted(gaps.items())),
                              "rejected_lower_on": dict(lower_on.most_common())}
        stats.extra["invalid_turns_left_out"] = left_out  # (of both sides of the pairs written)
        card = stats.as_dict(opts.command, "dpo", card_outputs(paths, metadata), {"exact": 0, "near": 0})
        cards = card_files(out, card)
        outputs.commit(cards)
    except BaseException:
        outputs.abort()
        raise
    return ExportResult(outputs=paths, written=dict(outputs.count), card=card, card_paths=tuple(cards),
                        metadata=metadata, removed=tuple(outputs.removed))
