"""The dataset card's sample lengths: characters per sample in every format (what a trainer tokenizes
of each line), tokens per sample (counted with --tokenize, else an estimate that says so), and the
card's warning when samples are longer than TRL's default ``max_length``.

The expected numbers are computed here from the written lines, independently of the card's code:
min, max, mean and the count over the limit exactly, p50 and p90 to the card's stated 0.4%."""

from __future__ import annotations

import json
import math
import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import test_export_worlds as worlds
from simworld.export import ExportOptions, export_runs
from simworld.export.card import Lengths
from test_replay import cli

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 1024  # TRL's SFTConfig / DPOConfig default max_length
PER_TOKEN = {"llama3": 4, "openai": 3, "trl": 3, "sharegpt": 3, "dpo": 3}  # the card's documented estimate


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lengths")
    retail = worlds.scenario_of(ROOT / "scenarios" / "retail" / "mixed.yaml")
    return {"ledger": worlds.make_run(root / "ledger", worlds.ledger_data(), 30),
            "sloppy": worlds.make_run(root / "sloppy", worlds.scenario_cases()[1].values[0], 30),
            "retail": worlds.make_run(root / "retail", retail, 4)}


def export(runs: list[Path], out: Path, **kw: Any) -> Any:
    return export_runs([str(r) for r in runs], ExportOptions(out=str(out), dedup=False, **kw))


def _call_chars(call: dict[str, Any]) -> int:
    fn = call["function"]
    args = fn["arguments"]
    return len(fn["name"]) + len(args if isinstance(args, str) else json.dumps(args))


def _messages_chars(messages: list[dict[str, Any]], tools: Any) -> int:
    return (len(json.dumps(tools)) if tools else 0) + sum(
        len(m.get("content") or "") + sum(_call_chars(c) for c in m.get("tool_calls") or ()) for m in messages)


def chars_of(fmt: str, line: dict[str, Any]) -> int:
    """What a trainer tokenizes of a line, in characters, as docs/cli.md defines it per format."""
    if fmt == "llama3":
        return len(line["text"])
    if fmt == "sharegpt":
        return len(line["system"]) + sum(len(t["value"]) for t in line["conversations"]) + len(line["tools"])
    return _messages_chars(line["messages"], line.get("tools"))


def percentile(values: list[int], p: float) -> int:
    """The smallest value with at least p of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def check_distribution(dist: dict[str, Any], values: list[int]) -> None:
    assert dist["samples"] == len(values)
    assert (dist["min"], dist["max"]) == (min(values), max(values))
    assert dist["mean"] == pytest.approx(sum(values) / len(values), abs=1e-3)
    for key, p in (("p50", 0.5), ("p90", 0.9)):
        exact = percentile(values, p)
        assert abs(dist[key] - exact) <= 0.004 * exact, (key, dist[key], exact)


def check_estimate(dist: dict[str, Any], chars: list[int], per: int) -> None:
    assert dist["estimated"] is True
    assert (dist["min"], dist["max"]) == (-(-min(chars) // per), -(-max(chars) // per))
    assert dist[f"longer_than_{LIMIT}"] == sum(1 for c in chars if -(-c // per) > LIMIT)


@pytest.mark.parametrize("fmt", ["llama3", "openai", "trl", "sharegpt"])
def test_characters_per_sample_are_those_of_each_written_line(runs, tmp_path, fmt):
    out = tmp_path / "o.jsonl"
    res = export([runs["ledger"], runs["retail"]], out, fmt=fmt)
    lines = worlds.read_samples(out)
    chars = [chars_of(fmt, line) for line in lines]
    card = res.card
    check_distribution(card["characters_per_sample"], chars)
    check_estimate(card["tokens_per_sample"], chars, PER_TOKEN[fmt])
    by_scenario: dict[str, list[int]] = {}
    for line, n in zip(lines, chars):
        by_scenario.setdefault(line["provenance"]["scenario"], []).append(n)
    assert set(card["lengths_by_scenario"]) == set(by_scenario) == {"ledger_deposit", "retail_mixed"}
    for name, values in by_scenario.items():
        check_distribution(card["lengths_by_scenario"][name]["characters_per_sample"], values)
        check_estimate(card["lengths_by_scenario"][name]["tokens_per_sample"], values, PER_TOKEN[fmt])
    assert "estimated as characters / " in card["length_measure"]["tokens"]
    # Retail samples (a long policy and 15 tool definitions) are past the limit; the ledger's are not.
    assert card["lengths_by_scenario"]["retail_mixed"]["tokens_per_sample"][f"longer_than_{LIMIT}"] == \
        len(by_scenario["retail_mixed"])
    assert card["lengths_by_scenario"]["ledger_deposit"]["tokens_per_sample"][f"longer_than_{LIMIT}"] == 0
    md = (tmp_path / "o.card.md").read_text()
    over = len(by_scenario["retail_mixed"])
    assert f"**Warning: {over:,} of {len(lines):,} samples are longer than 1,024 tokens (estimated)" in md
    assert f"max about {-(-max(chars) // PER_TOKEN[fmt]):,} tokens" in md and "`max_length`" in md


def test_tokenize_counts_the_tokens_of_each_line(runs, tmp_path):
    out = tmp_path / "t.jsonl"
    res = export([runs["ledger"], runs["retail"]], out, fmt="llama3", tokenize=True)
    lines = worlds.read_lines(out)
    tokens = [len(line["tokens"]) for line in lines]
    dist = res.card["tokens_per_sample"]
    check_distribution(dist, tokens)
    assert dist["estimated"] is False and dist[f"longer_than_{LIMIT}"] == sum(1 for n in tokens if n > LIMIT) > 0
    check_distribution(res.card["characters_per_sample"], [len(line["text"]) for line in lines])
    assert res.card["length_measure"]["tokens"] == "counted with Meta's Llama 3 tokenizer (--tokenize)"
    md = (tmp_path / "t.card.md").read_text()
    assert f"max {max(tokens):,} tokens" in md and "(estimated)" not in md and "**Warning:" in md


def test_samples_that_fit_get_no_warning(runs, tmp_path):
    res = export([runs["ledger"]], tmp_path / "l.jsonl", fmt="trl")
    tokens = res.card["tokens_per_sample"]
    assert tokens[f"longer_than_{LIMIT}"] == 0 and tokens["max"] <= LIMIT
    md = (tmp_path / "l.card.md").read_text()
    assert "**Warning" not in md
    assert f"Every sample fits in 1,024 tokens (estimated), the default `max_length` of TRL's" in md


def test_mixed_in_conversations_are_measured_too(runs, tmp_path):
    ext = tmp_path / "real.jsonl"
    convs = [{"messages": [{"role": "user", "content": "hello " * (i + 1)},
                           {"role": "assistant", "content": "hi " * (3 * i + 1)}]} for i in range(40)]
    ext.write_text("".join(json.dumps(c) + "\n" for c in convs))
    out = tmp_path / "m.jsonl"
    res = export([runs["ledger"]], out, fmt="openai", mix=(f"{ext}:0.3",))
    lines = worlds.read_samples(out)
    external = [chars_of("openai", x) for x in lines if not x["synthetic"]]
    assert external and res.card["mix"][0]["samples"] == len(external)
    check_distribution(res.card["lengths_by_scenario"]["external"]["characters_per_sample"], external)
    check_distribution(res.card["characters_per_sample"], [chars_of("openai", x) for x in lines])


def test_dpo_measures_prompt_and_completion_of_each_side(runs, tmp_path):
    out = tmp_path / "d.jsonl"
    res = export([runs["ledger"], runs["sloppy"]], out, fmt="dpo")
    pairs = worlds.read_samples(out)
    assert pairs and len(pairs) == res.card["dpo"]["pairs"]
    sides = {side: [_messages_chars(p["prompt"] + p[side], p.get("tools")) for p in pairs]
             for side in ("chosen", "rejected")}
    check_distribution(res.card["characters_per_sample"], sides["chosen"])
    for side, chars in sides.items():
        check_distribution(res.card["dpo"][side]["characters_per_sample"], chars)
        check_estimate(res.card["dpo"][side]["tokens_per_sample"], chars, PER_TOKEN["dpo"])
    md = (tmp_path / "d.card.md").read_text()
    assert "## Sample length" in md and "characters, prompt + completion (max)" in md
    res = cli("export", str(runs["ledger"]), str(runs["sloppy"]), "--format", "dpo", "--out", str(out))
    assert res.returncode == 0, res.stderr
    tokens = json.loads((tmp_path / "d.card.json").read_text())["tokens_per_sample"]
    assert f"tokens per pair (prompt + chosen) (estimated): p50 ~{tokens['p50']:,}, max ~{tokens['max']:,}\n" \
        in res.stdout


def test_the_summary_line_gives_tokens_per_sample(runs, tmp_path):
    res = cli("export", str(runs["retail"]), "--format", "trl", "--out", str(tmp_path / "c.jsonl"))
    assert res.returncode == 0, res.stderr
    card = json.loads((tmp_path / "c.card.json").read_text())
    tokens = card["tokens_per_sample"]
    n = tokens["samples"]
    assert (f"tokens per sample (estimated): p50 ~{tokens['p50']:,}, max ~{tokens['max']:,}; "
            f"{n:,} samples longer than 1,024, TRL's default max_length (see the card)") in res.stdout


def test_lengths_sketch_percentiles_and_bounded_memory():
    rng = random.Random(7)
    values = [int(rng.lognormvariate(8, 1.5)) for _ in range(20_000)] + list(range(300))
    sketch = Lengths(4096)
    for v in values:
        sketch.add(v)
    check_distribution(sketch.summary(), values)
    assert sketch.over == sum(1 for v in values if v > 4096)
    halves = Lengths(4096), Lengths(4096)
    for i, v in enumerate(values):
        halves[i % 2].add(v)
    halves[0].merge(halves[1])
    assert halves[0].summary() == sketch.summary() and halves[0].over == sketch.over
    # Memory is bounded by the range of lengths (128 bins an octave), not by how many are counted.
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    big = Lengths(4096)
    for _ in range(50_000):
        big.add(rng.randrange(1, 1 << 20))
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(big.bins) <= 256 + 128 * 13 and grown < 200_000
