"""The dataset card written beside every export (``<out stem>.card.md`` and ``.card.json``).

Counts per scenario / task type / perspective / split, success and score distributions, turns and
tool calls per sample, the length of each sample in characters and tokens (:func:`sample_characters`;
tokens counted with ``--tokenize``, else estimated) against trainers' default ``max_length``, tool
and tool-transition coverage against the world's tool graph (edges of
:meth:`~simworld.world.World.tool_transitions`) with what was never exercised, what the filters and
the duplicate removal took out, the external data mixed in, and the exact command.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from operator import add
from pathlib import Path
from typing import Any

import orjson

import simworld
from simworld.errors import counted
from simworld.export.formats import trl_messages
from simworld.export.source import RunInfo, Sample, json_text
from simworld.llama3.format import failed_call_ids

TRAINER_MAX_LENGTH = 1024
"""The default ``max_length`` (in tokens) of TRL's ``SFTConfig`` and ``DPOConfig``: longer samples
are cut to their first 1,024 tokens (``truncation_mode="keep_start"``)."""
CHARS_PER_TOKEN = {"llama3": 4, "messages": 3}
"""Characters (:func:`sample_characters`) per token of the token estimate without ``--tokenize``, so
that it errs long. On the shipped scenarios' samples Meta's Llama 3 tokenizer gives 4.1 to 4.9
characters a token of the llama3 text; the other formats' characters (which leave out the chat
template's framing and the tool instructions it adds) are 3.0 to 3.5 per token of the text TRL's
Llama 3.1 template renders (3.1 to 3.4 per token of the llama3 text)."""


def chars_per_token(fmt: str) -> int:
    return CHARS_PER_TOKEN.get(fmt, CHARS_PER_TOKEN["messages"])


def _dist(counter: Counter[int]) -> dict[str, Any]:
    n = sum(counter.values())
    if not n:
        return {"samples": 0}
    items = sorted(counter.items())
    total = sum(k * v for k, v in items)

    def pct(p: float) -> int:
        target, acc = p * n, 0
        for k, v in items:
            acc += v
            if acc >= target:
                return k
        return items[-1][0]

    return {"samples": n, "min": items[0][0], "mean": round(total / n, 3), "p50": pct(0.5), "p90": pct(0.9),
            "max": items[-1][0]}


def tenth(value: float) -> int:
    """The 0.1-wide bin (0..10) a score in [0, 1] falls in; 10 is exactly 1."""
    return min(10, max(0, int(value * 10 + 1e-9)))


def scorer_values(scores: dict[str, Any]) -> dict[str, float]:
    """Each scorer's number in a sample's `scores`, leaving out the summary `value` and `passed`."""
    return {name: v for name, v in scores.items() if name not in ("value", "passed") and isinstance(v, (int, float))}


class Lengths:
    """Min, mean, p50, p90 and max of lengths (characters or tokens per sample) in fixed memory: a
    length below 256 is counted as it is, a longer one in a bin 1/128 of an octave wide (a power
    of two starts a bin), so p50 and p90 are within 0.4% (the middle of their bin); min, mean and
    max are exact, and so is `over`, how many exceed `limit` (the unit's :data:`TRAINER_MAX_LENGTH`)."""

    __slots__ = ("bins", "n", "total", "low", "high", "limit", "over")

    def __init__(self, limit: int) -> None:
        self.bins: Counter[int] = Counter()
        self.n = self.total = self.high = self.over = 0
        self.low = 1 << 62
        self.limit = limit

    def add(self, length: int) -> None:
        shift = length.bit_length() - 8
        self.bins[(shift << 8) | (length >> shift) if shift > 0 else length] += 1
        self.n += 1
        self.total += length
        if length > self.high:
            self.high = length
        if length < self.low:
            self.low = length
        if length > self.limit:
            self.over += 1

    def merge(self, other: Lengths) -> None:
        self.bins.update(other.bins)
        self.n += other.n
        self.total += other.total
        self.high, self.low = max(self.high, other.high), min(self.low, other.low)
        self.over += other.over

    def _value(self, key: int) -> int:
        shift, mantissa = key >> 8, key & 255
        if not shift:
            return key
        low = mantissa << shift
        return min(self.high, max(self.low, low + ((1 << shift) - 1) // 2))

    def summary(self, per: int = 1) -> dict[str, Any]:
        """The distribution, each length divided by `per` and rounded up (an estimate from another unit)."""
        if not self.n:
            return {"samples": 0}
        keys = sorted(self.bins)

        def pct(p: float) -> int:
            target, acc = p * self.n, 0
            for k in keys:
                acc += self.bins[k]
                if acc >= target:
                    return self._value(k)
            return self.high

        def scaled(v: int) -> int:
            return -(-v // per)

        return {"samples": self.n, "min": scaled(self.low), "mean": round(self.total / self.n / per, 3),
                "p50": scaled(pct(0.5)), "p90": scaled(pct(0.9)), "max": scaled(self.high)}


_TOOLS_CHARS: dict[int, tuple[Any, int]] = {}


def _tools_chars(tools: Any) -> int:
    """Characters of tool definitions as JSON (``json.dumps``), or of a JSON string of them; cached
    per tool list, which the samples of one run and role share."""
    if not tools:
        return 0
    if isinstance(tools, str):
        return len(tools)
    hit = _TOOLS_CHARS.get(id(tools))
    if hit is None or hit[0] is not tools:
        if len(_TOOLS_CHARS) >= 256:
            _TOOLS_CHARS.clear()
        hit = _TOOLS_CHARS[id(tools)] = (tools, len(json.dumps(tools)))
    return hit[1]


def _arguments_chars(arguments: Any) -> int:
    return len(arguments) if isinstance(arguments, str) else len(json.dumps(arguments))


def sample_characters(fmt: str, line: dict[str, Any]) -> int:
    """The length in characters of what a trainer tokenizes of a written line (described in the card
    by :data:`LENGTH_MEASURES`): llama3, its `text`; sharegpt, its `system`, `conversations` values and
    `tools`; the message formats (openai, trl, a DPO side), each message's content, each call's
    name and arguments (JSON) and the tool definitions (JSON)."""
    if fmt == "llama3":
        return len(line["text"])
    if fmt == "sharegpt":
        return len(line["system"]) + sum(len(t["value"]) for t in line["conversations"]) + _tools_chars(line["tools"])
    return messages_characters(line["messages"], line.get("tools"))


def messages_characters(messages: list[dict[str, Any]], tools: Any) -> int:
    """Characters of chat messages as a chat template receives them: see :func:`sample_characters`."""
    n = _tools_chars(tools)
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            n += len(content)
        for call in m.get("tool_calls") or ():
            fn = call["function"]
            n += len(fn["name"]) + _arguments_chars(fn.get("arguments"))
    return n


_AS_A_TEMPLATE_RECEIVES_THEM = (
    "as a chat template receives them: each message's content, each tool call's name and arguments (JSON) and "
    "the tool definitions (JSON); the template adds its own framing (role headers, end-of-turn tokens, and TRL's "
    "Llama 3.1 template its system lines and tool instructions)")
LENGTH_MEASURES = {
    "llama3": "of `text`, the Llama 3 text a trainer tokenizes",
    "sharegpt": "of `system`, the `conversations` values and `tools`, as LLaMA-Factory reads them; its chat "
                "template adds its own framing (role headers, end-of-turn tokens)",
    "messages": "of the messages " + _AS_A_TEMPLATE_RECEIVES_THEM,
    "dpo": "of a pair's prompt and one completion (the chosen one; the rejected one under *Preference pairs*), "
           + _AS_A_TEMPLATE_RECEIVES_THEM,
}
"""What the card's characters per sample measure, by format (openai and trl: ``messages``)."""


def length_measure(fmt: str) -> str:
    return LENGTH_MEASURES.get(fmt, LENGTH_MEASURES["messages"])


def _turns_and_calls(messages: list[dict[str, Any]], tail: list[dict[str, Any]]) -> tuple[int, int, list[str]]:
    """(assistant turns, tool calls, the tools called in order, leaving out calls whose result was
    an error, in the view or in its `tail`). Calls of a turn the environment rejected were never
    run and are not counted."""
    failed = failed_call_ids([*messages, *tail])
    turns = 0
    called = []
    for m in messages:
        if m["role"] == "assistant":
            turns += 1
            if not m.get("invalid"):
                called.extend(m.get("tool_calls") or ())
    return turns, len(called), [c["name"] for c in called if c.get("id") not in failed]


class CardStats:
    """Streaming statistics of an export (memory bounded by distinct values, not by samples).

    A synthetic sample is counted as one tuple of what the card breaks it down by, and its tools
    as one tuple of the tools it called: the counters by scenario, task type, perspective, split,
    success, turns and calls, and by tool and transition, are made from those when the card asks
    (:meth:`fold`; also every FOLD_AT distinct tuples), so a sample costs one count, not one per
    counter and tool."""

    FOLD_AT = 4096

    def __init__(self, fmt: str = "trl") -> None:
        """`fmt`: the format of the lines counted (the unit of their lengths: :func:`sample_characters`)."""
        self.chars_per_token = chars_per_token(fmt)
        self.by: dict[str, Counter[str]] = {k: Counter() for k in ("scenario", "task_type", "perspective", "split",
                                                                    "source")}
        self.success: Counter[str] = Counter()
        self.score_bins = [0] * 11
        self.score_sum = 0.0
        self.scorer_sum: Counter[str] = Counter()
        self.scorer_n: Counter[str] = Counter()
        self.turns: Counter[int] = Counter()
        self.tool_calls: Counter[int] = Counter()
        self.tools_used: dict[str, Counter[str]] = {}
        self.transitions_used: dict[str, Counter[tuple[str, str]]] = {}
        self.offered: dict[str, dict[str, Any]] = {}
        self.filtered: Counter[str] = Counter()
        """Samples left out, by reason (a record left out counts the samples it would have given)."""
        self.malformed_records = 0
        """Records skipped as not valid trajectories, and shard lines that hold no record (their samples
        cannot be told)."""
        self.samples = 0
        self.mix: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}
        self._groups: Counter[tuple[Any, ...]] = Counter()
        """(scenario, task type, perspective, split, success, turns, calls) of synthetic samples; None
        for the last three: an external sample."""
        self._sequences: Counter[tuple[str, tuple[str, ...]]] = Counter()
        """(world, the tools called in order) of synthetic samples."""
        self.characters: dict[str, Lengths] = {}
        """Characters per sample (:func:`sample_characters`), by scenario (``external``: --mix)."""
        self.tokens: dict[str, Lengths] = {}
        """Tokens per sample, by scenario, when the export counts them (--tokenize)."""
        self._score_shape: tuple[Any, ...] = ()
        self._score_totals: list[Any] | None = None
        self._score_samples = 0

    def add_run(self, run: RunInfo) -> None:
        """Record the tools a run offers its assistant side (the coverage denominator)."""
        names = sorted({t for role, spec in run.scenario.roles.items() if spec.kind == "assistant" for t in spec.tools})
        entry = self.offered.setdefault(run.scenario.world.type, {"tools": set(), "edges": set()})
        entry["tools"].update(names)
        graph = run.world_cls.tool_transitions(names)
        entry["edges"].update((a, b) for a, b in graph.edges)

    def add(self, sample: Sample, split: str, turns: int | None = None, characters: int | None = None,
            tokens: int | None = None) -> None:
        """Count a written sample; `turns`: the assistant turns of its line as written (a format that
        splits parallel calls writes one turn per call), else those of its messages; `characters`:
        the line's length (:func:`sample_characters`), else that of the sample's ``--format trl``
        messages (what a DPO side writes: prompt + completion); `tokens`: its token count, if known."""
        self.samples += 1
        scenario = str(sample.provenance["scenario"]) if sample.synthetic else "external"
        if characters is None:
            characters = messages_characters(trl_messages(sample.messages, sample.tail), sample.tools_openai)
        lengths = self.characters.get(scenario)
        if lengths is None:
            lengths = self.characters[scenario] = Lengths(TRAINER_MAX_LENGTH * self.chars_per_token)
        lengths.add(characters)
        if tokens is not None:
            lengths = self.tokens.get(scenario)
            if lengths is None:
                lengths = self.tokens[scenario] = Lengths(TRAINER_MAX_LENGTH)
            lengths.add(tokens)
        if not sample.synthetic:  # (its provenance has "" for scenario and task type: no scenario ran it)
            self._count(("external", "external", sample.perspective, split, None, None, None))
            return
        prov = sample.provenance
        where = (scenario, str(prov["task_type"]), sample.perspective, split)
        scores = sample.scores
        value = float(scores.get("value", 0.0))
        self.score_bins[tenth(value)] += 1
        self.score_sum += value
        shape = (*scores, *map(type, scores.values()))
        if shape != self._score_shape:
            self._score_layout(shape, scores)
        if self._score_totals is not None:  # each scorer's running total, in the scores' order
            self._score_totals = list(map(add, self._score_totals, scores.values()))
            self._score_samples += 1
        else:
            for name, v in scores.items():
                if name != "value" and name != "passed" and isinstance(v, (int, float)):  # (as scorer_values)
                    self.scorer_sum[name] += v
                    self.scorer_n[name] += 1
        rendered = sample.rendered
        if rendered is not None:
            in_view, calls, sequence = rendered.turns, rendered.calls, rendered.sequence
        else:
            in_view, calls, sequence = _turns_and_calls(sample.messages, sample.tail)
        self._count((*where, bool(sample.success), in_view if turns is None else turns, calls))
        if sequence:
            self._sequences[(sample.world, tuple(sequence))] += 1
            if len(self._sequences) > self.FOLD_AT:
                self.fold()

    def _score_layout(self, shape: tuple[Any, ...], scores: dict[str, Any]) -> None:
        """Samples whose scores have `shape` (names, then value types) come next: when all are plain
        numbers, their totals are kept as one list, added to in one step per sample, starting from
        the totals so far (the same additions in the same order as one per scorer and sample)."""
        self._settle_scores()
        self._score_shape = shape
        if all(t in (int, float, bool) for t in shape[len(scores):]):
            self._score_totals = [self.scorer_sum.get(name, 0) for name in scores]
        else:
            self._score_totals = None

    def _settle_scores(self) -> None:
        """Move the running totals into scorer_sum and scorer_n."""
        totals, n = self._score_totals, self._score_samples
        if totals is not None and n:
            for name, total in zip(self._score_shape, totals):
                if name != "value" and name != "passed":
                    self.scorer_sum[name] = total
                    self.scorer_n[name] += n
        self._score_shape, self._score_totals, self._score_samples = (), None, 0

    def _count(self, group: tuple[Any, ...]) -> None:
        self._groups[group] += 1
        if len(self._groups) > self.FOLD_AT:
            self.fold()

    def fold(self) -> None:
        """Bring the counters up to date with the samples counted so far."""
        self._settle_scores()
        by = self.by
        for (scenario, task_type, perspective, split, success, turns, calls), n in self._groups.items():
            by["scenario"][scenario] += n
            by["task_type"][task_type] += n
            by["perspective"][perspective] += n
            by["split"][split] += n
            if success is None:
                by["source"]["external"] += n
                continue
            by["source"]["synthetic"] += n
            self.success["success" if success else "failure"] += n
            self.turns[turns] += n
            self.tool_calls[calls] += n
        self._groups.clear()
        for (world, sequence), n in self._sequences.items():
            used = self.tools_used.get(world)
            if used is None:
                used = self.tools_used[world] = Counter()
                self.transitions_used[world] = Counter()
            edges = self.transitions_used[world]
            prev = None
            for name in sequence:
                used[name] += n
                if prev is not None:
                    edges[(prev, name)] += n
                prev = name
        self._sequences.clear()

    def coverage(self) -> dict[str, Any]:
        self.fold()
        out = {}
        for world, offered in sorted(self.offered.items()):
            used = self.tools_used.get(world, Counter())
            edges_used = self.transitions_used.get(world, Counter())
            tools = sorted(offered["tools"])
            edges = sorted(offered["edges"])
            out[world] = {
                "tools": {t: used.get(t, 0) for t in tools},
                "tools_covered": sum(1 for t in tools if used.get(t)),
                "tools_total": len(tools),
                "never_exercised_tools": [t for t in tools if not used.get(t)],
                "transitions": {f"{a} -> {b}": edges_used.get((a, b), 0) for a, b in edges},
                "transitions_covered": sum(1 for e in edges if edges_used.get(e)),
                "transitions_total": len(edges),
                "never_exercised_transitions": [f"{a} -> {b}" for a, b in edges if not edges_used.get((a, b))],
            }
        return out

    def lengths(self, scenario: str | None = None) -> dict[str, Any]:
        """Characters and tokens per sample (of all samples counted, or of one scenario's): tokens as
        counted, else estimated from the characters (:data:`CHARS_PER_TOKEN`, ``estimated`` true).
        ``longer_than_1024``: samples over :data:`TRAINER_MAX_LENGTH` tokens (estimated alike)."""
        per = self.chars_per_token
        characters, tokens = Lengths(TRAINER_MAX_LENGTH * per), Lengths(TRAINER_MAX_LENGTH)
        for name, part in self.characters.items():
            if scenario is None or name == scenario:
                characters.merge(part)
        for name, part in self.tokens.items():
            if scenario is None or name == scenario:
                tokens.merge(part)
        if tokens.n and tokens.n == characters.n:
            counted = {**tokens.summary(), "estimated": False, f"longer_than_{TRAINER_MAX_LENGTH}": tokens.over}
        else:
            counted = {**characters.summary(per), "estimated": bool(characters.n),
                       f"longer_than_{TRAINER_MAX_LENGTH}": characters.over}
        return {"characters_per_sample": characters.summary(), "tokens_per_sample": counted}

    def outcomes(self) -> dict[str, Any]:
        """Success, scores, turns and tool calls of the synthetic samples counted, and the lengths of
        all samples counted (:meth:`lengths`)."""
        self.fold()
        synth = sum(self.success.values())
        return {
            "success_rate": round(self.success["success"] / synth, 6) if synth else None,
            "mean_score": round(self.score_sum / synth, 6) if synth else None,
            "score_histogram": {f"{i / 10:.1f}": n for i, n in enumerate(self.score_bins) if n},
            "scorer_means": {k: round(self.scorer_sum[k] / self.scorer_n[k], 6) for k in sorted(self.scorer_n)},
            "assistant_turns_per_sample": _dist(self.turns),
            "tool_calls_per_sample": _dist(self.tool_calls),
            **self.lengths(),
        }

    def as_dict(self, command: str, fmt: str, outputs: dict[str, str], duplicates: dict[str, int]) -> dict[str, Any]:
        self.fold()
        return {
            "format": fmt,
            "command": json_text(command),
            "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "simworld_version": simworld.__version__,
            "outputs": {k: json_text(v) for k, v in outputs.items()},
            "samples": self.samples,
            "counts": {k: dict(sorted(v.items())) for k, v in self.by.items()},
            **self.outcomes(),
            "length_measure": {"characters": length_measure(fmt),
                               "tokens": "counted with Meta's Llama 3 tokenizer (--tokenize)" if self.tokens else
                               f"estimated as characters / {self.chars_per_token}, rounded up, meant to err long "
                               "(--format llama3 --tokenize counts them)"},
            "lengths_by_scenario": {name: self.lengths(name) for name in sorted(self.characters)},
            "coverage": self.coverage(),
            "filtered": dict(sorted(self.filtered.items())),
            "malformed_records_skipped": self.malformed_records,
            "duplicates_removed": duplicates,
            "mix": self.mix,
            **self.extra,
        }


def _table(title: str, rows: dict[str, Any]) -> list[str]:
    if not rows:
        return []
    lines = [f"| {title} | samples |", "| --- | ---: |"]
    lines += [f"| {k} | {v:,} |" for k, v in rows.items()]
    return lines + [""]


def render_markdown(card: dict[str, Any]) -> str:
    """A person's view of the card."""
    out = ["# Dataset card", "", f"Produced by `{card['command']}` (simworld {card['simworld_version']}, "
           f"{card['created']}).", "", f"Format: **{card['format']}**; samples: **{card['samples']:,}**.", ""]
    for name, path in card["outputs"].items():
        out.append(f"- {name}: `{path}`")
    out.append("")
    for key, title in (("split", "split"), ("scenario", "scenario"), ("task_type", "task type"),
                       ("perspective", "perspective"), ("source", "source")):
        out += _table(title, card["counts"].get(key, {}))
    out += ["## Outcomes and scores", ""]
    if "dpo" in card:
        out += ["Of the chosen side of each pair (both sides are compared under *Preference pairs*).", ""]
    if card["success_rate"] is not None:
        out.append(f"Success rate: {card['success_rate']:.1%}")
        out.append("")
    if card["score_histogram"]:
        out += ["| mean score | samples |", "| --- | ---: |"]
        out += [f"| {k} | {v:,} |" for k, v in card["score_histogram"].items()]
        out.append("")
    if card["scorer_means"]:
        out += ["| scorer | mean |", "| --- | ---: |"]
        out += [f"| {k} | {v:.3f} |" for k, v in card["scorer_means"].items()]
        out.append("")
    for key, title in (("assistant_turns_per_sample", "Assistant turns per sample"),
                       ("tool_calls_per_sample", "Tool calls per sample")):
        d = card[key]
        if d.get("samples"):
            out.append(f"{title}: min {d['min']}, mean {d['mean']}, p50 {d['p50']}, p90 {d['p90']}, max {d['max']}")
    out.append("")
    out += _sample_length(card)
    out += ["## Tool coverage", ""]
    for world, cov in card["coverage"].items():
        out.append(f"World **{world}**: {cov['tools_covered']}/{cov['tools_total']} tools and "
                   f"{cov['transitions_covered']}/{cov['transitions_total']} tool-to-tool transitions exercised.")
        out.append("")
        out += ["| tool | successful calls |", "| --- | ---: |"]
        out += [f"| {t} | {n:,} |" for t, n in cov["tools"].items()]
        out.append("")
        if cov["never_exercised_tools"]:
            out.append("Never exercised tools: " + ", ".join(cov["never_exercised_tools"]))
            out.append("")
        if cov["never_exercised_transitions"]:
            out.append("Never exercised transitions: " + ", ".join(cov["never_exercised_transitions"]))
            out.append("")
    out += ["## Curation", ""]
    dup = card["duplicates_removed"]
    out.append(f"Duplicates removed: {dup.get('exact', 0):,} exact, {dup.get('near', 0):,} near.")
    if card["filtered"]:
        out.append("Samples filtered out: " + ", ".join(f"{k}: {v:,}" for k, v in card["filtered"].items()) + ".")
    for problem in card.get("score_files_unreadable", ()):
        out.append(f"Score file unreadable, scores computed from the records: {problem}.")
    for path, names in card.get("score_files_of_other_scorers", {}).items():
        out.append(f"Score file by other scorers ({', '.join(names) or 'none'}) than requested, scores computed "
                   f"from the records: {path}.")
    if card.get("malformed_records_skipped"):
        out.append("Records skipped as not valid trajectories (or lines that hold no record): "
                   f"{card['malformed_records_skipped']:,}.")
    if card.get("call_texts_left_out"):
        out.append(f"Texts of turns that also call a tool left out (they hold `<tool_call>`): "
                   f"{card['call_texts_left_out']:,}.")
    if card.get("invalid_turns_left_out"):
        out.append(f"Assistant turns the environment did not take (rejected, or no text and no call) left out "
                   f"with the notices answering them: {card['invalid_turns_left_out']:,}.")
    if "failed_calls_masked" in card:
        out.append(f"Failed tool calls kept in the text and out of the loss (--mask-failed-calls): "
                   f"{card['failed_calls_masked']:,}.")
    for m in card["mix"]:
        ran_out = f"; the file ran out, {m['wanted']:,} were asked for" if m.get("exhausted") else ""
        left_out = f"; {m['left_out']:,} of its conversations left out as duplicates or filtered" \
            if m.get("left_out") else ""
        out.append(f"Mixed in `{m['file']}`: {counted(m['samples'], 'sample')} ({m['achieved']:.1%} of the output, "
                   f"{m['requested']:.1%} requested{ran_out}{left_out}), tagged synthetic: false.")
    out.append("")
    if "dpo" in card:
        out += _preference_pairs(card["dpo"])
    return "\n".join(out)


def _length_row(name: str, d: dict[str, Any]) -> str:
    return f"| {name} | {d['samples']:,} | {d['min']:,} | {d['p50']:,} | {d['p90']:,} | {d['max']:,} |"


def _sample_length(card: dict[str, Any]) -> list[str]:
    """The card's *Sample length* section: characters and tokens per sample, and how they sit with
    trainers' default ``max_length`` (the usage warning)."""
    chars, tokens = card["characters_per_sample"], card["tokens_per_sample"]
    if not chars.get("samples"):
        return []
    measure = card["length_measure"]
    estimated = tokens["estimated"]
    unit = "tokens (estimated)" if estimated else "tokens"
    out = ["## Sample length", "",
           f"Characters {measure['characters']}. Tokens: {measure['tokens']}. p50 and p90 are within 0.4%.", "",
           "| | samples | min | p50 | p90 | max |", "| --- | ---: | ---: | ---: | ---: | ---: |",
           _length_row("characters", chars), _length_row(unit, tokens)]
    by_scenario = card.get("lengths_by_scenario", {})
    if len(by_scenario) > 1:
        for name, d in by_scenario.items():
            out.append(_length_row(f"{name}: {unit}", d["tokens_per_sample"]))
    out.append("")
    key = f"longer_than_{TRAINER_MAX_LENGTH}"
    over, longest = tokens[key], tokens["max"]
    if over == tokens["samples"]:
        how_many = "every sample is"
    else:
        how_many = f"{over:,} of {counted(tokens['samples'], 'sample')} {'is' if over == 1 else 'are'}"
    rejected = card.get("dpo", {}).get("rejected", {}).get("tokens_per_sample", {})
    if rejected.get("samples"):  # a pair is cut where either side is
        over, longest = max(over, rejected[key]), max(longest, rejected["max"])
        how_many = (f"of {counted(tokens['samples'], 'pair')}, {tokens[key]:,} chosen and {rejected[key]:,} "
                    "rejected sides (prompt + completion) are")
    about = "about " if estimated else ""
    if over:
        out += [f"**Warning: {how_many} longer than {TRAINER_MAX_LENGTH:,} tokens"
                f"{' (estimated)' if estimated else ''}, the default `max_length` of TRL's `SFTConfig` and "
                f"`DPOConfig`** (p50 {about}{tokens['p50']:,}, max {about}{longest:,} tokens). With that default "
                f"TRL keeps the first {TRAINER_MAX_LENGTH:,} tokens of each (`truncation_mode=\"keep_start\"`): "
                "the rest is not trained on, and a sample whose system prompt and tool definitions fill them "
                f"keeps no assistant token at all. Set `max_length` to at least the longest sample ({about}"
                f"{longest:,} tokens), or `None`, or filter the longest out.", ""]
    else:
        out += [f"Every sample fits in {TRAINER_MAX_LENGTH:,} tokens{' (estimated)' if estimated else ''}, the "
                f"default `max_length` of TRL's `SFTConfig` and `DPOConfig` (longest: {about}{longest:,}).", ""]
    return out


def _preference_pairs(dpo: dict[str, Any]) -> list[str]:
    out = ["## Preference pairs", "",
           f"{counted(dpo['pairs'], 'pair')} from {counted(dpo['groups'], 'group')} (trajectories of one task "
           f"instance, seed and perspective against the same other agents), {dpo['groups_with_a_score_gap']:,} of "
           f"them with a score gap. Left out: {dpo.get('skipped_counterpart_differs', 0):,} whose score gap lies only "
           f"between sides played against other agents, "
           f"{dpo['skipped_identical']:,} whose conversations do not part, {dpo['skipped_no_common_prompt']:,} "
           f"with no prompt in common, {dpo['skipped_diverge_on_other_party']:,} that part on another party's turn, "
           f"{dpo.get('skipped_no_valid_assistant_turn', 0):,} with a side whose every assistant turn was invalid.",
           ""]
    chosen, rejected = dpo.get("chosen"), dpo.get("rejected")
    if not dpo["pairs"] or not chosen or not rejected:
        return out

    def rate(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    rows = [("success rate", rate(chosen["success_rate"]), rate(rejected["success_rate"])),
            ("mean score", num(chosen["mean_score"]), num(rejected["mean_score"]))]
    for name in sorted(set(chosen["scorer_means"]) | set(rejected["scorer_means"])):
        rows.append((f"{name} (mean)", num(chosen["scorer_means"].get(name)), num(rejected["scorer_means"].get(name))))
    for key, title in (("assistant_turns_per_sample", "assistant turns (mean)"),
                       ("tool_calls_per_sample", "tool calls (mean)")):
        rows.append((title, str(chosen[key].get("mean", "-")), str(rejected[key].get("mean", "-"))))
    if "characters_per_sample" in chosen and "characters_per_sample" in rejected:
        rows.append(("characters, prompt + completion (max)", f"{chosen['characters_per_sample'].get('max', 0):,}",
                     f"{rejected['characters_per_sample'].get('max', 0):,}"))
    out += ["| | chosen | rejected |", "| --- | ---: | ---: |"] + [f"| {a} | {b} | {c} |" for a, b, c in rows] + [""]
    if dpo.get("score_gap_histogram"):
        out += ["| score gap (chosen - rejected) | pairs |", "| --- | ---: |"]
        out += [f"| {k} | {v:,} |" for k, v in dpo["score_gap_histogram"].items()] + [""]
    if dpo.get("rejected_lower_on"):
        out += ["Pairs whose rejected side scored lower, by scorer: "
                + ", ".join(f"{k} {v:,}" for k, v in dpo["rejected_lower_on"].items()) + ".", ""]
    return out


def jsonl_stem(out: Path) -> str:
    """The name of an export's file without ``.jsonl``: what the files beside it are named after."""
    return out.name[:-len(".jsonl")] if out.name.endswith(".jsonl") else out.name


def card_paths(out: Path) -> tuple[Path, Path]:
    stem = jsonl_stem(out)
    return out.with_name(stem + ".card.md"), out.with_name(stem + ".card.json")


def card_files(out: Path, card: dict[str, Any]) -> dict[Path, bytes]:
    """The card's files beside the export `out` (``.card.md`` first) and their bytes: the export
    writes them together with its data, so that a card never describes other data than its own."""
    md, js = card_paths(out)
    return {md: render_markdown(card).encode(), js: orjson.dumps(card, option=orjson.OPT_INDENT_2) + b"\n"}
