"""Curation: filters, exact and near-duplicate removal, the train/validation split, external data.

* **Exact duplicates**: a 63-bit hash of the conversation (roles, contents, tool calls, tools).
* **Near duplicates**: a 64-bit SimHash of the normalised conversation text (lower case, word
  5-gram shingles, system prompt left out: it is shared by a whole scenario). Two samples are near
  duplicates when their SimHashes differ in at most `max_bits` bits (3 by default: about cosine
  0.99 between the shingle sets). Found with 4 bands of 16 bits (pigeonhole: a pair within 3 bits
  agrees on at least one band).
* Both indexes keep 8 to 24 bytes per kept sample in flat arrays, never the samples.
* **Split** by task instance: a hash of (scenario, task instance id) decides the split, so all
  seeds and perspectives of a task land on the same side.
* **External data** (`--mix FILE:FRACTION`): OpenAI chat fine-tuning JSONL, validated line by
  line, tagged ``synthetic: false``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import zlib
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from simworld.errors import SimworldError
from simworld.export.source import Sample

# ----------------------------------------------------------------------------------------------
# Hashing


def conversation_key(sample: Sample) -> int:
    """63-bit hash of everything a trainer sees of the sample."""
    h = hashlib.blake2b(digest_size=8)
    for m in sample.messages:
        h.update(m["role"].encode())
        h.update(b"\x00")
        h.update(m["content"].encode("utf-8", "surrogatepass"))
        for c in m.get("tool_calls") or ():
            h.update(b"\x01" + c["name"].encode())
            h.update(orjson.dumps(c.get("arguments") or {}, option=orjson.OPT_SORT_KEYS))
        h.update(b"\x02")
    for t in sample.tools_openai:
        h.update(t["function"]["name"].encode())
    return int.from_bytes(h.digest(), "little") >> 1


_WORD = re.compile(r"\w+")
SHINGLE = 5
_MIX = np.uint64(0x9E3779B97F4A7C15)


def simhash(text: str) -> int:
    """64-bit SimHash of the word 5-gram shingles of `text` (lower-cased)."""
    words = _WORD.findall(text.lower())
    if not words:
        return 0
    h = np.fromiter((zlib.crc32(w.encode()) for w in words), dtype=np.uint64, count=len(words))
    n = max(1, len(words) - SHINGLE + 1)
    s = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(min(SHINGLE, len(words))):
            s = s * np.uint64(1_000_003) + h[j:j + n]
        # splitmix64 finaliser: spread the bits of each shingle hash
        s = (s ^ (s >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        s = (s ^ (s >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        s = s ^ (s >> np.uint64(31)) ^ _MIX
    bits = np.unpackbits(s.view(np.uint8)).reshape(n, 64)
    ones = bits.sum(axis=0, dtype=np.int32)
    return int.from_bytes(np.packbits(ones * 2 > n).tobytes(), "big")


def dedup_text(sample: Sample) -> str:
    parts = []
    for m in sample.messages:
        if m["role"] == "system":
            continue
        parts.append(m["content"])
        for c in m.get("tool_calls") or ():
            parts.append(c["name"] + " " + orjson.dumps(c.get("arguments") or {}).decode())
    return "\n".join(parts)


class U64Set:
    """A set of 63-bit ints in one flat array (open addressing)."""

    def __init__(self) -> None:
        self.slots = array("q", bytes(8 * 1024))
        self.n = 0

    def add(self, key: int) -> bool:
        """Add `key`; False when it was already there."""
        key |= 1  # 0 marks an empty slot
        slots = self.slots
        mask = len(slots) - 1
        i = key & mask
        while slots[i]:
            if slots[i] == key:
                return False
            i = (i + 1) & mask
        slots[i] = key
        self.n += 1
        if self.n * 2 > len(slots):
            self._grow()
        return True

    def _grow(self) -> None:
        old = self.slots
        self.slots = array("q", bytes(16 * len(old)))
        self.n = 0
        for k in old:
            if k:
                self.add(k)


class NearDuplicateIndex:
    """SimHash index: is there a kept fingerprint within `max_bits` bits? (4 bands of 16 bits)."""

    BANDS = 4

    def __init__(self, max_bits: int = 3) -> None:
        if not 0 <= max_bits <= 3:
            raise SimworldError("--near-dup-bits must be between 0 and 3")
        self.max_bits = max_bits
        self.fingerprints = array("Q")
        self.heads = [array("i", [-1]) * 65536 for _ in range(self.BANDS)]
        self.nexts = [array("i") for _ in range(self.BANDS)]

    def seen(self, fp: int) -> bool:
        """True when a near duplicate was kept before; else remember `fp`."""
        fps = self.fingerprints
        for b in range(self.BANDS):
            j = self.heads[b][(fp >> (16 * b)) & 0xFFFF]
            nxt = self.nexts[b]
            while j >= 0:
                if (fps[j] ^ fp).bit_count() <= self.max_bits:
                    return True
                j = nxt[j]
        idx = len(fps)
        fps.append(fp)
        for b in range(self.BANDS):
            key = (fp >> (16 * b)) & 0xFFFF
            self.nexts[b].append(self.heads[b][key])
            self.heads[b][key] = idx
        return False


class Deduplicator:
    """Exact and near-duplicate removal over a stream of samples."""

    def __init__(self, near: bool = True, max_bits: int = 3) -> None:
        self.exact = U64Set()
        self.near = NearDuplicateIndex(max_bits) if near else None
        self.removed_exact = 0
        self.removed_near = 0

    def keep(self, sample: Sample) -> bool:
        if not self.exact.add(conversation_key(sample)):
            self.removed_exact += 1
            return False
        if self.near is not None and self.near.seen(simhash(dedup_text(sample))):
            self.removed_near += 1
            return False
        return True


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
    if not p.is_file():
        raise SimworldError(f"--mix {spec!r}: no such file {path}")
    return p, fraction


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"{where}: only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)
    raise ValueError(f"{where}: content must be a string")


def validate_openai_record(obj: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(messages in sample form, OpenAI tools) of one external line; ValueError names the problem."""
    if not isinstance(obj, dict):
        raise ValueError("a line must be a JSON object")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    tools = obj.get("tools") or []
    if not isinstance(tools, list):
        raise ValueError("'tools' must be a list")
    names = set()
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or t.get("type", "function") != "function":
            raise ValueError(f"tools[{i}]: expected {{'type': 'function', 'function': {{'name': ..., ...}}}}")
        if not isinstance(fn.get("parameters", {}), dict):
            raise ValueError(f"tools[{i}].function.parameters must be an object")
        names.add(fn["name"])
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
                if names and fn["name"] not in names:
                    raise ValueError(f"{where}.tool_calls[{j}]: tool {fn['name']!r} is not in 'tools'")
                calls.append({"id": c["id"], "name": fn["name"], "arguments": args})
                open_calls.add(c["id"])
            if not calls and m.get("content") is None:
                raise ValueError(f"{where}: an assistant message needs content or tool_calls")
            msg: dict[str, Any] = {"role": "assistant", "content": content}
            if calls:
                msg["tool_calls"] = calls
            if m.get("weight") == 0:
                msg["invalid"] = "weight 0"
            out.append(msg)
        elif role == "tool":
            cid = m.get("tool_call_id")
            if cid not in open_calls:
                raise ValueError(f"{where}: tool_call_id {cid!r} answers no earlier tool call")
            out.append({"role": "tool", "content": content, "tool_call_id": cid})
        else:
            out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise ValueError("no assistant message")
    return out, tools


def iter_external(path: Path, today: dt.date) -> Iterator[Sample]:
    """Validated samples of an external OpenAI-format file; SimworldError names the bad line."""
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
            prov = {"source": str(path), "line": lineno, "synthetic": False}
            yield Sample(id=f"{path.name}:{lineno}", perspective="assistant", messages=messages, tools=tools,
                         tools_openai=tools, today=today, scores={}, provenance=prov, synthetic=False,
                         split_key=f"external\x00{path}\x00{lineno}")


def validate_external(path: Path) -> int:
    """Number of conversations in a valid external file (raises on the first bad line)."""
    return sum(1 for _ in iter_external(path, dt.date(2024, 1, 1)))
