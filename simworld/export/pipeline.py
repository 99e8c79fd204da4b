"""`simworld export`: stream runs into a training file, curated, with a dataset card beside it.

Records are read one at a time from each run's shards and written as they are formatted; what
stays in memory is per-episode offsets (the run reader's), the duplicate indexes (a few bytes per
kept sample) and the card's counters. Output goes to temporary files (data, validation split, the
trainer formats' metadata files, card) renamed into place together at the end, so a failed export
leaves no partial file and never touches an earlier one: its data and its card stay as they were.

Records are checked before they are used: one whose fields are not of the types a trajectory's
are is read as `simworld replay` reads it (skipped and named when it is not a valid trajectory);
its events are checked as they are rendered.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import sys
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from simworld import registry
from simworld.errors import DamagedRecord, SimworldError
from simworld.export.card import CardStats, card_files, card_paths, jsonl_stem, sample_characters
from simworld.export.curation import Deduplicator, iter_external, parse_mix, split_of
from simworld.export.formats import (FORMATS, SIDECAR_FORMATS, Llama3Line, assistant_turns, format_line,
                                     llama3_line_parts, sample_metadata, sharegpt_texts_left_out, system_part,
                                     turns_left_out)
from simworld.export.source import (RunInfo, Sample, ScoreLookup, compact_scores, distinct_run_names, json_text,
                                    open_run, sample_count, samples_of)
from simworld.llama3.format import FAILED_CALL, contains_special_token, failed_call_ids
from simworld.replay import RECORD_ERRORS, parse_record, record_problem
from simworld.runio import (discard, install_together, iter_records, remove_stale_temporaries, temp_name,
                            unfinished_run_note, write_synced)


@dataclass
class ExportOptions:
    """Everything `simworld export` can be asked (see its --help)."""

    fmt: str = "llama3"
    out: str = "export.jsonl"
    min_score: float | None = None
    only_success: bool = False
    task_types: tuple[str, ...] = ()
    scenarios: tuple[str, ...] = ()
    dedup: bool = True
    near_dedup: bool = True
    near_dup_bits: int = 10
    validation: float = 0.0
    val_out: str | None = None
    split_seed: int = 0
    mix: tuple[str, ...] = ()
    tokenize: bool = False
    mask_failed_calls: bool = False
    scorers: tuple[str, ...] = ()
    mix_today: dt.date | None = None
    """`Today Date` of the --mix conversations' llama3 system messages (None: they have none)."""
    command: str = ""


@dataclass
class ExportResult:
    outputs: dict[str, Path] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    card_paths: tuple[Path, ...] = ()
    metadata: dict[str, Path] = field(default_factory=dict)
    """The metadata file of each output (``train``, ``validation``) of a trainer format, else empty."""
    removed: tuple[Path, ...] = ()
    """Files an earlier export to the same OUT wrote and this one did not, removed (:func:`output_family`)."""


def validation_path(out: Path) -> Path:
    return out.with_name(jsonl_stem(out) + ".validation.jsonl")


def metadata_path(data: Path) -> Path:
    """The metadata file beside a trainer format's data file: ``train.jsonl`` -> ``train.meta.jsonl``."""
    return data.with_name(jsonl_stem(data) + ".meta.jsonl")


def output_paths(opts: ExportOptions) -> dict[str, Path]:
    """The files an export writes: ``train`` (--out) and, with --validation, ``validation``."""
    paths = {"train": Path(opts.out)}
    if opts.validation > 0:
        paths["validation"] = Path(opts.val_out) if opts.val_out else validation_path(paths["train"])
    return paths


def card_outputs(paths: dict[str, Path], metadata: dict[str, Path]) -> dict[str, str]:
    """The card's list of an export's files: each output, then its metadata file (``train_metadata``)."""
    return {**{k: str(p) for k, p in paths.items()}, **{f"{k}_metadata": str(p) for k, p in metadata.items()}}


def metadata_paths(opts: ExportOptions) -> dict[str, Path]:
    """The metadata file of each of :func:`output_paths` (the trainer formats: ``SIDECAR_FORMATS``), or none."""
    if opts.fmt not in SIDECAR_FORMATS:
        return {}
    return {key: metadata_path(path) for key, path in output_paths(opts).items()}


def output_family(paths: dict[str, Path]) -> list[Path]:
    """Every file an export to ``paths["train"]`` (OUT) may write, whatever its options: OUT, the
    default validation split, the metadata files of both (and of a --val-out file) and the card.
    An export owns these names: the ones it does not write this time go when it commits."""
    out = paths["train"]
    validation = validation_path(out)
    family = [out, validation, metadata_path(out), metadata_path(validation), *card_paths(out)]
    if "validation" in paths:
        family += [paths["validation"], metadata_path(paths["validation"])]
    return list(dict.fromkeys(family))


def _sync_file_range() -> Any:
    """libc's ``sync_file_range`` (Linux), or None."""
    if not sys.platform.startswith("linux") or not hasattr(os, "posix_fadvise"):
        return None
    try:
        import ctypes

        # The process's own symbols hold libc's (ctypes.util.find_library would run ldconfig, a
        # subprocess on every export).
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SFR_WRITE, _SFR_WAIT = 2, 1 | 2 | 4  # SYNC_FILE_RANGE_WRITE; WAIT_BEFORE | WRITE | WAIT_AFTER
_META = ".meta"  # (the key of a split's metadata file among _Outputs.files)


class _Streamed:
    """One output file written as a stream: each 16 MiB written is handed to the disk at once and,
    once on disk, dropped from the page cache.

    An export writes gigabytes it will not read again. Left in the page cache, they fill memory
    with dirty pages, and each new page the kernel has to find for them costs more CPU than the
    bytes do (on a VM, four to eight times as much, and unpredictably). Recycling a few chunks keeps
    the export's memory flat, its kernel time steady, and leaves the final fsync little to do.
    """

    CHUNK = 16 << 20
    _sfr: Any = None
    _sfr_loaded = False

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "wb", buffering=1 << 20)
        self.written = 0  # bytes handed to the file object
        self.started = 0  # bytes whose write-out was started
        self.dropped = 0  # bytes on disk and out of the page cache
        if not _Streamed._sfr_loaded:
            _Streamed._sfr, _Streamed._sfr_loaded = _sync_file_range(), True
        self.recycle = _Streamed._sfr is not None

    def write(self, data: bytes) -> None:
        self.fh.write(data)
        self.written += len(data)
        if self.recycle and self.written - self.started >= self.CHUNK:
            self._advance()

    def _advance(self) -> None:
        self.fh.flush()
        fd, sfr = self.fh.fileno(), _Streamed._sfr
        end = self.written
        ok = sfr(fd, self.started, end - self.started, _SFR_WRITE) == 0
        if ok and self.dropped < self.started:  # the previous chunk: wait for it, then let it go
            ok = sfr(fd, self.dropped, self.started - self.dropped, _SFR_WAIT) == 0
            if ok:
                os.posix_fadvise(fd, self.dropped, self.started - self.dropped, os.POSIX_FADV_DONTNEED)
                self.dropped = self.started
        self.started = end
        if not ok:  # a file system that cannot: write as usual (errors surface in write and fsync)
            self.recycle = False


def _cannot_write(path: Path, exc: OSError) -> SimworldError:
    return SimworldError(f"cannot write {path}: {exc.strerror or exc}")


class _Outputs:
    """The export's files, written to temporaries and renamed into place together on commit (the
    data, its metadata files and the card), so that a failure leaves the previous export as it was
    and no temporaries behind. `metadata`: the metadata file of each data file that has one.

    The commit also removes what an earlier export to the same OUT wrote and this one does not (a
    validation split, metadata files: :func:`output_family`), all or nothing with the renames, so
    that no old split or metadata sits beside data it does not belong to (`removed` lists them).
    `reads`: the identities (:func:`_file_id`) of the files the export reads, never removed."""

    def __init__(self, paths: dict[str, Path], metadata: dict[str, Path] | None = None,
                 reads: Collection[tuple[int, int]] = ()) -> None:
        metadata = metadata or {}
        # Every file streamed: the data (by split) and their metadata files (by split + META).
        self.files = {**paths, **{k + _META: p for k, p in metadata.items()}}
        self.family = output_family(paths)
        self.reads = reads
        self.removed: list[Path] = []
        # What a killed export left (SIGKILL, SIGTERM: no clean-up ran) goes before we add ours.
        remove_stale_temporaries([*self.files.values(), *self.family])
        self.paths = paths
        self.tmp = {k: temp_name(p) for k, p in self.files.items()}
        self.fh: dict[str, _Streamed] = {}
        self.count = {k: 0 for k in paths}
        self.staged: list[tuple[Path, Path]] = []  # (temporary, final) of the files written whole at commit
        try:
            for k, p in self.tmp.items():
                p.parent.mkdir(parents=True, exist_ok=True)
                self.fh[k] = _Streamed(p)
        except BaseException as exc:  # Ctrl-C or SIGTERM too: no temporary left behind
            self.abort()
            if isinstance(exc, OSError):
                raise _cannot_write(self.files[k], exc) from None
            raise

    def write(self, key: str, line: dict[str, Any] | bytes | list[bytes],
              metadata: dict[str, Any] | None = None) -> None:
        """Write one line: a dict, its serialized bytes, or byte pieces to join; and its `metadata`
        line to the split's metadata file."""
        self._put(key, line)
        if metadata is not None:
            self._put(key + _META, metadata)
        self.count[key] += 1

    def _put(self, key: str, line: dict[str, Any] | bytes | list[bytes]) -> None:
        fh = self.fh[key]
        try:
            if isinstance(line, list):
                line.append(b"\n")
                fh.write(b"".join(line))
            else:
                fh.write((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n")
        except OSError as exc:
            raise _cannot_write(self.files[key], exc) from None

    def commit(self, files: dict[Path, bytes] | None = None) -> None:
        """Finish the streamed files, write `files` (the card) beside them, then put all in place."""
        final = self.paths["train"]
        try:
            for k, out in self.fh.items():
                final = self.files[k]
                out.fh.flush()
                os.fsync(out.fh.fileno())
                out.fh.close()
            for final, data in (files or {}).items():
                tmp = temp_name(final)
                self.staged.append((tmp, final))
                write_synced(tmp, data)
        except OSError as exc:
            self.abort()
            raise _cannot_write(final, exc) from None
        moves = [(self.tmp[k], p) for k, p in self.files.items()] + self.staged
        aside: list[tuple[Path, Path]] = []  # (an earlier export's file, where it waits until all is in place)
        try:  # all or none: a failed rename puts back what the earlier ones replaced, and what was set aside
            for old in self._left_by_an_earlier_export(p for _, p in moves):
                kept = temp_name(old, "old")
                try:
                    os.replace(old, kept)
                    aside.append((old, kept))
                except OSError as exc:
                    raise SimworldError(f"cannot remove {old}, which an earlier export to {self.paths['train']} "
                                        f"wrote and this one does not: {exc.strerror or exc}") from None
            install_together(moves)
        except BaseException as exc:
            for old, kept in reversed(aside):
                try:
                    os.replace(kept, old)
                except OSError:
                    pass
            discard(tmp for tmp, _ in moves)
            if isinstance(exc, OSError):
                raise _cannot_write(Path(exc.filename), exc) from None
            raise
        discard(kept for _, kept in aside)
        self.removed = [old for old, _ in aside]

    def _left_by_an_earlier_export(self, written: Iterator[Path]) -> list[Path]:
        """The files of :func:`output_family` that exist and that this export neither writes nor reads."""
        ours = {os.path.realpath(p) for p in written}
        return [p for p in self.family if os.path.realpath(p) not in ours and os.path.isfile(p)
                and _file_id(p) not in self.reads]

    def abort(self) -> None:
        for out in self.fh.values():
            try:
                out.fh.close()
            except OSError:
                pass
        discard([*self.tmp.values(), *(tmp for tmp, _ in self.staged)])


def _check_target(path: Path, option: str | None) -> None:
    """A file the export will rename into place (`option` names it; None: a card): never over a
    directory or a device, and with a name the file system takes."""
    try:
        if path.exists() and not path.is_file():
            raise SimworldError(f"{option} {path} exists and is not a regular file" if option else
                                f"cannot write {path}: it exists and is not a regular file")
        os.lstat(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # a name too long, a parent that may not be read
        raise _cannot_write(path, exc) from None


def _check_out(out: Path, runs: Sequence[RunInfo], option: str = "--out") -> None:
    for run in runs:
        if out.parent.resolve() == run.path.resolve() and out.name.endswith(".jsonl"):
            raise SimworldError(f"{option} {out}: a run directory may hold no other .jsonl file than its shards; "
                                "write the export elsewhere")
    try:
        for parent in (out.parent, *out.parent.parents):
            if parent.exists():
                if not parent.is_dir():
                    raise SimworldError(f"{option} {out}: {parent} is not a directory")
                break
    except OSError as exc:
        raise _cannot_write(out, exc) from None
    _check_target(out, option)


def _check_output_names(opts: ExportOptions) -> None:
    """--out and --val-out name a file: not empty (an unset shell variable), not a directory's name."""
    for option, raw in (("--out", opts.out), ("--val-out", opts.val_out)):
        if raw is None:
            continue
        if not raw:
            raise SimworldError(f"{option} is empty: name the output file (an unset shell variable?)")
        if os.path.basename(raw) in ("", ".", ".."):
            raise SimworldError(f"{option} {raw} names a directory, not a file; "
                                f"name the file, e.g. {os.path.join(raw, 'export.jsonl')}")


def _file_id(path: str | Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _inputs(runs: Sequence[RunInfo], mixes: Sequence[tuple[Path, float]]) -> dict[tuple[int, int], str]:
    """The files an export reads, by identity (whatever path, symlink or hard link names them): each
    --mix file and every file of each run directory (shards, scenario, manifest, scores)."""
    found: dict[tuple[int, int], str] = {}
    for path, _ in mixes:
        key = _file_id(path)
        if key is not None:
            found.setdefault(key, f"the --mix file {path}")
    for run in runs:
        for folder, _, names in os.walk(run.path):
            for name in names:
                key = _file_id(os.path.join(folder, name))
                if key is not None:
                    found.setdefault(key, f"{os.path.join(folder, name)} of run {run.path}")
    return found


def _check_outputs(paths: dict[str, Path], runs: Sequence[RunInfo], cards: Sequence[Path],
                   inputs: dict[tuple[int, int], str], metadata: dict[str, Path] | None = None) -> None:
    """Everything an export will write can be written, no two of them are one file, and none is a
    file the export reads (`inputs`, :func:`_inputs`: the export would replace it)."""
    for key, path in paths.items():
        _check_out(path, runs, "--out" if key == "train" else "--val-out")
    for path in (metadata or {}).values():
        _check_out(path, runs, "the metadata file")
    for card in cards:
        _check_target(card, None)
    outputs = [*(("--out" if k == "train" else "--val-out", p) for k, p in paths.items()),
               *(("the metadata file", p) for p in (metadata or {}).values()),
               *(("the card", p) for p in cards)]
    for what, path in outputs:
        read = inputs.get(_file_id(path))  # type: ignore[arg-type]
        if read is not None:
            raise SimworldError(f"{what} {path} is {read}, which the export reads; write the export to another file")
    seen: dict[str, str] = {}
    for what, path in outputs:
        key = os.path.realpath(path)
        if key in seen:
            raise SimworldError(f"{what} {path} is the {seen[key]} file; give each output its own")
        seen[key] = what


def _check_filters(opts: ExportOptions, runs: Sequence[RunInfo]) -> None:
    """A --task-type or --scenario that none of the runs can hold is a typo, not an empty export."""
    registry.load_builtins()
    tasks = sorted({name for run in runs for name in registry.TASKS.get(run.scenario.world.type, {})})
    for name in opts.task_types:
        if name not in tasks:
            raise SimworldError(f"--task-type {name!r}: no task of that name in the world of these runs; "
                                f"one of {', '.join(tasks)}")
    scenarios = sorted({run.scenario.name for run in runs})
    for name in opts.scenarios:
        if name not in scenarios:
            raise SimworldError(f"--scenario {name!r}: no run of that scenario; these runs are of "
                                f"{', '.join(scenarios)}")


def _has_special_tokens(sample: Sample) -> bool:
    """Does any text of the sample hold a Llama 3 special token: a message, a call's arguments, the
    system prompt or a tool definition? (A tokenizer that parses them would read a turn boundary.)"""
    msgs = sample.messages
    if msgs and msgs[0]["role"] == "system" and sample.synthetic:
        if system_part(sample).special:  # prompt and tool definitions, checked once per distinct prompt
            return True
        msgs = msgs[1:]
    elif sample.tools_openai and contains_special_token(orjson.dumps(sample.tools_openai).decode()):
        return True  # an external conversation's tools
    for m in msgs:
        if contains_special_token(m["content"]):
            return True
        for c in m.get("tool_calls") or ():
            if contains_special_token(orjson.dumps(c.get("arguments") or {}).decode()):
                return True
    return False


def _failed_calls(sample: Sample) -> int:
    """Tool calls of the sample whose result was an error (what --mask-failed-calls keeps out of the loss)."""
    if sample.rendered is not None:
        return sum(1 for m in sample.rendered.conversation if m.get("invalid") == FAILED_CALL)
    failed = failed_call_ids([*sample.messages, *sample.tail])
    if not failed:
        return 0
    return sum(1 for m in sample.messages if m["role"] == "assistant"
               for c in m.get("tool_calls") or () if c.get("id") in failed)


def _filter_reason(record: dict[str, Any], opts: ExportOptions) -> str | None:
    """Why the --scenario, --task-type and --only-success filters leave `record` out, or None."""
    if opts.scenarios and record.get("scenario") not in opts.scenarios:
        return "scenario"
    if opts.task_types and (record.get("task") or {}).get("type") not in opts.task_types:
        return "task_type"
    if opts.only_success and not (record.get("outcome") or {}).get("success"):
        return "not_successful"
    return None


_NONE = type(None)
_RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "schema_version": int, "episode_id": str, "scenario": str, "scenario_hash": str, "seed": int,
    "task_seed": (int, _NONE), "episode_index": int, "variation": dict, "agents": dict, "world": dict, "task": dict,
    "system": dict, "tools": dict, "events": list, "final_state_hash": str, "outcome": dict, "provenance": dict}
_KNOWN_FIELDS = frozenset(_RECORD_FIELDS)
_REQUIRED_FIELDS = frozenset(("episode_id", "scenario", "scenario_hash", "seed", "task", "provenance"))
_WELL_TYPED_SHAPES: set[tuple[Any, ...]] = set()
"""The field names, then the types of their values, of records whose top-level fields are well typed."""


def _well_typed(record: dict[str, Any]) -> bool:
    """Whether the fields of `record` that export reads have the types `Trajectory.to_jsonl` writes:
    every top-level field, and what export takes from task, outcome, provenance, agents, system
    and tools. About 2 µs, where validating the record as a Trajectory takes 30 (9 without its
    events); the events are checked as they are rendered (:class:`~simworld.export.source.MalformedEvent`)."""
    shape = (*record, *map(type, record.values()))
    if shape not in _WELL_TYPED_SHAPES:  # (records of a run share one or two: checked once each)
        if not _REQUIRED_FIELDS <= record.keys() <= _KNOWN_FIELDS:
            return False
        for key, value in record.items():
            kind = _RECORD_FIELDS[key]
            if type(value) is not kind and (type(kind) is not tuple or type(value) not in kind):
                return False
        if len(_WELL_TYPED_SHAPES) >= 256:
            _WELL_TYPED_SHAPES.clear()
        _WELL_TYPED_SHAPES.add(shape)
    if record["seed"] < 0 or record.get("episode_index", 0) < 0 or (record.get("task_seed") or 0) < 0:
        return False
    task = record["task"]
    if type(task.get("type")) is not str or type(task.get("instance_id")) is not str:
        return False
    if type(record.get("outcome", {}).get("success", False)) is not bool:
        return False
    prov = record["provenance"]
    if type(prov.get("simworld_version")) is not str or type(prov.get("agent_ids", {})) is not dict \
            or type(prov.get("models", {})) is not dict or type(prov.get("synthetic", True)) is not bool \
            or type(prov.get("parent")) not in (str, _NONE) or type(prov.get("fork_at")) not in (int, _NONE):
        return False
    for agent in record.get("agents", {}).values():
        if type(agent) is not dict:
            return False
    for prompt in record.get("system", {}).values():
        if type(prompt) is not str:
            return False
    for names in record.get("tools", {}).values():
        if type(names) is not list:
            return False
    return True


def trajectory_record(record: dict[str, Any]) -> dict[str, Any] | str:
    """`record` itself when it is well typed (:func:`_well_typed`); else, as `simworld replay` reads
    it (:func:`~simworld.replay.parse_record`), the record a Trajectory makes of it (``"5"`` for a
    seed becomes 5) or why it is not a trajectory."""
    if _well_typed(record):
        return record
    traj = parse_record(record)
    return traj if isinstance(traj, str) else traj.model_dump()


def _note_skipped(note: str, stats: CardStats) -> None:
    """Count a record (or a line) the export skipped; the first 20 are named (`note`)."""
    stats.malformed_records += 1
    notes = stats.extra.setdefault("malformed_records", [])
    if len(notes) < 20:
        notes.append(note)


def _note_malformed(record: Any, reason: str, stats: CardStats) -> None:
    eid = record.get("episode_id", "?") if isinstance(record, dict) else "?"
    _note_skipped(f"{eid if isinstance(eid, str) else '?'}: {reason}", stats)


def skipped_lines(run_dir: Path, problems: Sequence[tuple[str, str]]) -> list[str]:
    """The lines of a run that :func:`~simworld.runio.iter_records` skipped (its `problems`) and
    that are damage, each naming its shard (under `run_dir`) and why: every line that holds no
    record, and a torn last line, unless the run is unfinished. That one is a write that was
    cut short (or is still under way): its episode is not recorded yet, as the unfinished run's
    note says (:func:`~simworld.runio.unfinished_run_note`), and its next `simworld run` cuts it."""
    if not problems:
        return []
    unfinished = any(kind == "torn" for kind, _ in problems) and unfinished_run_note(run_dir) is not None
    return [json_text(str(run_dir / where)) for kind, where in problems if not (kind == "torn" and unfinished)]


def _skip_malformed(record: Any, exc: BaseException, stats: CardStats) -> None:
    """Count and note a record the export cannot read, as `simworld score` does (re-raises `exc`
    when the record is a valid trajectory: :func:`~simworld.replay.record_problem`)."""
    if isinstance(exc, DamagedRecord):
        reason = str(exc)
    else:
        try:
            reason = record_problem(record, exc)
        except TypeError:  # a valid trajectory: one that orjson cannot write (nested too deeply)?
            try:
                orjson.dumps(record)
            except orjson.JSONEncodeError as too_deep:
                reason = f"cannot be written as JSON: {too_deep}"
            else:
                raise
    _note_malformed(record, reason, stats)


def _synthetic_groups(runs: Sequence[RunInfo], opts: ExportOptions, stats: CardStats,
                      with_messages: bool = False) -> Iterator[list[Sample]]:
    """The samples of each kept record, one list per record. Records of the wrong shape are skipped
    and counted (``malformed_records_skipped``); `with_messages` builds each sample's messages
    here, so that a record whose messages cannot be built is skipped too. A record a filter leaves
    out counts as the samples it would have given."""
    filtering = bool(opts.scenarios or opts.task_types or opts.only_success)
    for run in runs:
        lookup = ScoreLookup(run)
        made_here = run.scenario.content_hash
        elsewhere = 0  # records made under another scenario than the run's scenario.yaml (edited since?)
        unreadable: list[tuple[str, str]] = []
        try:
            for record in iter_records(run.path, problems=unreadable):
                checked = trajectory_record(record)
                if type(checked) is str:
                    _note_malformed(record, checked, stats)
                    continue
                record = checked
                if record["scenario_hash"] != made_here:
                    elsewhere += 1
                try:
                    if (record.get("outcome") or {}).get("termination") == "error":
                        # Its agent failed (a model call that kept failing): cut short by the failure,
                        # not a conversation; the run's resume re-runs it.
                        reason = "agent_failed"
                    else:
                        reason = _filter_reason(record, opts) if filtering else None
                    if reason is None:
                        line = lookup.get(record)
                        if "error" in line:  # a record it could not score
                            _note_malformed(record, line["error"], stats)
                            continue
                        scores = compact_scores(line)
                        if opts.min_score is not None and scores["value"] < opts.min_score - 1e-9:
                            reason = "below_min_score"
                    if reason is not None:
                        stats.filtered[reason] += sample_count(run, record)
                        continue
                    samples = samples_of(run, record, scores)
                    if with_messages:
                        for sample in samples:
                            sample.messages  # noqa: B018
                except RECORD_ERRORS as exc:
                    _skip_malformed(record, exc, stats)
                    continue
                if samples:
                    yield samples
        finally:  # (only this: a generator closed by Ctrl-C must not do work here)
            lookup.close()
        for where in skipped_lines(run.path, unreadable):
            _note_skipped(where, stats)
        stats.extra.setdefault("scores_computed_during_export", 0)
        stats.extra["scores_computed_during_export"] += lookup.computed
        if lookup.unreadable:
            stats.extra.setdefault("score_files_unreadable", []).append(
                f"{json_text(str(lookup.path))}: {lookup.unreadable}")
        if lookup.stale:
            stats.extra.setdefault("score_files_stale", []).append(json_text(str(lookup.path)))
        if lookup.other_scorers is not None:
            stats.extra.setdefault("score_files_of_other_scorers", {})[json_text(str(lookup.path))] = lookup.other_scorers
        if elsewhere:
            stats.extra.setdefault("records_of_another_scenario", {})[json_text(str(run.path))] = elsewhere


def _synthetic_samples(runs: Sequence[RunInfo], opts: ExportOptions, stats: CardStats) -> Iterator[Sample]:
    """Every sample of the kept, well-formed records, messages built."""
    for group in _synthetic_groups(runs, opts, stats, with_messages=True):
        yield from group


def _open_runs(run_dirs: Sequence[str | Path], scorers: tuple[str, ...]) -> list[RunInfo]:
    """The runs, each named so that sample ids and provenance tell apart runs whose directories
    share a name (:func:`~simworld.export.source.distinct_run_names`)."""
    seen: dict[str, str | Path] = {}
    for d in run_dirs:
        key = os.path.realpath(d)
        if key in seen:
            also = f" (also as {seen[key]})" if str(seen[key]) != str(d) else ""
            raise SimworldError(f"run {d} is given twice{also}; give each run once")
        seen[key] = d
    runs = [open_run(d, scorers) for d in run_dirs]
    for run, name in zip(runs, distinct_run_names([run.path for run in runs])):
        run.name = name
    return runs


def export_runs(run_dirs: Sequence[str | Path], opts: ExportOptions) -> ExportResult:
    """Export the runs' trajectories in `opts.fmt` to `opts.out` (+ validation split, + the trainer
    formats' metadata files, + card)."""
    if opts.fmt not in FORMATS:
        raise SimworldError(f"unknown format {opts.fmt!r}; one of {', '.join(FORMATS)}")
    if not run_dirs:
        raise SimworldError("no run directory given")
    if opts.mix and opts.fmt == "dpo":
        raise SimworldError("--mix applies to the conversation formats (llama3, openai, trl, sharegpt): "
                            "the external data are conversations, not preference pairs")
    if opts.tokenize and opts.fmt != "llama3":
        raise SimworldError("--tokenize applies to --format llama3")
    if opts.mask_failed_calls and opts.fmt not in ("llama3", "openai"):
        raise SimworldError("--mask-failed-calls applies to --format llama3 and openai (the others have no "
                            "per-turn loss)")
    if opts.mix_today is not None and not (opts.mix and opts.fmt == "llama3"):
        raise SimworldError("--mix-today applies to --mix with --format llama3 (the other formats write the "
                            "conversations' own system messages, which hold no date)")
    if not 0 <= opts.validation < 1:
        raise SimworldError("--validation must be a fraction in [0, 1)")
    if opts.val_out is not None and not opts.validation:
        raise SimworldError("--val-out applies with --validation FRACTION (without it there is no validation split "
                            "to write)")
    if opts.min_score is not None and not 0 <= opts.min_score <= 1:  # (NaN too)
        raise SimworldError(f"--min-score {opts.min_score}: must be a mean score in [0, 1]")
    _check_output_names(opts)
    runs = _open_runs(run_dirs, opts.scorers)
    _check_filters(opts, runs)
    out = Path(opts.out)
    mixes = [parse_mix(m) for m in opts.mix]
    reads = _inputs(runs, mixes)
    _check_outputs(output_paths(opts), runs, card_paths(out), reads, metadata_paths(opts))
    if sum(f for _, f in mixes) >= 1:
        raise SimworldError("--mix fractions must add up to less than 1")
    for path, _ in mixes:  # validate every line before writing anything
        if not sum(1 for _ in iter_external(path)):
            raise SimworldError(f"--mix {path}: holds no conversation to mix in")
    if opts.fmt == "dpo":
        from simworld.export.dpo import export_dpo

        return export_dpo(runs, opts, out, reads)
    tokenizer = None
    if opts.tokenize:
        from simworld.export.masks import LlamaTokenizer

        tokenizer = LlamaTokenizer()
    stats = CardStats(opts.fmt)
    for run in runs:
        stats.add_run(run)
    if opts.mask_failed_calls:
        stats.extra["failed_calls_masked"] = 0
    if opts.fmt == "sharegpt":
        stats.extra["call_texts_left_out"] = 0
    leaves_out_turns = opts.fmt in ("openai", "trl", "sharegpt")
    if leaves_out_turns:
        stats.extra["invalid_turns_left_out"] = 0
    dedup = Deduplicator(near=opts.near_dedup, max_bits=opts.near_dup_bits) if opts.dedup else None
    paths = output_paths(opts)
    metadata = metadata_paths(opts)
    externals = [(path, frac, iter_external(path, opts.mix_today)) for path, frac in mixes]
    mix_stats = [{"file": json_text(str(path)), "requested": frac, "samples": 0, "exhausted": False, "left_out": 0}
                 for path, frac in mixes]
    total_frac = sum(f for _, f in mixes)
    synthetic_written = 0

    fast_llama3 = opts.fmt == "llama3" and tokenizer is None

    def render(sample: Sample) -> tuple[Llama3Line | None, dict[str, Any] | list[bytes] | None, bool]:
        """(the fast llama3 line or None, the line to write or None, whether its text holds special tokens)."""
        if fast_llama3 and sample.today is not None:  # (an external conversation may have no date)
            fast = llama3_line_parts(sample, opts.mask_failed_calls)
            return fast, fast.pieces, fast.special and _has_special_tokens(sample)
        return None, format_line(opts.fmt, sample, tokenizer, opts.mask_failed_calls), _has_special_tokens(sample)

    def emit(sample: Sample, fast: Llama3Line | None, line: dict[str, Any] | list[bytes] | None, special: bool) -> bool:
        if special:
            stats.filtered["special_tokens_in_text"] += 1
            return False
        if line is None:  # the format left out every assistant turn (all invalid): nothing to learn
            stats.filtered["no_valid_assistant_turn"] += 1
            return False
        if dedup is not None and not (dedup.keep(sample, fast.text_json, fast.system.seed) if fast is not None
                                      else dedup.keep(sample)):
            return False
        split = split_of(sample.split_key, opts.validation, opts.split_seed)
        if sample.synthetic:  # (the card counts turns and calls of the synthetic samples only)
            turns = fast.turns if fast is not None else assistant_turns(opts.fmt, line)  # type: ignore[arg-type]
        else:
            turns = None
        outputs.write(split, line, sample_metadata(sample) if metadata else None)
        if fast is not None:  # the text is the system part's, then the conversation's
            text = sample.rendered.text if sample.rendered is not None else orjson.loads(fast.text_json)
            stats.add(sample, split, turns, fast.system.prefix_len + len(text))
        else:
            stats.add(sample, split, turns, sample_characters(opts.fmt, line),  # type: ignore[arg-type]
                      len(line["tokens"]) if tokenizer is not None else None)  # type: ignore[index]
        if opts.mask_failed_calls:
            stats.extra["failed_calls_masked"] += _failed_calls(sample)
        if opts.fmt == "sharegpt":
            stats.extra["call_texts_left_out"] += sharegpt_texts_left_out(sample.messages)
        if leaves_out_turns:
            stats.extra["invalid_turns_left_out"] += turns_left_out(opts.fmt, sample.messages)
        return True

    def mix_wanted(frac: float) -> int:
        """External samples make up `frac` of the output: frac / (1 - total) per synthetic one so far,
        rounded to the nearest whole sample (a fraction of less than half a sample mixes in none)."""
        return int(frac / (1 - total_frac) * synthetic_written + 0.5)

    gc_was_enabled = gc.isenabled()
    outputs = _Outputs(paths, metadata, reads)
    try:  # (at once: from here on, an interrupt removes the temporaries)
        gc.disable()  # the loop makes no reference cycles; the cyclic collector would only rescan
        for group in _synthetic_groups(runs, opts, stats):
            try:  # every line of a record is made before any is written: a bad record leaves none
                lines = [render(sample) for sample in group]
            except RECORD_ERRORS as exc:
                _skip_malformed(group[0].record, exc, stats)
                continue
            for sample, (fast, line, special) in zip(group, lines):
                if not emit(sample, fast, line, special):
                    continue
                synthetic_written += 1
                for k, (path, frac, it) in enumerate(externals):
                    while not mix_stats[k]["exhausted"] and mix_stats[k]["samples"] < mix_wanted(frac):
                        ext = next(it, None)
                        if ext is None:
                            mix_stats[k]["exhausted"] = True
                        elif emit(ext, *render(ext)):
                            mix_stats[k]["samples"] += 1
                        else:  # (a duplicate, or filtered: counted there too)
                            mix_stats[k]["left_out"] += 1
        total = stats.samples
        for m in mix_stats:
            m["achieved"] = m["samples"] / total if total else 0.0
            m["wanted"] = mix_wanted(m["requested"])  # (more than `samples` only when the file ran out)
        stats.mix = mix_stats
        duplicates = {"exact": dedup.removed_exact if dedup else 0, "near": dedup.removed_near if dedup else 0}
        card = stats.as_dict(opts.command, opts.fmt, card_outputs(paths, metadata), duplicates)
        cards = card_files(out, card)
        outputs.commit(cards)
    except BaseException:
        outputs.abort()
        raise
    finally:
        if gc_was_enabled:
            gc.enable()
    return ExportResult(outputs=paths, written=dict(outputs.count), card=card, card_paths=tuple(cards),
                        metadata=metadata, removed=tuple(outputs.removed))
