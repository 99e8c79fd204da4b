"""The export's fast paths against plain references written from their definitions: the SimHash
kernel, the near-duplicate index, the exact-duplicate key (XXH64), deduplication of a whole export,
the card's running score totals and the record check's shape cache. A fast path that drifts from
its reference changes which samples an export keeps or what its card says; these tests catch it."""

from __future__ import annotations

import datetime as dt
import random
import re
from collections import Counter

import orjson
import pytest

import test_export_worlds as worlds
from simworld.export import ExportOptions, export_runs
from simworld.export.card import CardStats
from simworld.export.curation import SHINGLE, Deduplicator, NearDuplicateIndex, simhash, xxh64
from simworld.export.pipeline import _well_typed
from simworld.export.source import Sample
from simworld.runio import iter_records

M64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def reference_simhash(text: str) -> int:
    """The SimHash of curation's docstring, plainly: lower-cased UTF-8, words of [0-9a-z_] and
    non-ASCII bytes hashed with FNV-1a, each window of 5 words (or all words, when fewer) the number
    sum(h * 1000003^k), two splitmix64 hashes of it as 128 bits, a bit set when most windows set it."""
    data = text.lower().encode("utf-8", "surrogatepass")
    hashes = []
    for word in re.findall(rb"[0-9a-z_\x80-\xff]+", data):
        h = 0xCBF29CE484222325
        for c in word:
            h = ((h ^ c) * 0x100000001B3) & M64
        hashes.append(h)
    windows = [hashes[i:i + SHINGLE] for i in range(len(hashes) - SHINGLE + 1)] or ([hashes] if hashes else [])
    ones = [0] * 128
    for window in windows:
        s = 0
        for h in window:
            s = (s * 1000003 + h) & M64
        bits = (_mix64(s ^ 0x9E3779B97F4A7C15) << 64) | _mix64(s)
        for bit in range(128):
            ones[bit] += (bits >> bit) & 1
    return sum(1 << bit for bit in range(128) if 2 * ones[bit] > len(windows))


def _texts(rng: random.Random, n: int) -> list[str]:
    alphabet = "abcXYZ019_ -.,\n\t\u00c9\u00e9\u00df\u0130K\u212a\U0001f600\u00c0Zz"  # (K: the Kelvin sign)
    out = ["", " ", "a", "A b", "one two three four", "one two three four five", "x " * 300, "\ud800 lone surrogate"]
    for _ in range(n):
        out.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 200))))
        words = ["".join(rng.choice("abcdefABC019_") for _ in range(rng.randrange(1, 8)))
                 for _ in range(rng.randrange(0, 60))]
        out.append(rng.choice([" ", "\n", ", "]).join(words))
    return out


def test_simhash_kernel_equals_its_definition():
    for text in _texts(random.Random(7), 150):
        assert simhash(text) == reference_simhash(text), text


class ReferenceIndex:
    """NearDuplicateIndex's search, plainly: per table, the most recent `max_chain` entries whose
    key lands in the query's bucket are compared; a fingerprint is stored when none is near."""

    def __init__(self, like: NearDuplicateIndex) -> None:
        self.like = like
        self.buckets: list[dict[int, list[int]]] = [{} for _ in range(like.TABLES)]
        self.fps: list[int] = []

    def seen(self, fp: int) -> bool:
        like = self.like
        where = []
        for t, positions in enumerate(like.positions.tolist()):
            key = t << 56
            for j, p in enumerate(positions):
                key |= ((fp >> p) & 1) << j
            bucket = _mix64(key) & ((1 << like.BUCKET_BITS) - 1)
            where.append(bucket)
            chain = self.buckets[t].get(bucket, [])
            if any((self.fps[e] ^ fp).bit_count() <= like.max_bits for e in chain[-like.MAX_CHAIN:]):
                return True
        for t, bucket in enumerate(where):
            self.buckets[t].setdefault(bucket, []).append(len(self.fps))
        self.fps.append(fp)
        return False


class CrowdedIndex(NearDuplicateIndex):
    """Few buckets and short chains: keys share buckets and chains overflow, as a huge export's would."""

    BUCKET_BITS = 3
    MAX_CHAIN = 4


@pytest.mark.parametrize("index", [NearDuplicateIndex, CrowdedIndex])
def test_near_duplicate_index_equals_a_plain_search(index):
    rng = random.Random(11)
    fast = index(10)
    plain = ReferenceIndex(fast)
    centres = [rng.getrandbits(128) for _ in range(40)]
    verdicts = []
    for _ in range(3000):  # clusters: near and far neighbours of a few centres, and fresh ones
        fp = rng.choice(centres) if rng.random() < 0.8 else rng.getrandbits(128)
        for bit in rng.sample(range(128), rng.choice([0, 3, 8, 11, 14, 30])):
            fp ^= 1 << bit
        verdicts.append(fast.seen(fp))
        assert verdicts[-1] == plain.seen(fp), len(verdicts)
    assert 300 < sum(verdicts) < 2900  # both answers were given often


def test_exact_key_is_xxh64():
    # The reference vectors of xxHash's XXH64 (seed 0), one per code path: empty, short tails, a stripe.
    vectors = {b"": 0xEF46DB3751D8E999, b"a": 0xD24EC4F1A98C6E5B, b"abc": 0x44BC2CF5AD770999,
               b"Nobody inspects the spammish repetition": 0xFBCEA83C8A378BF1}
    for data, want in vectors.items():
        assert int(xxh64(data, 0)) == want, data
    dedup = Deduplicator(near=False)
    sample = _sample({"value": 1.0})
    assert dedup.keep(sample, b'"the text"', 5)
    assert not dedup.keep(sample, b'"the text"', 5) and dedup.removed_exact == 1
    assert dedup.keep(sample, b'"the text"', 6)  # another system message: another text
    assert dedup.keep(sample, b'"the text!"', 5)


def test_export_keeps_exactly_the_first_of_each_text_and_no_near_duplicate(tmp_path):
    """Deduplication of a whole llama3 export (the fast path: XXH64 of the text, SimHash of the
    conversation in one kernel call) against a plain pass over the lines of an export without it."""
    run = worlds.make_run(tmp_path / "run", worlds.ledger_data(), 80)  # 80 episodes over 50 accounts repeat
    export_runs([str(run)], ExportOptions(out=str(tmp_path / "all.jsonl"), dedup=False))
    lines = worlds.read_samples(tmp_path / "all.jsonl")
    for near in (False, True):
        res = export_runs([str(run)], ExportOptions(out=str(tmp_path / "d.jsonl"), near_dedup=near))
        texts, exact, near_removed, kept_fps = set(), 0, 0, []
        expected = []
        for line in lines:
            if line["text"] in texts:
                exact += 1
                continue
            texts.add(line["text"])
            conversation = "\n".join(_dedup_parts(line["messages"]))
            fp = reference_simhash(conversation)
            if near and any((fp ^ other).bit_count() <= 10 for other in kept_fps):
                near_removed += 1
                continue
            kept_fps.append(fp)
            expected.append(line["id"])
        assert [x["id"] for x in worlds.read_samples(tmp_path / "d.jsonl")] == expected
        assert res.card["duplicates_removed"] == {"exact": exact, "near": near_removed}
        assert exact > 0


def _dedup_parts(messages):
    for m in messages[1:]:  # (not the system message)
        yield m["content"]
        for c in m.get("tool_calls") or ():
            yield c["name"] + " " + orjson.dumps(c["arguments"]).decode()


def _sample(scores, success=True, perspective="clerk"):
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "ok"}]
    return Sample(id="s", perspective=perspective, messages=msgs, tools=[], tools_openai=[],
                  today=dt.date(2024, 1, 1), scores=scores, provenance={"scenario": "sc", "task_type": "t"},
                  success=success, world="w")


def test_card_score_totals_equal_one_addition_per_scorer_and_sample():
    rng = random.Random(3)
    shapes = [("a", "b", "value", "passed"), ("b", "a", "value", "passed"), ("a", "c", "value", "passed")]
    stats = CardStats()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for i in range(4000):
        names = rng.choice(shapes)
        scores = {}
        for name in names:
            kind = rng.random()
            scores[name] = (rng.random() / 3 if kind < 0.6 else rng.randrange(3) if kind < 0.8
                            else kind < 0.9 if name != "value" else 0.5)
        if i % 97 == 0:
            scores["note"] = "not a number"  # left out, as scorer_values leaves it
        stats.add(_sample(scores), "train")
        for name, v in scores.items():
            if name not in ("value", "passed") and isinstance(v, (int, float)):
                sums[name] = sums.get(name, 0) + v
                counts[name] = counts.get(name, 0) + 1
        if i % 1000 == 999:
            stats.outcomes()  # the card may be asked midway
    stats.fold()
    assert dict(stats.scorer_sum) == sums and dict(stats.scorer_n) == counts  # the same additions, in order
    assert stats.outcomes()["scorer_means"] == {k: round(sums[k] / counts[k], 6) for k in sorted(counts)}


def test_card_counts_folded_from_groups_equal_per_sample_counts():
    rng = random.Random(5)
    stats = CardStats()
    stats.FOLD_AT = 7  # fold often, midway through
    by_split: Counter[str] = Counter()
    by_perspective: Counter[str] = Counter()
    turns: Counter[int] = Counter()
    success = 0
    for _ in range(500):
        split, perspective, n = rng.choice(["train", "validation"]), rng.choice(["a", "b"]), rng.randrange(5)
        ok = rng.random() < 0.6
        stats.add(_sample({"value": 1.0}, success=ok, perspective=perspective), split, turns=n)
        by_split[split] += 1
        by_perspective[perspective] += 1
        turns[n] += 1
        success += ok
    card = stats.as_dict("cmd", "llama3", {}, {"exact": 0, "near": 0})
    assert card["counts"]["split"] == dict(sorted(by_split.items()))
    assert card["counts"]["perspective"] == dict(sorted(by_perspective.items()))
    assert stats.turns == turns and stats.tool_calls == Counter({0: 500})
    assert card["samples"] == 500 and card["success_rate"] == round(success / 500, 6)


def test_shape_cache_rechecks_a_record_whose_field_types_differ(tmp_path):
    record = next(iter_records(worlds.make_run(tmp_path / "run", worlds.ledger_data(), 2)))
    assert _well_typed(record)
    assert not _well_typed({**record, "seed": str(record["seed"])})
    assert not _well_typed({**record, "events": {}})
    assert not _well_typed({**record, "surprise": 1})
    assert _well_typed(dict(record))


def test_tool_call_json_equals_json_dumps_of_the_call():
    import json

    from simworld.llama3.format import tool_call_json

    rng = random.Random(9)
    for i in range(300):
        name = rng.choice(["make_offer", "get", 'odd "name"', "n\u00e9", f"tool_{i}"])
        args = {f"k{j}": rng.choice([1, -2.5, "x\u00e9\"\\", None, True, [1, {"a": "b"}], {}])
                for j in range(rng.randrange(4))}
        assert tool_call_json(name, args) == json.dumps({"type": "function", "name": name, "parameters": args})


def test_run_reader_read_straight_through_names_each_line_that_is_no_record_once(tmp_path):
    """A shard in episode order is read once more after the index pass, parsing lines in the reader;
    lines that are no record are each named once, whichever pass found them."""
    run = worlds.make_run(tmp_path / "run", worlds.ledger_data(), 4)
    shard = sorted(run.glob("trajectories-*.jsonl"))[0]
    lines = shard.read_bytes().splitlines()
    second = orjson.loads(lines[1])
    after = second["episode_id"] + "z"  # sorts between the second and third records: the file stays in order
    shard.write_bytes(b"\n".join([
        lines[0], lines[1],
        b'{"episode_index":1,"episode_id":"' + after.encode() + b'", broken',  # holds an id, is no JSON
        b'{"episode_index":1,"x":{"episode_id":"' + after.encode() + b'z"}}',  # JSON, its id only nested
        b"not json",
        lines[2], lines[3], b""]))
    problems: list[tuple[str, str]] = []
    got = [r["episode_id"] for r in iter_records(run, problems=problems)]
    assert got == [orjson.loads(line)["episode_id"] for line in lines]
    assert sorted(problems) == [("corrupt", f"{shard.name} line {n}: not a JSON record") for n in (3, 4, 5)]


def test_deduplicator_across_index_growth_equals_plain_sets():
    """Thousands of samples (the flat arrays grow several times between calls), exact repeats and
    near ones mixed in, against a plain set and the plain near-duplicate search."""
    rng = random.Random(2)
    words = [f"w{i}" for i in range(400)]
    fast = Deduplicator()
    keys: set[int] = set()
    plain = ReferenceIndex(NearDuplicateIndex(10))
    seen = []
    for i in range(3000):
        if seen and rng.random() < 0.1:  # an exact repeat
            key, text = rng.choice(seen)
        else:
            text = " ".join(rng.choice(words) for _ in range(60))
            if seen and rng.random() < 0.2:  # a near repeat: one word changed
                base = rng.choice(seen)[1].split()
                base[rng.randrange(len(base))] = "changed"
                text = " ".join(base)
            key = rng.getrandbits(63)
            seen.append((key, text))
        if key in keys:
            want = False
        else:
            keys.add(key)
            want = not plain.seen(reference_simhash(text))
        assert fast.keep_key(key, text) == want, i
    assert fast.removed_exact > 100 and fast.removed_near > 30
