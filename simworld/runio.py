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

import errno
import hashlib
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from simworld.errors import SimworldError, counted

SHARD_GLOB = "trajectories-*.jsonl"


def shard_paths(run_dir: str | Path) -> list[Path]:
    """The run's shards, in order. Each must be a regular file (or a link to one): a directory, a
    dangling link or a FIFO under a shard's name is one line, not a traceback or a hang."""
    d = Path(run_dir)
    if not d.is_dir():
        raise SimworldError(f"{run_dir}: not a run directory")
    paths = sorted(d.glob(SHARD_GLOB))
    for p in paths:
        try:
            regular = stat.S_ISREG(p.stat().st_mode)
        except OSError as exc:
            raise read_error(p, exc) from None
        if not regular:
            raise SimworldError(f"cannot read {p}: not a regular file")
    return paths


def read_error(path: Path, exc: OSError) -> SimworldError:
    return SimworldError(f"cannot read {path}: {exc.strerror or exc}")


_CHUNK = 1 << 22
_ID_KEY = b'"episode_id":"'


def _complete_lines(path: Path, torn: list[int] | None = None, limit: int | None = None,
                    records: bool = False) -> Iterator[Any]:
    """(buffer, start, end) of every complete line of a shard (newline excluded; a torn last line is
    skipped, its length appended to `torn` when given), reading at most its first `limit` bytes.
    With `records`, the line's record instead (a dict with a string episode_id), or where the line
    holds none, whether it holds the bytes of an episode_id key. The buffer is reused: a line is
    valid until the next one is asked for. Reading into one buffer makes no object per line
    (records are large: a copy per line costs as much as parsing a small record)."""
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    filled = 0
    left = -1 if limit is None else limit  # bytes still to read; -1: to the end of the file
    try:
        fh = open(path, "rb", buffering=0)
    except OSError as exc:
        raise read_error(path, exc) from None
    with fh:
        while True:
            if filled == len(buf):  # a line longer than the buffer
                view.release()
                buf.extend(bytes(len(buf)))
                view = memoryview(buf)
            try:
                if left < 0:
                    got = fh.readinto(view[filled:])
                else:
                    got = fh.readinto(view[filled:filled + left]) if left else 0
                    left -= got
            except OSError as exc:
                raise read_error(path, exc) from None
            if not got:
                if filled and torn is not None and bytes(buf[:filled]).strip():
                    torn.append(filled)
                return
            end = filled + got
            pos = 0
            while True:
                nl = buf.find(b"\n", pos, end)
                if nl < 0:
                    break
                if records:
                    try:
                        record = orjson.loads(view[pos:nl])  # (the slice is gone before the buffer can grow)
                    except orjson.JSONDecodeError:
                        record = None
                    if type(record) is dict and type(record.get("episode_id")) is str:
                        yield record
                    else:
                        yield buf.find(_ID_KEY, pos, nl) >= 0
                else:
                    yield buf, pos, nl
                pos = nl + 1
            filled = end - pos
            if pos:
                buf[:filled] = view[pos:end]


def _load(buf: bytearray | bytes, start: int, end: int) -> Any:
    try:
        with memoryview(buf) as view:
            return orjson.loads(view[start:end])
    except orjson.JSONDecodeError:
        return None


_INDEX = re.compile(rb'"episode_index":(\d+)')
_NO_INDEX = 1 << 62


def _parsed_key(buf: bytearray, start: int, end: int) -> tuple[bytes | None, int, str]:
    """(episode id, index, "") of a record line in any JSON formatting, or (None, 0, why not) where
    the line is no record ("" for a blank line)."""
    if not buf[start:end].strip():
        return None, 0, ""
    record = _load(buf, start, end)
    if not isinstance(record, dict):
        return None, 0, "not a JSON record"
    eid = record.get("episode_id")
    if not isinstance(eid, str):
        return None, 0, "not a trajectory record (no episode_id)"
    index = record.get("episode_index")
    return orjson.dumps(eid)[1:-1], index if isinstance(index, int) and index >= 0 else _NO_INDEX, ""


def _index_of(buf: bytearray, start: int, end: int) -> int:
    """The line's ``episode_index`` read from its bytes (records lead with it), or a large number."""
    m = _INDEX.search(buf, start, min(end, start + 4096))
    return int(m.group(1)) if m else _NO_INDEX


def iter_records(run_dir: str | Path, latest_only: bool = True,
                 problems: list[tuple[str, str]] | None = None) -> Iterator[dict[str, Any]]:
    """Stream trajectory dicts of a run; with `latest_only`, the last record of each episode id, in
    episode order (index, then id), whatever the number of workers that wrote the shards.

    Memory holds one entry per episode, never the trajectories themselves. Torn and corrupt lines
    are skipped; with `problems`, each is also listed there as (``"torn"`` or ``"corrupt"``, a
    line naming the shard and line).
    """
    shards = shard_paths(run_dir)
    if not latest_only:
        for path in shards:
            for buf, start, end in _complete_lines(path):
                record = _load(buf, start, end)
                if isinstance(record, dict):
                    yield record
        return
    # Pass 1: where each episode's last record is (shard, offset, length, line) and its index, and
    # whether the files already hold one record per episode in episode order (one worker, no retry).
    # Pass 2 reads no further than pass 1 did in each shard (`seen`): lines a writer appends in
    # between (a resume retrying an episode) would otherwise be read with the records they supersede.
    last: dict[bytes, tuple[int, int, int, int, int]] = {}
    seen: list[int] = []
    lines = 0
    in_order = True
    prev: tuple[int, bytes] = (-1, b"")
    for si, path in enumerate(shards):
        offset = 0
        torn: list[int] = []
        for line, (buf, start, end) in enumerate(_complete_lines(path, torn), 1):
            i = buf.find(_ID_KEY, start, end)
            if i >= 0:
                j = buf.find(b'"', i + 14, end)
                eid, index = bytes(buf[i + 14:j]), _index_of(buf, start, end)
            else:  # not in orjson's compact form (e.g. re-saved by Python's json): parse it
                eid, index, problem = _parsed_key(buf, start, end)
                if eid is None:
                    if problems is not None and problem:
                        problems.append(("corrupt", f"{path.name} line {line}: {problem}"))
                    offset += end - start + 1
                    continue
            last[eid] = (index, si, offset, end - start, line)
            lines += 1
            if in_order:
                key = (index, eid)
                in_order = key > prev
                prev = key
            offset += end - start + 1
        seen.append(offset)
        if torn and problems is not None:
            problems.append(("torn", f"{path.name}: a torn last line of {counted(torn[0], 'byte')} (an interrupted "
                                     "write; the run's next `simworld run`, or a fork's next fork, cuts it)"))
    if in_order and len(last) == lines:  # read them straight through
        last.clear()
        for path, size in zip(shards, seen):
            line = 0
            for record in _complete_lines(path, limit=size, records=True):
                line += 1
                if type(record) is dict:
                    yield record
                elif problems is not None and record:  # (lines without the key: reported in pass 1)
                    problems.append(("corrupt", f"{path.name} line {line}: not a JSON record"))
        return
    order = sorted(last.items(), key=lambda kv: (kv[1][0], kv[0]))
    last.clear()
    positions = [(si, offset) for _, (_, si, offset, _, _) in order]
    if positions == sorted(positions):  # the files hold them in order, with superseded records between
        wanted: dict[int, dict[int, int]] = {}
        for _, (_, si, offset, _, line) in order:
            wanted.setdefault(si, {})[offset] = line
        del order, positions
        for si, path in enumerate(shards):
            keep = wanted.get(si)
            if not keep:
                continue
            offset = 0
            for buf, start, end in _complete_lines(path, limit=seen[si]):
                here, offset = offset, offset + end - start + 1
                line = keep.get(here)
                if line is not None:
                    yield from _record(buf, start, end, path, line, problems)
        return
    del positions
    fds: dict[int, int] = {}
    try:
        for _, (_, si, offset, length, line) in order:
            fd = fds.get(si)
            try:
                if fd is None:
                    fd = fds[si] = os.open(shards[si], os.O_RDONLY)
                data = os.pread(fd, length, offset)
            except OSError as exc:
                raise read_error(shards[si], exc) from None
            yield from _record(data, 0, len(data), shards[si], line, problems)
    finally:
        for fd in fds.values():
            os.close(fd)


def _record(buf: bytearray | bytes, start: int, end: int, path: Path, line: int,
            problems: list[tuple[str, str]] | None) -> Iterator[dict[str, Any]]:
    record = _load(buf, start, end)
    if isinstance(record, dict) and "episode_id" in record:
        yield record
    elif problems is not None:
        problems.append(("corrupt", f"{path.name} line {line}: not a JSON record"))


def temp_name(path: Path, kind: str = "tmp") -> Path:
    """A hidden file beside `path` for writing it (or keeping its old content) until it is complete:
    ``.NAME.KIND-PID``, or a short hash of NAME where that would be too long a name."""
    name = f".{path.name}.{kind}-{os.getpid()}"
    if len(os.fsencode(name)) > 255:
        name = f".{kind}-{os.getpid()}-{hashlib.blake2b(os.fsencode(path.name), digest_size=8).hexdigest()}"
    return path.with_name(name)


def _temp_names(path: Path) -> re.Pattern[str]:
    """What :func:`temp_name` calls the hidden files of `path`, of any kind and process (group 1 or 2:
    the process id)."""
    digest = hashlib.blake2b(os.fsencode(path.name), digest_size=8).hexdigest()
    return re.compile(rf"\.{re.escape(path.name)}\.(?:tmp|old)-([0-9]+)|\.(?:tmp|old)-([0-9]+)-{digest}")


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a process id temp_name writes: leave the file alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or an id that cannot be one): not ours to judge
    return True


def remove_stale_temporaries(finals: Iterable[Path]) -> list[Path]:
    """Remove the hidden files :func:`temp_name` names beside each of `finals` (``.NAME.tmp-PID``,
    ``.NAME.old-PID``) that a process left when it was killed (SIGKILL, SIGTERM, power loss): those
    whose process is no longer alive. A live process's file, this one's included, is never touched;
    a process id reused by another live process keeps its file until that process is gone too.
    Returns what was removed; what cannot be listed or removed is left as it is."""
    removed: list[Path] = []
    by_dir: dict[Path, list[re.Pattern[str]]] = {}
    for final in finals:
        by_dir.setdefault(final.parent, []).append(_temp_names(final))
    for folder, patterns in by_dir.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if not entry.name.startswith("."):
                continue
            for pattern in patterns:
                m = pattern.fullmatch(entry.name)
                if m is None:
                    continue
                try:
                    stale = entry.is_file(follow_symlinks=False) and not _process_alive(int(m.group(1) or m.group(2)))
                    if stale:
                        os.unlink(entry.path)
                        removed.append(folder / entry.name)
                except OSError:
                    pass
                break
    return removed


def discard(paths: Iterable[Path]) -> None:
    """Remove temporary files that may or may not exist, as a clean-up does: what cannot be removed
    (its directory is gone, or was never one) holds nothing of ours and is left."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def write_synced(path: Path, data: bytes) -> None:
    """Write `data` to a new file at `path` and flush it to disk."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def install_together(moves: list[tuple[Path, Path]]) -> None:
    """Rename each complete temporary file over its final path, all or none.

    When a rename fails, the ones before it are undone (each replaced file is kept under a second
    name, a hard link, until all are in place), every temporary of `moves` is removed, and an
    OSError whose ``filename`` is the final path that could not be written is raised. A final path
    that exists and is not a regular file is refused (EISDIR), never replaced. On Ctrl-C the same
    clean-up happens and KeyboardInterrupt goes on. The renames are made durable (directory fsync).
    """
    done: list[tuple[Path, Path | None]] = []  # (final, where its old content is, if it had one)
    keep_old = len(moves) > 1  # one file needs nothing put back
    final = moves[0][1]
    try:
        for tmp, final in moves:
            backup = None
            if os.path.lexists(final):
                if not os.path.isfile(final):
                    raise IsADirectoryError(errno.EISDIR, "it exists and is not a regular file")
                if keep_old:
                    backup = temp_name(final, "old")
                    try:
                        os.link(final, backup, follow_symlinks=False)
                    except OSError:  # a file system without hard links: this one cannot be put back
                        backup = None
            os.replace(tmp, final)
            done.append((final, backup))
    except BaseException as exc:
        for put, backup in reversed(done):
            try:
                if backup is not None:
                    os.replace(backup, put)
                else:
                    os.unlink(put)
            except OSError:
                pass
        discard(tmp for tmp, _ in moves)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror or str(exc), os.fspath(final)) from None
        raise
    discard(backup for _, backup in done if backup is not None)
    for parent in {final.parent for _, final in moves}:
        fsync_dir(parent)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write a small file so that readers see the old or the new content, never a mix. On any
    failure (a full disk, Ctrl-C) the temporary file is removed and the old content stays."""
    p = Path(path)
    tmp = temp_name(p)
    try:
        write_synced(tmp, data)
    except BaseException:
        discard([tmp])
        raise
    install_together([(tmp, p)])


# ----------------------------------------------------------------------------------------------
# Writer side (used by `simworld run`)

SCENARIO_FILE = "scenario.yaml"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"
_SHARD_NAME = re.compile(r"^trajectories-(\d{6})-(\d{3})\.jsonl$")


def check_run_out(out: str) -> None:
    """Refuse an --out that an unset shell variable makes (``--out "$DIR"``: empty; ``"$DIR/"``: the
    root; ``"runs/$NAME"``: the folder of all runs) before anything is written there: an empty value,
    or an existing directory that holds other files and no run (a run directory may be empty,
    resumed, or hold only what a killed run left)."""
    if not out:
        raise SimworldError("--out is empty: name the run directory (an unset shell variable?)")
    path = Path(out)
    try:
        if not path.is_dir() or (path / SCENARIO_FILE).exists():
            return  # a new directory, a file (refused by the run), or a run to resume
        own = {LOCK_FILE, MANIFEST_FILE, "scores", *(p.name for p in shard_paths(path))}
        temporaries = (f".{SCENARIO_FILE}.", f".{MANIFEST_FILE}.")  # what a killed run left half-written
        others = sorted(name for name in os.listdir(path) if name not in own and not name.startswith(temporaries))
    except OSError:
        return  # the run names what it cannot read or write
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3:,} more" if len(others) > 3 else "")
        raise SimworldError(f"--out {out}: holds {shown} and no simworld run; use an empty or new --out directory")


def run_is_live(run_dir: str | Path) -> bool | None:
    """Whether a `simworld run` (or one of its workers) is writing to `run_dir` now: it holds the
    directory's lock. None where locks are not available (the answer is unknown)."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False  # every run creates the lock before it writes anything
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released by close: a run starting now waits for it
        return False
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)


def unfinished_run_state(run_dir: str | Path, status: str, episodes: int, not_recorded: int | None) -> str:
    """How `score`, `export` and `replay` describe a run whose manifest says `status` (not
    ``complete``), `not_recorded` of its `episodes` having no record (None: not known). A manifest
    says ``running`` both while its run writes and after a run that could not rewrite it at the end
    (killed, or stopped by a full disk): only a run holding the directory's lock is called running."""
    finish = "(re-run its `simworld run` command to finish it)"
    if not_recorded is None:
        count = (f"some of its {counted(episodes, 'episode')} may not be recorded yet; only those recorded so far "
                 "are read")
    else:
        count = f"{not_recorded:,} of its episodes are not recorded yet"
    if status == "running" and run_is_live(run_dir):
        return f"the run is running: {count}"
    if status == "running" or not_recorded is None:
        return f"the run is {status} (or its `simworld run` was killed): {count}" + (
            f" {finish}" if not_recorded is not None else "")
    if not_recorded <= 0:
        return f"the run is {status}: its last `simworld run` did not finish {finish}"
    return f"the run is {status}: {count} {finish}"


def unfinished_run_note(run_dir: str | Path) -> str | None:
    """One line for readers (score, export) of a run whose manifest says it is not complete
    (``running``, ``interrupted``, ``failed``): how many of its episodes are not recorded yet, as
    `simworld replay` says it. None for a complete run, a directory without a manifest (forks) or
    one whose manifest cannot be read (replay names that)."""
    try:
        manifest = orjson.loads((Path(run_dir) / MANIFEST_FILE).read_bytes())
        status, episodes = str(manifest["status"]), int(manifest["episodes"])
        summary = manifest.get("summary")
        recorded = int(summary["episodes"]) if isinstance(summary, dict) else None
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if status == "complete":
        return None
    # a running manifest has no summary of its own yet: no count
    not_recorded = None if status == "running" or recorded is None else episodes - recorded
    return f"{run_dir}: {unfinished_run_state(run_dir, status, episodes, not_recorded)}"


def manifest_plugins(manifest: Any) -> list[dict[str, str]]:
    """The plugins a run's manifest says its sessions loaded (see :func:`simworld.runner.loaded_plugins`);
    ``[]`` for a manifest from before they were recorded, or one whose field is damaged."""
    plugins = manifest.get("plugins") if isinstance(manifest, dict) else None
    if not isinstance(plugins, list):
        return []
    return [p for p in plugins if isinstance(p, dict) and all(isinstance(v, str) for v in p.values())
            and isinstance(p.get("module"), str)]


def run_plugins(run_dir: str | Path) -> list[dict[str, str]]:
    """:func:`manifest_plugins` of the run directory `run_dir` (``[]`` when its manifest cannot be read)."""
    try:
        return manifest_plugins(orjson.loads((Path(run_dir) / MANIFEST_FILE).read_bytes()))
    except (OSError, orjson.JSONDecodeError):
        return []


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
        fsync_dir(self.path.parent)

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


def fsync_dir(path: Path) -> None:
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
