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
import re
import time
from collections.abc import Callable, Iterator
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


# ----------------------------------------------------------------------------------------------
# Writer side (used by `simworld run`)

SCENARIO_FILE = "scenario.yaml"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"
_SHARD_NAME = re.compile(r"^trajectories-(\d{6})-(\d{3})\.jsonl$")


def shard_name(session: int, worker: int) -> str:
    """Shard file name of one worker in one session. Sessions sort in order of writing, so that
    "the last record per episode id" is the last one in sorted shard order."""
    return f"trajectories-{session:06d}-{worker:03d}.jsonl"


def next_session(run_dir: str | Path) -> int:
    """The session number for the next `run` into `run_dir` (1 for a new directory)."""
    sessions = [int(m.group(1)) for p in Path(run_dir).glob(SHARD_GLOB) if (m := _SHARD_NAME.match(p.name))]
    return max(sessions, default=0) + 1


def foreign_jsonl(run_dir: str | Path) -> list[Path]:
    """Files directly in `run_dir` ending in .jsonl that are not shards written by `run`."""
    return sorted(p for p in Path(run_dir).glob("*.jsonl") if not _SHARD_NAME.match(p.name))


def scan_shard(path: Path, on_record: Callable[[dict[str, Any]], None]) -> tuple[int, int]:
    """Parse every record of a shard, in order, passing each to `on_record`.

    Returns (bytes of the valid prefix, file size). The valid prefix ends after the last line that
    is complete and decodes; anything after it is a torn or corrupt tail (a crash mid-write) that
    :func:`truncate_tail` removes. Memory holds one record at a time.
    """
    good_end = offset = 0
    with open(path, "rb") as fh:
        for line in fh:
            offset += len(line)
            if not line.endswith(b"\n"):
                break
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("episode_id"), str):
                on_record(record)
                good_end = offset
    return good_end, offset


def truncate_tail(path: Path, keep: int) -> None:
    """Cut a shard back to its first `keep` bytes (dropping a torn last line)."""
    with open(path, "r+b") as fh:
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())


class ShardWriter:
    """Appends trajectory lines to one shard file.

    Each line is one ``write`` system call on an ``O_APPEND`` descriptor (no user-space buffer, so
    a crash loses at most the line being written, which readers skip and resume repairs). The file
    is fsynced every `sync_interval` seconds and on `close`. A failed write (disk full, file size
    limit) is cut back so the shard ends on a whole line, then the OSError propagates.
    """

    def __init__(self, path: str | Path, sync_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.sync_interval = sync_interval
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self.fd).st_size
        self.lines = 0
        self._last_sync = time.monotonic()
        _fsync_dir(self.path.parent)

    def write(self, line: bytes) -> None:
        view = memoryview(line)
        try:
            written = os.write(self.fd, view)
            while written < len(view):  # a short write: the disk filled up mid-line
                written += os.write(self.fd, view[written:])
        except OSError:
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                pass  # the torn line stays; readers skip it and the next run repairs it
            raise
        self.size += len(line)
        self.lines += 1
        now = time.monotonic()
        if now - self._last_sync >= self.sync_interval:
            os.fsync(self.fd)
            self._last_sync = now

    def sync(self) -> None:
        os.fsync(self.fd)
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if self.fd < 0:
            return
        try:
            os.fsync(self.fd)
        finally:
            os.close(self.fd)
            self.fd = -1


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
