"""Curation: filters, exact and near-duplicate removal, the train/validation split, external data.

* **Exact duplicates**: a 63-bit hash of what a trainer sees: for the llama3 export, XXH64 of the
  text after the system message, seeded by the system message's digest; else a hash of the
  conversation (roles, contents, tool calls, tools).
* **Near duplicates**: a 128-bit SimHash of the normalised conversation text (lower case, word
  5-gram shingles, system prompt left out: it is shared by a whole scenario), computed by a Numba
  kernel. Two samples are near duplicates when their SimHashes differ in at most `max_bits` bits
  (10 by default). On scripted retail conversations (~150 words), replacing one word moves the
  SimHash by 1-16 bits (median 7), while two different episodes are 34+ bits apart.
* Both indexes keep flat arrays (8 bytes per kept sample for exact, 176 for near), never samples,
  and a sample goes through both in one kernel call (:func:`_dedup`).
* **Split** by task instance: a hash of (world type, world fingerprint, task type, task instance
  id) decides the split, so all seeds, perspectives and scenarios of a task land on the same side.
* **External data** (`--mix FILE:FRACTION`): OpenAI chat fine-tuning JSONL, validated line by
  line, tagged ``synthetic: false``; their provenance and scores have the synthetic samples' keys
  and types (:data:`~simworld.export.source.EXTERNAL_PROVENANCE`,
  :data:`~simworld.export.source.UNSCORED`), so that a mixed export is one table.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numba
import numpy as np
import orjson

from simworld.errors import SimworldError
from simworld.export.source import Sample, dedup_call_text, external_provenance, json_text
from simworld.types import content_text

# ----------------------------------------------------------------------------------------------
# Hashing


def conversation_key(sample: Sample) -> int:
    """63-bit hash of everything a trainer sees of the sample (messages and tool names)."""
    body = orjson.dumps([sample.messages, [t["function"]["name"] for t in sample.tools_openai]],
                        option=orjson.OPT_SORT_KEYS)
    return int.from_bytes(hashlib.blake2b(body, digest_size=8).digest(), "little") >> 1


SHINGLE = 5
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True)
def _mix64(x: np.uint64) -> np.uint64:  # splitmix64 finaliser
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


# Byte k of _SPREAD[v] is bit k of v: adding _SPREAD[(h >> 8j) & 255] to one word counts bits
# 8j..8j+7 of h in its eight bytes at once (16 additions per shingle instead of 128).
_SPREAD = np.array([sum(((v >> k) & 1) << (8 * k) for k in range(8)) for v in range(256)], dtype=np.uint64)


@numba.njit(cache=True)
def _vote(acc: np.ndarray, s: np.uint64, spread: np.ndarray) -> None:
    a = _mix64(s)
    b = _mix64(s ^ _GOLDEN)
    m = np.uint64(255)
    for j in range(8):
        sh = np.uint64(8 * j)
        acc[j] += spread[(a >> sh) & m]
        acc[8 + j] += spread[(b >> sh) & m]


@numba.njit(cache=True)
def _flush(acc: np.ndarray, ones: np.ndarray) -> None:
    # Bit 8j+k of a is byte k of acc[j]; of b, byte k of acc[8+j] (b makes the high 64 bits).
    m = np.uint64(255)
    for j in range(16):
        w = acc[j]
        for k in range(8):
            ones[8 * j + k] += np.int64((w >> np.uint64(8 * k)) & m)
        acc[j] = 0


# A byte of the text as a word byte after lower-casing (0: not a word byte). Words are runs of
# [0-9a-z_] and non-ASCII bytes; "A".."Z" fold to "a".."z", so ASCII text is lower-cased here rather
# than by str.lower() (text with non-ASCII characters is lower-cased by Python first: Unicode rules).
_FOLD = np.array([c + 32 if 65 <= c <= 90 else c if (48 <= c <= 57 or 97 <= c <= 122 or c == 95 or c >= 128)
                  else 0 for c in range(256)], dtype=np.uint8)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_SHINGLE_BASE = np.uint64(1000003)


@numba.njit(cache=True)
def _simhash128(data: bytes, k: int, spread: np.ndarray, fold: np.ndarray) -> tuple[np.uint64, np.uint64]:
    """SimHash (hi, lo) of the word k-gram shingles of UTF-8 bytes (`fold` lower-cases ASCII);
    words are hashed with FNV-1a, a shingle is the base-1000003 number of its k word hashes (mod
    2^64, kept rolling). A bit is set when more than half of the shingles' hashes have it set."""
    acc = np.zeros(16, np.uint64)  # eight 8-bit counters per word: flushed every 255 shingles
    ones = np.zeros(128, np.int64)
    ring = np.zeros(k, np.uint64)  # the last k word hashes (0 before there are k)
    oldest_weight = np.uint64(1)
    for _ in range(k - 1):
        oldest_weight *= _SHINGLE_BASE
    at = 0
    s = np.uint64(0)
    words = 0
    votes = 0
    h = _FNV_OFFSET
    inword = False
    n = len(data)
    for i in range(n + 1):
        c = fold[data[i]] if i < n else np.uint8(0)
        if c:
            if not inword:
                h = _FNV_OFFSET
                inword = True
            h = (h ^ np.uint64(c)) * _FNV_PRIME
        elif inword:
            inword = False
            s = (s - ring[at] * oldest_weight) * _SHINGLE_BASE + h
            ring[at] = h
            at += 1
            if at == k:
                at = 0
            words += 1
            if words >= k:
                _vote(acc, s, spread)
                votes += 1
                if votes % 255 == 0:
                    _flush(acc, ones)
    if 0 < words < k:  # shorter than one shingle: the whole text is the shingle
        _vote(acc, s, spread)
        votes += 1
    _flush(acc, ones)
    hi = np.uint64(0)
    lo = np.uint64(0)
    for bit in range(64):
        if 2 * ones[bit] > votes:
            lo |= np.uint64(1) << np.uint64(bit)
        if 2 * ones[64 + bit] > votes:
            hi |= np.uint64(1) << np.uint64(bit)
    return hi, lo


def _shingle_bytes(text: str) -> bytes:
    """The bytes :func:`_simhash128` reads for `text` (ASCII is lower-cased by the kernel)."""
    return text.encode("ascii") if text.isascii() else text.lower().encode("utf-8", "surrogatepass")


def simhash(text: str) -> int:
    """128-bit SimHash of the word 5-gram shingles of `text` (lower-cased), as an int."""
    hi, lo = _simhash128(_shingle_bytes(text), SHINGLE, _SPREAD, _FOLD)
    return (int(hi) << 64) | int(lo)


def dedup_text(sample: Sample) -> str:
    """The sample's conversation without the system message: contents, and each call as its name
    and JSON arguments."""
    if sample.rendered is not None:
        return sample.rendered.dedup_text
    parts = []
    for m in sample.messages:
        if m["role"] == "system":
            continue
        parts.append(m["content"])
        for c in m.get("tool_calls") or ():
            parts.append(dedup_call_text(c["name"], c.get("arguments")))
    return "\n".join(parts)


_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_P4 = np.uint64(0x85EBCA77C2B2AE63)
_P5 = np.uint64(0x27D4EB2F165667C5)


@numba.njit(cache=True)
def _rotl(x: np.uint64, r: int) -> np.uint64:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@numba.njit(cache=True)
def _le64(data: bytes, i: int) -> np.uint64:
    v = np.uint64(0)
    for k in range(8):
        v |= np.uint64(data[i + k]) << np.uint64(8 * k)
    return v


@numba.njit(cache=True)
def _xxh_round(acc: np.uint64, lane: np.uint64) -> np.uint64:
    return _rotl(acc + lane * _P2, 31) * _P1


@numba.njit(cache=True)
def _xxh_merge(acc: np.uint64, v: np.uint64) -> np.uint64:
    return (acc ^ _xxh_round(np.uint64(0), v)) * _P1 + _P4


@numba.njit(cache=True)
def xxh64(data: bytes, seed: np.uint64) -> np.uint64:
    """XXH64 of `data` (Yann Collet's xxHash, 64-bit): the exact-duplicate key of a sample's text,
    about ten times faster than hashlib's blake2b on the 6 kB conversations of retail samples."""
    seed = np.uint64(seed)  # (an int seed would make numba mix int64 and uint64: float arithmetic)
    n = len(data)
    i = 0
    if n >= 32:
        v1 = seed + _P1 + _P2
        v2 = seed + _P2
        v3 = seed
        v4 = seed - _P1
        while i + 32 <= n:
            v1 = _xxh_round(v1, _le64(data, i))
            v2 = _xxh_round(v2, _le64(data, i + 8))
            v3 = _xxh_round(v3, _le64(data, i + 16))
            v4 = _xxh_round(v4, _le64(data, i + 24))
            i += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _xxh_merge(h, v1)
        h = _xxh_merge(h, v2)
        h = _xxh_merge(h, v3)
        h = _xxh_merge(h, v4)
    else:
        h = seed + _P5
    h += np.uint64(n)
    while i + 8 <= n:
        h = _rotl(h ^ _xxh_round(np.uint64(0), _le64(data, i)), 27) * _P1 + _P4
        i += 8
    if i + 4 <= n:
        w = np.uint64(0)
        for k in range(4):
            w |= np.uint64(data[i + k]) << np.uint64(8 * k)
        h = _rotl(h ^ (w * _P1), 23) * _P2 + _P3
        i += 4
    while i < n:
        h = _rotl(h ^ (np.uint64(data[i]) * _P5), 11) * _P1
        i += 1
    h ^= h >> np.uint64(33)
    h *= _P2
    h ^= h >> np.uint64(29)
    h *= _P3
    h ^= h >> np.uint64(32)
    return h


@numba.njit(cache=True)
def _set_add(slots: np.ndarray, key: int) -> bool:
    """Add a 63-bit `key` to an open-addressing table (0 marks an empty slot); False when it was there."""
    key |= 1
    mask = slots.shape[0] - 1
    i = key & mask
    while slots[i] != 0:
        if slots[i] == key:
            return False
        i = (i + 1) & mask
    slots[i] = key
    return True


@numba.njit(cache=True)
def _set_rehash(old: np.ndarray, new: np.ndarray) -> None:
    for key in old:
        if key != 0:
            _set_add(new, key)


class U64Set:
    """A set of 63-bit ints in one flat array (open addressing)."""

    def __init__(self) -> None:
        self.slots = np.zeros(1024, dtype=np.int64)
        self.n = 0

    def add(self, key: int) -> bool:
        """Add `key`; False when it was already there."""
        if not _set_add(self.slots, key):
            return False
        self.n += 1
        if self.n * 2 > len(self.slots):
            self.added_grow()
        return True

    def added_grow(self) -> None:
        """Double the table (at half full: the caller counted a key it put in with :func:`_set_add`)."""
        grown = np.zeros(2 * len(self.slots), dtype=np.int64)
        _set_rehash(self.slots, grown)
        self.slots = grown


@numba.njit(cache=True)
def _popcount(x: np.uint64) -> int:
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return int((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@numba.njit(cache=True)
def _seen_or_insert(heads: np.ndarray, nexts: np.ndarray, fps: np.ndarray, n: int, hi: np.uint64, lo: np.uint64,
                    positions: np.ndarray, max_bits: int, max_chain: int) -> bool:
    """Is a stored fingerprint within `max_bits` of (hi, lo)? If not, store it as entry `n`.
    Chains hold entry + 1 (0 ends a chain, so that the bucket heads start as zeros: pages the
    kernel maps on first use, where filling 40 MiB with -1 cost more than the searches of 10,000
    samples)."""
    tables, width = positions.shape
    slots = np.uint64(heads.shape[1] - 1)
    buckets = np.empty(tables, np.int64)
    firsts = np.empty(tables, np.int64)
    one = np.uint64(1)
    for t in range(tables):
        key = np.uint64(t) << np.uint64(56)
        for j in range(width):
            p = positions[t, j]
            word = hi if p >= 64 else lo
            if (word >> np.uint64(p % 64)) & one:
                key |= one << np.uint64(j)
        buckets[t] = np.int64(_mix64(key) & slots)  # the key's bucket (distinct keys may share one: all are checked)
    for t in range(tables):  # all heads first: the loads (cache misses, mostly) overlap
        firsts[t] = heads[t, buckets[t]]
    for t in range(tables):
        e = firsts[t]
        walked = 0
        while e != 0 and walked < max_chain:  # bounded work per sample, however clustered the data
            if _popcount(fps[e - 1, 0] ^ hi) + _popcount(fps[e - 1, 1] ^ lo) <= max_bits:
                return True
            e = nexts[t, e - 1]
            walked += 1
    fps[n, 0] = hi
    fps[n, 1] = lo
    for t in range(tables):
        nexts[t, n] = firsts[t]
        heads[t, buckets[t]] = n + 1
    return False


_KEEP, _EXACT, _NEAR = 0, 1, 2


@numba.njit(cache=True)
def _exact_key(key: int, text: bytes, seed: int) -> int:
    """`key`, or where it is -1, the 63-bit XXH64 of `text` under `seed`."""
    return key if key >= 0 else np.int64(xxh64(text, seed) >> np.uint64(1))


@numba.njit(cache=True)
def _dedup(arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], key: int, text: bytes,
           seed: int, data: bytes, n: int, max_bits: int, max_chain: int) -> int:
    """One sample through both indexes, in one call: _EXACT when its exact key (:func:`_exact_key`)
    was added before, else (the key added) _NEAR when the SimHash of `data` is near a kept one,
    else _KEEP (it is added as entry `n`). `arrays`: the exact set's slots, then the near index's
    heads, nexts, fingerprints and positions (one argument: Numba types every argument of every call). `n` < 0:
    no near-duplicate index (_EXACT or _KEEP)."""
    slots, heads, nexts, fps, positions = arrays
    if not _set_add(slots, _exact_key(key, text, seed)):
        return _EXACT
    if n < 0:
        return _KEEP
    hi, lo = _simhash128(data, SHINGLE, _SPREAD, _FOLD)
    if _seen_or_insert(heads, nexts, fps, n, hi, lo, positions, max_bits, max_chain):
        return _NEAR
    return _KEEP


class NearDuplicateIndex:
    """Kept 128-bit SimHashes, searched within `max_bits` bits by LSH: 40 tables, each keyed by 24
    fixed random bit positions (keys hashed into 2^18 buckets per table). A pair within 10 bits
    shares some table's key with probability above 99% (within 7 bits: 99.99%). Pairs 37 and 46
    bits apart (the 5th percentile and the quartile of unrelated conversations of one negotiation
    template) share one with probability 0.4% and 0.02%, so the candidates checked per sample stay
    few as the index grows: about 100 per sample at 200,000 such samples, where 16 tables of 16 bits
    checked 660. Candidates are checked exactly, the most recent MAX_CHAIN per table. Memory:
    40 MiB of bucket heads plus 176 bytes per kept sample."""

    TABLES = 40
    WIDTH = 24
    BUCKET_BITS = 18
    MAX_CHAIN = 256
    """At most this many (most recent) entries are compared per table and sample."""

    def __init__(self, max_bits: int = 10) -> None:
        if not 0 <= max_bits <= 32:
            raise SimworldError("--near-dup-bits must be between 0 and 32")
        self.max_bits = max_bits
        rng = np.random.default_rng(0x5EED)
        self.positions = np.stack([rng.choice(128, self.WIDTH, replace=False) for _ in range(self.TABLES)])
        self.heads = np.zeros((self.TABLES, 1 << self.BUCKET_BITS), dtype=np.int32)
        self.nexts = np.empty((self.TABLES, 1024), dtype=np.int32)
        self.fps = np.empty((1024, 2), dtype=np.uint64)
        self.n = 0

    def _room(self) -> None:
        """Room for one more entry."""
        if self.n == len(self.fps):
            self.fps = np.concatenate([self.fps, np.empty_like(self.fps)])
            self.nexts = np.concatenate([self.nexts, np.empty_like(self.nexts)], axis=1)

    def seen(self, fp: int) -> bool:
        """True when a near duplicate was kept before; else remember `fp`."""
        self._room()
        hi, lo = np.uint64(fp >> 64), np.uint64(fp & 0xFFFFFFFFFFFFFFFF)
        if _seen_or_insert(self.heads, self.nexts, self.fps, self.n, hi, lo, self.positions, self.max_bits,
                           self.MAX_CHAIN):
            return True
        self.n += 1
        return False


class Deduplicator:
    """Exact and near-duplicate removal over a stream of samples."""

    def __init__(self, near: bool = True, max_bits: int = 10) -> None:
        self.exact = U64Set()
        self.near = NearDuplicateIndex(max_bits) if near else None
        self.removed_exact = 0
        self.removed_near = 0
        self._arrays: tuple[np.ndarray, ...] | None = None  # what _dedup works on (remade when an array grows)

    def keep(self, sample: Sample, text: bytes | None = None, seed: int = 0) -> bool:
        """Keep `sample` unless it repeats one kept before. `text`, when given, is the sample's full
        training text, or the part of it that differs between samples of one `seed` (64 bits; the
        llama3 export: the text after the system message, seeded by the system message's digest):
        it stands for the sample in the exact comparison (else its messages do: :func:`conversation_key`)."""
        if self.near is None:
            near_text = ""
        else:
            rendered = sample.rendered
            near_text = rendered.dedup_text if rendered is not None else dedup_text(sample)
        if text is None:
            return self._keep(conversation_key(sample), b"", 0, near_text)
        return self._keep(-1, text, seed - (1 << 64) if seed >= 1 << 63 else seed, near_text)

    def keep_key(self, key: int, text: str) -> bool:
        """Keep the sample whose exact-comparison key (63 bits) is `key` and whose near-duplicate
        text (:func:`dedup_text`) is `text`, unless it repeats one kept before."""
        return self._keep(key, b"", 0, text)

    def _keep(self, key: int, exact: bytes, seed: int, text: str) -> bool:
        """`seed`: a signed 64-bit int (Numba takes it as int64; xxh64 reads its bits unsigned)."""
        near = self.near
        arrays = self._arrays
        if arrays is None:
            if near is None:
                arrays = (self.exact.slots, _NO_HEADS, _NO_NEXTS, _NO_FPS, _NO_POSITIONS)
            else:
                near._room()
                arrays = (self.exact.slots, near.heads, near.nexts, near.fps, near.positions)
            self._arrays = arrays
        if near is None:
            verdict = _dedup(arrays, key, exact, seed, b"", -1, 0, 0)
        else:
            data = text.encode("ascii") if text.isascii() else _shingle_bytes(text)
            verdict = _dedup(arrays, key, exact, seed, data, near.n, near.max_bits, near.MAX_CHAIN)
        if verdict == _EXACT:
            self.removed_exact += 1
            return False
        exact_set = self.exact
        exact_set.n += 1
        if exact_set.n * 2 > len(arrays[0]):
            exact_set.added_grow()
            self._arrays = None
        if verdict == _NEAR:
            self.removed_near += 1
            return False
        if near is not None:
            near.n += 1
            if near.n == len(near.fps):  # the next sample needs room
                self._arrays = None
        return True


# What _dedup gets when there is no near-duplicate index (of the types it compiles for).
_NO_HEADS = np.zeros((1, 1), dtype=np.int32)
_NO_NEXTS = np.zeros((1, 1), dtype=np.int32)
_NO_FPS = np.zeros((1, 2), dtype=np.uint64)
_NO_POSITIONS = np.zeros((1, 1), dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Split


def split_of(key: str, validation: float, seed: int = 0) -> str:
    """``train`` or ``validation`` for a task-instance key (same key, same side)."""
    if validation <= 0:
        return "train"
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return "validation" if int.from_bytes(digest, "little") / 2**64 < validation else "train"


# ----------------------------------------------------------------------------------------------
# External data (OpenAI chat format)


def parse_mix(spec: str) -> tuple[Path, float]:
    """``FILE:FRACTION`` -> (path, fraction in (0, 1))."""
    path, sep, frac = spec.rpartition(":")
    if not sep or not path:
        raise SimworldError(f"--mix {spec!r}: expected FILE:FRACTION, e.g. real.jsonl:0.2")
    try:
        fraction = float(frac)
    except ValueError:
        raise SimworldError(f"--mix {spec!r}: {frac!r} is not a number") from None
    if not 0 < fraction < 1:
        raise SimworldError(f"--mix {spec!r}: the fraction must be between 0 and 1 (exclusive)")
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise SimworldError(f"--mix {spec!r}: no such file {path}") from None
    except OSError as exc:
        raise SimworldError(f"--mix {spec!r}: cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise SimworldError(f"--mix {spec!r}: {path} is not a regular file")
    return p, fraction


def _text(content: Any, where: str) -> str:
    text = content_text(content)
    if text is None:
        raise ValueError(f"{where}: content must be a string or text parts" if isinstance(content, list)
                         else f"{where}: content must be a string")
    return text


MAX_NESTING = 100
"""How deep arguments and parameter schemas of external data may nest (JSON writers stop at a few
hundred levels; no real conversation comes near)."""


def _too_deep(value: Any, limit: int = MAX_NESTING) -> bool:
    level = [value]
    for _ in range(limit):
        level = [v for x in level if isinstance(x, (dict, list)) for v in (x.values() if isinstance(x, dict) else x)]
        if not level:
            return False
    return True


_SCHEMA_PROBLEMS: dict[bytes, tuple[str, str] | None] = {}


def schema_problem(schema: dict[str, Any]) -> tuple[str, str] | None:
    """Where in `schema` (``.properties.a``, or empty) and why it is not a valid JSON Schema (draft
    2020-12, whose keywords for tool parameters the earlier drafts share), or None. Remembered per
    distinct schema: an external file repeats a few tool sets on every line."""
    try:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        return "", str(exc)
    if key in _SCHEMA_PROBLEMS:
        return _SCHEMA_PROBLEMS[key]
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    problem: tuple[str, str] | None = None
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        problem = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.path), exc.message
    if len(_SCHEMA_PROBLEMS) >= 1024:
        _SCHEMA_PROBLEMS.clear()
    _SCHEMA_PROBLEMS[key] = problem
    return problem


WEIGHT_ZERO = "weight 0"
"""The ``invalid`` reason of an external conversation's assistant message with ``"weight": 0``."""


def validate_openai_record(obj: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(messages in sample form, ending at the last assistant message; OpenAI tools) of one external line;
    ValueError names the problem."""
    if not isinstance(obj, dict):
        raise ValueError("a line must be a JSON object")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    tools = obj.get("tools") or []
    if not isinstance(tools, list):
        raise ValueError("'tools' must be a list")
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or t.get("type", "function") != "function":
            raise ValueError(f"tools[{i}]: expected {{'type': 'function', 'function': {{'name': ..., ...}}}}")
        if not isinstance(fn.get("description", ""), str):
            raise ValueError(f"tools[{i}].function.description must be a string")
        parameters = fn.get("parameters", {})
        if not isinstance(parameters, dict):
            raise ValueError(f"tools[{i}].function.parameters must be an object")
        if _too_deep(parameters):
            raise ValueError(f"tools[{i}].function.parameters: nested more than {MAX_NESTING} levels deep")
        problem = schema_problem(parameters)
        if problem:
            where, why = problem
            raise ValueError(f"tools[{i}].function.parameters{where}: {why} (not a valid JSON Schema)")
    out: list[dict[str, Any]] = []
    open_calls: set[str] = set()
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ValueError(f"{where}: must be an object")
        role = m.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            raise ValueError(f"{where}: unknown role {role!r}")
        if role == "system" and i != 0:
            raise ValueError(f"{where}: a system message must come first")
        content = _text(m.get("content"), where)
        if role == "assistant":
            calls = []
            if not isinstance(m.get("tool_calls") or [], list):
                raise ValueError(f"{where}.tool_calls must be a list")
            for j, c in enumerate(m.get("tool_calls") or []):
                fn = c.get("function") if isinstance(c, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(c.get("id"), str):
                    raise ValueError(f"{where}.tool_calls[{j}]: expected {{'id', 'type', 'function': {{'name', 'arguments'}}}}")
                try:
                    args = orjson.loads(fn.get("arguments") or "{}") if isinstance(fn.get("arguments", "{}"), str) \
                        else fn["arguments"]
                except orjson.JSONDecodeError:
                    raise ValueError(f"{where}.tool_calls[{j}]: arguments are not valid JSON") from None
                if not isinstance(args, dict):
                    raise ValueError(f"{where}.tool_calls[{j}]: arguments must be a JSON object")
                if _too_deep(args):
                    raise ValueError(f"{where}.tool_calls[{j}]: arguments nested more than {MAX_NESTING} levels deep")
                calls.append({"id": c["id"], "name": fn["name"], "arguments": args})
                open_calls.add(c["id"])
            if not calls and m.get("content") is None:
                raise ValueError(f"{where}: an assistant message needs content or tool_calls")
            msg: dict[str, Any] = {"role": "assistant", "content": content}
            if calls:
                msg["tool_calls"] = calls
            if m.get("weight") == 0:
                msg["invalid"] = WEIGHT_ZERO
            out.append(msg)
        elif role == "tool":
            cid = m.get("tool_call_id")
            if not isinstance(cid, str):
                raise ValueError(f"{where}.tool_call_id must be a string")
            if cid not in open_calls:
                raise ValueError(f"{where}: tool_call_id {cid!r} answers no earlier tool call")
            out.append({"role": "tool", "content": content, "tool_call_id": cid})
        else:
            out.append({"role": role, "content": content})
    last = max((i for i, m in enumerate(out) if m["role"] == "assistant"), default=None)
    if last is None:
        raise ValueError("no assistant message")
    # Cut as a synthetic sample is, after the last assistant message: what follows it teaches
    # nothing, and a conversation that ends on the user's turn is one trainers reject (sharegpt).
    return out[:last + 1], tools


def _dates_itself(messages: list[dict[str, Any]]) -> bool:
    """Whether a conversation's own system message states its date (Meta's ``Today Date:`` line)."""
    return bool(messages) and messages[0]["role"] == "system" and any(
        line.startswith("Today Date:") for line in messages[0]["content"].splitlines())


def iter_external(path: Path, today: dt.date | None = None) -> Iterator[Sample]:
    """Validated samples of an external OpenAI-format file; SimworldError names the bad line.

    `today` dates their Llama 3 system messages (``--mix-today``); None, the default, gives them no
    date: a real conversation happened on no scenario's date. A conversation whose own system
    message states its date (``Today Date:``) keeps it and is given no other."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise SimworldError(f"--mix {path}: cannot read: {exc.strerror or exc}") from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
                messages, tools = validate_openai_record(obj)
            except (orjson.JSONDecodeError, ValueError) as exc:
                msg = "not valid JSON" if isinstance(exc, orjson.JSONDecodeError) else str(exc)
                raise SimworldError(f"{path}:{lineno}: {msg}") from None
            yield Sample(id=f"{json_text(path.name)}:{lineno}", perspective="assistant", messages=messages,
                         tools=tools, tools_openai=tools, today=None if _dates_itself(messages) else today,
                         scores={}, provenance=external_provenance(json_text(str(path)), lineno), synthetic=False,
                         split_key=f"external\x00{path}\x00{lineno}", success=False)
