"""The batch runner behind `simworld run`: episodes of one scenario into one run directory.

* **Independent specs.** A run is the episode specs ``0..episodes-1`` of a scenario (ids, seeds
  and variations from :func:`~simworld.episode.episode_specs`); each episode depends only on its
  spec, so the trajectories are the same whatever the worker count or concurrency.
* **Workers.** `workers` > 1 forks processes (spawn where fork is unavailable); each runs the same
  local runner on its share of the specs and appends to its own shard. The generated world is
  built once in the parent before forking, so workers share its memory.
* **Concurrency.** Within a process, up to `concurrency` episodes run on one asyncio loop (model
  calls overlap). A scenario whose agents are all scripted runs synchronously, with no loop.
* **Resume.** Re-running into the same directory skips episodes that have a record, repairs a torn
  last line, and re-runs episodes recorded as failed by their agent (`termination == "error"`).
  Each run appends to new shards (a *session*); readers keep the last record per episode id.
  A directory holding a different resolved scenario is refused, and so are fewer episodes than
  the run already has: a run's episode count never shrinks.
* **Errors.** A full disk or an unwritable directory ends the run with one line; every record
  already written stays intact. An exception inside an episode (a bug in a world or agent, not an
  :class:`~simworld.episode.AgentFailure`) stops the run naming the episode.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

import simworld
from simworld import registry
from simworld.episode import EpisodeSpec, episode_id, episode_seed, episode_specs, run_episode, run_episode_sync
from simworld.errors import EpisodeCrash, SimworldError, counted, one_line
from simworld.interrupts import interrupt
from simworld.runio import (LOCK_FILE, MANIFEST_FILE, SCENARIO_FILE, ShardWriter, foreign_jsonl, manifest_plugins,
                            next_session, remove_stale_temporaries, scan_shard, shard_name, shard_paths, truncate_tail,
                            write_atomic)
from simworld.replay import RECORD_ERRORS, record_problem
from simworld.scenario import Scenario, load_scenario, parse_overrides
from simworld.summary import EpisodeStats, RunSummary, episode_stats, trajectory_stats
from simworld.types import Trajectory
from simworld.world import episode_crash

try:
    import fcntl
except ImportError:  # no advisory locks on this platform: concurrent runs into one directory are not detected
    fcntl = None  # type: ignore[assignment]

MANIFEST_FORMAT = "simworld.run/2"
"""/2: each variation path draws from its own stream (:func:`~simworld.episode.draw_variation`)."""
LEGACY_DRAW_FORMAT = "simworld.run/1"
"""The manifest format of runs that drew variations from one stream over the sorted paths: they
resume with that draw (:func:`~simworld.episode.draw_variation_legacy`) and keep this format."""
DEFAULT_LLM_CONCURRENCY = 8


class RunInterrupted(SimworldError):
    """The run was stopped (Ctrl-C, SIGTERM); what was written stays and the run resumes."""

    exit_code = 130


# ----------------------------------------------------------------------------------------------
# Resolving the scenario


def resolve_scenario(path: str | Path, sets: Iterable[str] = (), seed: int | None = None,
                     max_retries: int | None = None) -> Scenario:
    """The scenario a `run` command means: file + ``--set`` overrides + ``--seed`` + ``--max-retries``.

    `seed` replaces the scenario's seed (it names the episodes and, unless the world has its own
    seed, generates the world). `max_retries` is set on every role whose agent has a
    ``max_retries`` parameter, unless a ``--set`` already sets it there.
    """
    overrides = parse_overrides(list(sets))
    if seed is not None:
        overrides["seed"] = seed
    sc = load_scenario(path, overrides)
    if max_retries is None:
        return sc
    extra = {}
    for role, spec in sc.roles.items():
        key = f"roles.{role}.agent.max_retries"
        if key not in overrides and "max_retries" in registry.get_agent(spec.agent.type).Params.model_fields:
            extra[key] = max_retries
    return load_scenario(path, {**overrides, **extra}) if extra else sc


def scenario_yaml(sc: Scenario) -> bytes:
    """The resolved scenario as YAML (what a run directory's ``scenario.yaml`` holds).

    `repeats` is written only when it is not 1, as before the field existed.
    """
    return yaml.safe_dump(sc.model_dump(mode="json", exclude={"repeats"} if sc.repeats == 1 else None),
                          sort_keys=False, allow_unicode=True, width=100).encode()


def is_scripted(sc: Scenario) -> bool:
    """True when no role's agent calls a model (its Params has no `model` field): no event loop needed."""
    for spec in sc.roles.values():
        cls = registry.get_agent(spec.agent.type)
        scripted = getattr(cls, "scripted", None)
        if scripted is False or (scripted is None and "model" in cls.Params.model_fields):
            return False
    return True


# ----------------------------------------------------------------------------------------------
# Run directory


def _os_problem(what: str, path: Path, exc: OSError) -> SimworldError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space left on device"
    elif exc.errno == errno.EFBIG:
        reason = "file size limit exceeded"
    return SimworldError(f"cannot {what} {path}: {reason}")


_IGNORED_SHOWN = 5  # "ignored a record" notes listed one by one; the rest are counted


@dataclass
class _Prior:
    """What earlier sessions left in a run directory."""

    latest: dict[int, EpisodeStats] = field(default_factory=dict)
    repaired: list[str] = field(default_factory=list)
    records: int = 0
    torn: list[tuple[Path, int, int]] = field(default_factory=list)  # (shard, good end, size): cut by repair()
    variations: list[tuple[int, Any]] = field(default_factory=list)  # (index, variation) of a few records


class RunDir:
    """A run directory opened for writing: locked, checked against the scenario, tails repaired."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_fd = -1

    def open(self, sc: Scenario, lock_wait_s: float = 5.0) -> None:
        p = self.path
        if p.exists() and not p.is_dir():
            raise SimworldError(f"--out {p}: exists and is not a directory")
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_problem("create output directory", p, exc) from None
        try:
            self._lock_fd = os.open(p / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _os_problem("write to output directory", p, exc) from None
        # Workers of a killed run notice within one episode that their parent is gone; wait for them.
        deadline = time.monotonic() + lock_wait_s
        while fcntl is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.close()
                    raise SimworldError(f"{p}: another simworld run is writing to this directory") from None
                time.sleep(0.1)
        # The directory is ours: what a killed run left half-written (SIGKILL between a temporary
        # and its rename) goes.
        remove_stale_temporaries([p / SCENARIO_FILE, p / MANIFEST_FILE])
        try:
            self._check_scenario(sc)
        except BaseException:
            self.close()
            raise

    def _check_scenario(self, sc: Scenario) -> None:
        p = self.path
        existing = p / SCENARIO_FILE
        if existing.exists():
            try:
                data = yaml.safe_load(existing.read_bytes())
                old_hash = Scenario.model_validate(data).content_hash
            except Exception as exc:  # any damage to the file: refuse rather than guess
                raise SimworldError(f"{existing}: unreadable resolved scenario ({type(exc).__name__}); "
                                    "use a new --out directory") from None
            if old_hash != sc.content_hash:
                raise SimworldError(f"{p} holds a run of a different scenario (hash {old_hash}, this command's "
                                    f"is {sc.content_hash}); use another --out directory or the same scenario, "
                                    "--set and --seed options")
            return
        foreign = foreign_jsonl(p)
        if foreign:
            raise SimworldError(f"{p}: holds {foreign[0].name} but no {SCENARIO_FILE}; not a simworld run "
                                "directory (use an empty or new --out directory)")
        if shard_paths(p):
            raise SimworldError(f"{p}: holds trajectory shards but no {SCENARIO_FILE}; cannot tell which "
                                "scenario they belong to")
        try:
            write_atomic(existing, scenario_yaml(sc))
        except OSError as exc:
            raise _os_problem("write", existing, exc) from None

    def scan(self, sc: Scenario) -> _Prior:
        """Read earlier sessions' records (latest per episode) and find torn or corrupt tails (cut by
        :meth:`repair`). A record counts for episode i only if it has that episode's id and seed.
        Records made under another scenario than `sc` (the run's scenario.yaml edited since) refuse
        the run: appending to them would mix two scenarios in one run."""
        prior = _Prior()
        foreign = foreign_jsonl(self.path)
        if foreign:
            raise SimworldError(f"{self.path}: {foreign[0].name} is not a simworld shard; nothing but "
                                "trajectory shards may end in .jsonl in a run directory")
        other_scenarios: dict[str, int] = {}
        ignored: list[str] = []
        seen = 0

        def keep(record: dict[str, Any]) -> None:
            nonlocal seen
            seen += 1
            made_under = record.get("scenario_hash")
            if isinstance(made_under, str) and made_under != sc.content_hash:
                other_scenarios[made_under] = other_scenarios.get(made_under, 0) + 1
                return
            try:
                stats = episode_stats(record)
                index = record["episode_index"]
                if not isinstance(index, int) or index < 0:
                    raise ValueError("episode_index is not an index")
                eid = episode_id(sc.name, sc.seed, index)
                if record["episode_id"] != eid or record["seed"] != episode_seed(sc.seed, index):
                    # Altered by hand or on disk: it would stand in for an episode it is not.
                    ignored.append(f"{path.name}: ignored a record of episode {record['episode_id']!r} "
                                   f"with index {index}, not episode {eid}'s id and seed (that episode "
                                   "runs again unless another record is its own)")
                    return
            except RECORD_ERRORS as exc:
                # Valid JSON but not a trajectory (damaged by hand or on disk): the episode runs again
                # and its new record, written later, is the one every reader takes.
                ignored.append(f"{path.name}: ignored a record of episode {record['episode_id']} that is "
                               f"{record_problem(record, exc)} (an episode left with no valid record "
                               "runs again)")
                return
            if len(prior.variations) < _DRAW_EVIDENCE and record.get("variation"):
                prior.variations.append((index, record["variation"]))
            prior.latest[stats.index] = stats
            prior.records += 1

        for path in shard_paths(self.path):
            try:
                good_end, size = scan_shard(path, keep)
            except OSError as exc:
                raise _os_problem("read", path, exc) from None
            if good_end < size:
                prior.torn.append((path, good_end, size))
        if other_scenarios:
            made_under, n = max(other_scenarios.items(), key=lambda kv: kv[1])
            which = (f"its {counted(n, 'record')} {'was' if n == 1 else 'were'}" if n == seen
                     else f"{n:,} of its {counted(seen, 'record')} {'was' if n == 1 else 'were'}")
            raise SimworldError(f"{self.path}: {which} made under scenario {made_under[:12]}, but "
                                f"{self.path / SCENARIO_FILE} is now {sc.content_hash[:12]}; restore it or use "
                                "a new --out")
        prior.repaired.extend(ignored[:_IGNORED_SHOWN])
        if len(ignored) > _IGNORED_SHOWN:
            prior.repaired.append(f"{len(ignored) - _IGNORED_SHOWN:,} more records ignored as above "
                                  "(their episodes run again)")
        return prior

    def repair(self, prior: _Prior) -> None:
        """Cut the torn or corrupt tails `scan` found, noting each in `prior.repaired`."""
        for path, good_end, size in prior.torn:
            try:
                truncate_tail(path, good_end)
            except OSError as exc:
                raise _os_problem("write", path, exc) from None
            prior.repaired.append(f"{path.name}: cut {counted(size - good_end, 'byte')} of a torn last line")
        prior.torn = []

    def load_manifest(self) -> tuple[dict[str, Any], Exception | None]:
        """The manifest earlier sessions wrote ({} for a new run), or ({}, why) for one that cannot
        be read or is not of the shape `run` writes. Changes nothing."""
        path = self.path / MANIFEST_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return {}, None
        except OSError as exc:
            raise _os_problem("read", path, exc) from None
        try:
            manifest = orjson.loads(data)
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
            int(manifest.get("episodes", 0) or 0)
            if not isinstance(manifest.get("sessions", []), list):
                raise ValueError("sessions is not a list")
            return manifest, None
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            return {}, exc

    def set_aside_manifest(self, problem: Exception, notes: list[str]) -> None:
        """Move a manifest :meth:`load_manifest` could not take (`problem`) aside as
        ``manifest.json.damaged`` (noted in `notes`): the run goes on with a new one, its records
        are what matter."""
        path = self.path / MANIFEST_FILE
        damaged = path.with_name(MANIFEST_FILE + ".damaged")
        try:
            os.replace(path, damaged)
        except OSError as exc:
            raise _os_problem("write", damaged, exc) from None
        notes.append(f"{MANIFEST_FILE}: unreadable ({one_line(problem)}); kept as {damaged.name}, "
                     "a new one is written (earlier sessions' history starts again)")

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        path = self.path / MANIFEST_FILE
        try:
            write_atomic(path, orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
        except OSError as exc:
            raise _os_problem("write", path, exc) from None

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


# ----------------------------------------------------------------------------------------------
# The local runner (one process)


def specs_for(sc: Scenario, indices: Iterable[int], chunk: int = 256,
              legacy_draw: bool = False) -> Iterator[EpisodeSpec]:
    """Episode specs for the given indices (ascending runs are generated together); `legacy_draw`:
    see :func:`~simworld.episode.episode_specs`."""
    pending: list[int] = []

    def flush() -> Iterator[EpisodeSpec]:
        if pending:
            yield from episode_specs(sc, len(pending), sc.seed, start=pending[0], legacy_draw=legacy_draw)
            pending.clear()

    for i in indices:
        if pending and (i != pending[-1] + 1 or len(pending) >= chunk):
            yield from flush()
        pending.append(i)
    yield from flush()


def _crash(spec: EpisodeSpec, exc: BaseException) -> SimworldError:
    if isinstance(exc, SimworldError) and not isinstance(exc, EpisodeCrash):
        # the scenario asks for something its world cannot give (a task with no target in a tiny
        # world): the user's to fix, exit 2, not a crash
        error = SimworldError(f"episode {spec.episode_id}: {exc}")
        error.exit_code = exc.exit_code
        return error
    return episode_crash(spec.episode_id, exc)


def _record(traj: Trajectory) -> tuple[bytes, EpisodeStats]:
    return traj.to_jsonl(), trajectory_stats(traj)


def run_local(sc: Scenario, indices: Iterable[int], writer: ShardWriter, on_done: Callable[[EpisodeStats], None],
              concurrency: int | None = None, should_stop: Callable[[], bool] = lambda: False,
              legacy_draw: bool = False) -> None:
    """Run the episodes `indices` of `sc` in this process, appending each trajectory to `writer`.

    `concurrency` None picks: synchronous for all-scripted scenarios, else an asyncio loop with
    DEFAULT_LLM_CONCURRENCY episodes in flight. `legacy_draw`: the variation draw of a run of
    manifest format ``simworld.run/1`` (:func:`~simworld.episode.episode_specs`).
    """
    specs = specs_for(sc, indices, legacy_draw=legacy_draw)
    if concurrency is None and is_scripted(sc):
        for spec in specs:
            if should_stop():
                return
            try:
                traj = run_episode_sync(sc, spec)
                line, stats = _record(traj)
            except Exception as exc:
                raise _crash(spec, exc) from exc
            writer.write(line)
            on_done(stats)
        return
    asyncio.run(_run_concurrent(sc, specs, writer, on_done, concurrency or DEFAULT_LLM_CONCURRENCY, should_stop))


async def _run_concurrent(sc: Scenario, specs: Iterator[EpisodeSpec], writer: ShardWriter,
                          on_done: Callable[[EpisodeStats], None], concurrency: int,
                          should_stop: Callable[[], bool]) -> None:
    async def lane() -> None:
        for spec in specs:  # lanes share one iterator: each spec runs once
            if should_stop():
                return
            try:
                traj = await run_episode(sc, spec)
                line, stats = _record(traj)
            except Exception as exc:
                raise _crash(spec, exc) from exc
            writer.write(line)
            on_done(stats)

    await asyncio.gather(*(lane() for _ in range(max(1, concurrency))))


# ----------------------------------------------------------------------------------------------
# Worker processes


def _worker_main(worker: int, sc: Scenario, indices: list[int], shard: Path, concurrency: int | None,
                 events: Any, stop: Any, parent_pid: int, legacy_draw: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; lines are never torn by Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    registry.load_builtins()
    batch: list[EpisodeStats] = []
    last = time.monotonic()

    def on_done(stats: EpisodeStats) -> None:
        nonlocal last
        batch.append(stats)
        now = time.monotonic()
        if len(batch) >= 512 or now - last >= 0.1:
            events.put(("stats", worker, list(batch)))
            batch.clear()
            last = now

    def should_stop() -> bool:
        return stop.is_set() or os.getppid() != parent_pid

    writer = None
    try:
        writer = ShardWriter(shard)
        run_local(sc, indices, writer, on_done, concurrency, should_stop, legacy_draw)
        writer.close()
        events.put(("stats", worker, batch))
        events.put(("done", worker, None))
    except OSError as exc:
        events.put(("stats", worker, batch))
        events.put(("error", worker, (2, str(_os_problem("write", shard, exc)), False)))
    except SimworldError as exc:
        events.put(("stats", worker, batch))
        events.put(("error", worker, (exc.exit_code, str(exc), isinstance(exc, EpisodeCrash))))
    except BaseException as exc:  # noqa: BLE001 - report anything, never hang the parent
        events.put(("stats", worker, batch))
        events.put(("error", worker, (1, f"worker {worker}: {type(exc).__name__}: {exc}", False)))
    finally:
        if writer is not None:
            with contextlib.suppress(OSError):
                writer.close()


def _mp_context() -> Any:
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def _run_workers(sc: Scenario, shares: list[list[int]], shards: list[Path], concurrency: int | None,
                 on_done: Callable[[EpisodeStats], None], on_started: Callable[[], None], legacy_draw: bool) -> None:
    ctx = _mp_context()
    events = ctx.Queue()
    stop = ctx.Event()
    procs = [ctx.Process(target=_worker_main, name=f"simworld-worker-{k}",
                         args=(k, sc, share, shards[k], concurrency, events, stop, os.getpid(), legacy_draw),
                         daemon=False)
             for k, share in enumerate(shares)]
    for proc in procs:
        proc.start()
    on_started()  # after forking: the progress display's thread must not be forked
    finished: set[int] = set()
    error: tuple[int, str, bool] | None = None
    interrupted = False

    def handle(msg: tuple[str, int, Any]) -> None:
        nonlocal error
        kind, worker, payload = msg
        if kind == "stats":
            for stats in payload:
                on_done(stats)
        elif kind == "done":
            finished.add(worker)
        else:
            finished.add(worker)
            if error is None:
                error = payload
            stop.set()

    try:
        while len(finished) < len(procs):
            try:
                handle(events.get(timeout=0.2))
                continue
            except queue_mod.Empty:
                pass
            for k, proc in enumerate(procs):
                if k not in finished and not proc.is_alive():
                    with contextlib.suppress(queue_mod.Empty):
                        while k not in finished:
                            handle(events.get(timeout=0.5))
                    if k not in finished:
                        finished.add(k)
                        stop.set()
                        error = error or (1, f"worker {k} died (exit code {proc.exitcode})", False)
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
        # Workers finish their current episode and exit; their records up to now are kept.
        try:
            while len(finished) < len(procs) and any(p.is_alive() for p in procs):
                with contextlib.suppress(queue_mod.Empty):
                    handle(events.get(timeout=0.2))
        except KeyboardInterrupt:
            for proc in procs:
                proc.terminate()
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        with contextlib.suppress(queue_mod.Empty, OSError, ValueError):
            while True:
                handle(events.get_nowait())
        events.close()
    if interrupted:
        raise KeyboardInterrupt
    if error:
        exit_code, message, crash = error
        exc = EpisodeCrash(message) if crash else SimworldError(message)
        exc.exit_code = exit_code
        raise exc


# ----------------------------------------------------------------------------------------------
# A whole run


@dataclass
class RunResult:
    """What `run_batch` did: the summary over all requested episodes and this session's counts.

    `status` is ``complete`` or ``interrupted`` (Ctrl-C / SIGTERM: re-run the command to resume).
    """

    status: str
    summary: RunSummary
    requested: int
    new: int
    skipped: int
    retried: int
    repaired: list[str]
    elapsed_s: float
    setup_s: float
    session: int
    shards: list[Path]

    @property
    def episodes_per_s(self) -> float:
        """Episodes per second after setup (reading earlier sessions, building the world)."""
        running = self.elapsed_s - self.setup_s
        return self.new / running if running > 0 else 0.0


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def _signals_for_run() -> Iterator[None]:
    """SIGTERM stops the run like Ctrl-C; past a file-size limit write() fails with EFBIG (a clear
    error) instead of SIGXFSZ killing the process."""
    wanted = {signal.SIGTERM: interrupt}
    if hasattr(signal, "SIGXFSZ"):
        wanted[signal.SIGXFSZ] = signal.SIG_IGN
    previous = {}
    try:
        for sig, handler in wanted.items():
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_batch(sc: Scenario, out: str | Path, episodes: int | None = None, workers: int = 1,
              concurrency: int | None = None, source: str = "", overrides: dict[str, Any] | None = None,
              command: list[str] | None = None,
              on_start: Callable[[int, int], None] | None = None,
              on_progress: Callable[[int], None] | None = None) -> RunResult:
    """Run (or resume) the episodes ``0..episodes-1`` of `sc` into the run directory `out`.

    `sc` is the resolved scenario (its `seed` is the run seed; see :func:`resolve_scenario`).
    A run's episodes never shrink: `episodes` None means the scenario's `episodes` or, resuming,
    the run's own count where that is larger; fewer episodes than the run already has (its
    manifest's count, or every episode recorded) are refused with a SimworldError before anything
    is written, so the manifest's count, its status, its summary and the records always agree.
    `on_start(total, already_done)` is called once before episodes run and `on_progress(n)` as
    episodes finish (for a progress bar). Ctrl-C or SIGTERM returns a result with status
    ``interrupted``. Raises SimworldError (bad directory, full disk) or EpisodeCrash; whatever was
    written before stays valid and a re-run resumes.
    """
    asked = None if episodes is None else int(episodes)
    if asked is not None and asked < 0:
        raise SimworldError("--episodes must be ≥ 0")
    if workers < 1:
        raise SimworldError("--workers must be ≥ 1")
    if concurrency is not None and concurrency < 1:
        raise SimworldError("--concurrency must be ≥ 1")
    rd = RunDir(out)
    rd.open(sc)
    started = time.perf_counter()
    try:
        prior = rd.scan(sc)
        manifest, problem = rd.load_manifest()  # (a damaged one is set aside below: the records still count)
        n = _episodes_to_run(rd.path, sc, asked, prior, manifest)
        legacy_draw = _legacy_draw(sc, manifest, prior)  # (before a damaged manifest is set aside)
        rd.repair(prior)
        if problem is not None:
            rd.set_aside_manifest(problem, prior.repaired)
        summary = RunSummary()
        pending: list[int] = []
        retried = 0
        for i in range(n):
            stats = prior.latest.get(i)
            if stats is None or stats.termination == "error":
                pending.append(i)
                retried += stats is not None
            else:
                summary.add(stats)
        skipped = n - len(pending)
        session = next_session(rd.path)
        sessions = list(manifest.get("sessions", []))
        this_session = {"session": session, "started": _now(), "status": "running", "episodes": n,
                        "pending": len(pending), "retried": retried, "workers": workers,
                        "concurrency": concurrency, "command": command or [], "repaired": prior.repaired}
        plugins = loaded_plugins()
        this_session["plugins"] = plugins
        base = {
            "format": LEGACY_DRAW_FORMAT if legacy_draw else MANIFEST_FORMAT,  # a run keeps its draw
            "simworld_version": simworld.__version__,
            "scenario": {"name": sc.name, "hash": sc.content_hash, "source": source, "file": SCENARIO_FILE},
            "seed": sc.seed,
            "overrides": overrides or {},
            "episodes": n,  # never fewer than before: _episodes_to_run
            "created": manifest.get("created", _now()),
            # every session's: the records of each need its plugins to be read again
            "plugins": _union(manifest_plugins(manifest), plugins),
        }
        rd.write_manifest({**base, "status": "running", "sessions": sessions + [this_session]})
        new = 0

        def on_done(stats: EpisodeStats) -> None:
            nonlocal new
            new += 1
            summary.add(stats)
            if on_progress is not None:
                on_progress(1)

        def announce() -> None:
            if on_start is not None:
                on_start(n, skipped)

        status = "complete"
        setup_s = 0.0
        w = max(1, min(workers, len(pending)))
        shards = [rd.path / shard_name(session, k) for k in range(w)] if pending else []
        try:
            with _signals_for_run():
                if pending:
                    _preload_world(sc)
                setup_s = time.perf_counter() - started
                if w > 1:
                    _run_workers(sc, [pending[k::w] for k in range(w)], shards, concurrency, on_done, announce,
                                 legacy_draw)
                else:
                    announce()
                    if pending:
                        _run_in_process(sc, pending, shards[0], concurrency, on_done, legacy_draw)
        except KeyboardInterrupt:
            status = "interrupted"
        except BaseException:
            status = "failed"
            raise
        finally:
            elapsed = time.perf_counter() - started
            this_session.update(status=status, finished=_now(), new=new, elapsed_s=round(elapsed, 3))
            with contextlib.suppress(SimworldError):  # a full disk must not hide the first error
                rd.write_manifest({**base, "status": status, "sessions": sessions + [this_session],
                                   "summary": summary.to_dict()})
        return RunResult(status=status, summary=summary, requested=n, new=new, skipped=skipped,
                         retried=retried, repaired=prior.repaired, elapsed_s=elapsed, setup_s=setup_s, session=session,
                         shards=[s for s in shards if s.exists()])
    finally:
        rd.close()


def loaded_plugins() -> list[dict[str, str]]:
    """The plugins this process loaded (:func:`simworld.registry.load_plugins`), as a run's manifest
    records them: ``{"module": M, "source": "SIMWORLD_PLUGINS"}`` for each module named in
    ``$SIMWORLD_PLUGINS``, ``{"entry_point": NAME, "module": VALUE, "source": "entry point",
    "package": DIST, "version": V}`` for each ``simworld.plugins`` entry point."""
    from importlib.metadata import entry_points

    out = []
    for ep in entry_points(group=registry.PLUGINS_ENTRY_POINTS):
        dist = getattr(ep, "dist", None)
        out.append({"entry_point": ep.name, "module": ep.value, "source": "entry point",
                    **({"package": dist.name, "version": dist.version} if dist is not None else {})})
    out += [{"module": name, "source": registry.PLUGINS_ENV} for name in registry.plugin_modules()]
    return out


def _union(*lists: list[dict[str, str]]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for item in (item for items in lists for item in items):
        if item not in out:
            out.append(item)
    return out


_DRAW_EVIDENCE = 16


def _legacy_draw(sc: Scenario, manifest: dict[str, Any], prior: _Prior) -> bool:
    """Whether this run draws its variations as runs of manifest format ``simworld.run/1`` did: as
    its manifest's format says, or, with no manifest to say (lost or damaged), as a few of its
    records were drawn. A new run draws per path."""
    fmt = manifest.get("format")
    if isinstance(fmt, str):
        return fmt == LEGACY_DRAW_FORMAT
    legacy = per_path = 0
    for index, variation in prior.variations:
        legacy += episode_specs(sc, 1, sc.seed, start=index, legacy_draw=True)[0].variation == variation
        per_path += episode_specs(sc, 1, sc.seed, start=index)[0].variation == variation
    return legacy > per_path


def _episodes_to_run(path: Path, sc: Scenario, asked: int | None, prior: _Prior, manifest: dict[str, Any]) -> int:
    """How many episodes this session's run has: `asked` (the scenario's count when None), never
    fewer than the run directory `path` already holds (its `manifest`'s count and every recorded
    episode)."""
    has = max(int(manifest.get("episodes", 0) or 0), max(prior.latest, default=-1) + 1)
    if asked is None:
        return max(sc.episodes, has)
    if asked < has:
        recorded = "all recorded" if len(prior.latest) >= has else f"{len(prior.latest):,} recorded"
        default = " (or without --episodes)" if sc.episodes <= has else ""
        raise SimworldError(f"--episodes {asked}: {path} is a run of {counted(has, 'episode')} ({recorded}) and a run "
                            f"never shrinks; resume it with --episodes {has}{default}, or use a new --out for a "
                            f"run of {asked:,}")
    return asked


def _run_in_process(sc: Scenario, pending: list[int], shard: Path, concurrency: int | None,
                    on_done: Callable[[EpisodeStats], None], legacy_draw: bool) -> None:
    try:
        writer = ShardWriter(shard)
    except OSError as exc:
        raise _os_problem("write", shard, exc) from None
    try:
        run_local(sc, pending, writer, on_done, concurrency, legacy_draw=legacy_draw)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # the error already on its way is the one to report
            writer.close()
        if isinstance(exc, OSError):
            raise _os_problem("write", shard, exc) from None
        raise
    try:
        writer.close()  # its fsync failing (a write-back error) means records may be lost: say so
    except OSError as exc:
        raise _os_problem("write", shard, exc) from None


def _preload_world(sc: Scenario) -> None:
    """Build the world before episodes start (forked workers then share it, copy-on-write)."""
    world_cls = registry.get_world(sc.world.type)
    world_cls.load(sc.world.params, sc.world.seed if sc.world.seed is not None else sc.seed)
