"""Run directories: the on-disk contract between `run` and `show/replay/score/export`.

A run directory holds:

* ``scenario.yaml``: the resolved scenario (overrides applied);
* ``manifest.json``: what produced the run (written atomically: temp file + rename);
* ``trajectories-*.jsonl``: append-only shards, one trajectory per line. Nothing else directly in
  the directory ends in ``.jsonl``. A record may be superseded by a later record with the same
  ``episode_id`` (a failed episode retried on resume): readers keep the last one.
* ``scores/``: scorer output (never rewrites the shards).

A torn last line (a crash mid-write) is skipped by readers and repaired by `run` on resume.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from simworld.errors import SimworldError

SHARD_GLOB = "trajectories-*.jsonl"


def shard_paths(run_dir: str | Path) -> list[Path]:
    d = Path(run_dir)
    if not d.is_dir():
        raise SimworldError(f"{run_dir}: not a run directory")
    return sorted(d.glob(SHARD_GLOB))


def _iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) for every complete line; a torn last line is skipped."""
    offset = 0
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                return
            yield offset, line
            offset += len(line)


def iter_records(run_dir: str | Path, latest_only: bool = True) -> Iterator[dict[str, Any]]:
    """Stream trajectory dicts of a run; with `latest_only`, the last record of each episode id.

    Memory holds one offset per episode, never the trajectories themselves.
    """
    shards = shard_paths(run_dir)
    if not latest_only:
        for path in shards:
            for _, line in _iter_lines(path):
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
        return
    last: dict[str, tuple[int, int]] = {}
    for si, path in enumerate(shards):
        for offset, line in _iter_lines(path):
            i = line.find(b'"episode_id":"')
            if i < 0:
                continue
            j = line.find(b'"', i + 14)
            last[line[i + 14:j].decode()] = (si, offset)
    keep: dict[int, set[int]] = {}
    for si, offset in last.values():
        keep.setdefault(si, set()).add(offset)
    for si, path in enumerate(shards):
        wanted = keep.get(si)
        if not wanted:
            continue
        for offset, line in _iter_lines(path):
            if offset in wanted:
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write a small file so that readers see the old or the new content, never a mix."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
