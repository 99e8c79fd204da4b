"""Benchmark of the negotiation worlds: outcome-space analysis and scripted episodes per second.

    python bench/bench_negotiation.py [--episodes 2000] [--workers N] [--repeat 5] [--python-max 1000000]

Prints two tables:

1. Outcome-space analysis at 10^4, 10^5 and 10^6 outcomes (three issues, two parties, random
   additive preferences): enumerating both parties' utilities, the Pareto frontier, and the whole
   analysis (frontier + Nash + Kalai-Smorodinsky + max welfare), Numba kernels (compiled before
   timing, best of --repeat) against the same analysis in plain Python (`analyse_python`).
   Target: Pareto frontier of 10^6 outcomes in under 1 s on one core.
2. Scripted negotiation episodes per second for each scenario under scenarios/negotiation/, each
   episode run to the end and serialised (`run_episode_sync(...).to_jsonl()`), in one process and
   in --workers forked processes. Target: >= 1,000 episodes/s.

Measured 2026-11-24 on the shared 2-core AMD EPYC (numba 0.68, one process, 2,000 episodes per
scenario; wall and per second of the process's CPU time, the load from other work being what it
was, so compare within a row). "before": the negotiation code as first written (2894b78); "after":
with per-party value tables reused across episodes, offers chosen from a linear-time utility bucket
index and a per-space digit table instead of a scan of the outcome space, the frontier from the
same buckets (branch-free), memoised wording and offer parsing. Same engine, same trajectories
(byte-identical JSON lines, timing fields aside), best of two alternating runs:

| scenario          | outcomes | before wall | before CPU | after wall | after CPU |
|-------------------|----------|-------------|------------|------------|-----------|
| lease_renewal     |      756 |       1,035 |      1,035 |      1,288 |     1,288 |
| refund_dispute    |      900 |       1,043 |      1,043 |      1,231 |     1,231 |
| supplier_contract |   10,000 |         582 |        582 |        829 |       829 |
| used_car          |    3,660 |         758 |        760 |        939 |       939 |

Outcome-space analysis at 10^6 outcomes (100x100x100): Pareto 6.5 -> 4.9 ms, whole analysis
14.2 -> 9.5 ms. supplier_contract and used_car are still short of 1,000 episodes/s on one core:
what is left is mostly the engine's per-turn work (messages, tool-call validation, state
snapshots, the trajectory's JSON) plus about 0.2 ms of task sampling per episode.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

SPACES = [(10, 10, 100), (10, 100, 100), (100, 100, 100)]


def random_tables(rng: np.random.Generator, sizes: tuple[int, ...]) -> np.ndarray:
    weights = rng.random(len(sizes)) + 0.1
    weights /= weights.sum()
    tables = np.zeros((len(sizes), max(sizes)))
    for i, n in enumerate(sizes):
        v = rng.random(n)
        tables[i, :n] = weights[i] * (v - v.min()) / (v.max() - v.min())
    return tables


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_analysis(repeat: int, python_max: int) -> list[list[str]]:
    from simworld.environments.negotiation.analysis import analyse_arrays, analyse_python, enumerate_pair
    from simworld.environments.negotiation.kernels import pareto_frontier

    rng = np.random.default_rng(0)
    rows = []
    for sizes in SPACES:
        ta, tb = random_tables(rng, sizes), random_tables(rng, sizes)
        sizes_arr = np.array(sizes, dtype=np.int64)
        ua, ub = enumerate_pair(ta, tb, sizes_arr)  # compile / load the kernels before timing
        analyse_arrays(ua, ub, 0.3, 0.3)
        t_enum, (ua, ub) = best_of(repeat, lambda: enumerate_pair(ta, tb, sizes_arr))
        t_front, front = best_of(repeat, lambda: pareto_frontier(ua, ub))
        t_all, result = best_of(repeat, lambda: (enumerate_pair(ta, tb, sizes_arr), analyse_arrays(ua, ub, 0.3, 0.3)))
        n = int(np.prod(sizes))
        if n <= python_max:
            t_py, ref = best_of(1 if n >= 10**6 else min(repeat, 3), lambda: analyse_python(ta, tb, sizes, 0.3, 0.3))
            analysis = result[1]
            same = (ref["frontier"] == sorted(analysis.frontier.tolist()) and ref["nash"] == analysis.nash
                    and ref["kalai_smorodinsky"] == analysis.kalai_smorodinsky)
            py_cells = [f"{t_py * 1e3:,.1f}", f"{t_py / t_all:,.0f}x", "yes" if same else "NO"]
        else:
            py_cells = ["-", "-", "-"]
        rows.append([f"{n:,}", "x".join(map(str, sizes)), f"{len(front):,}", f"{t_enum * 1e3:,.2f}",
                     f"{t_front * 1e3:,.2f}", f"{t_all * 1e3:,.2f}", *py_cells])
    return rows


# -- episodes

_SC = None


def _load(path: str):
    from simworld.scenario import load_scenario

    return load_scenario(path)


def _run_chunk(args: tuple[str, int, int]) -> tuple[int, float]:
    from simworld.episode import episode_specs, run_episode_sync

    path, start, count = args
    sc = _SC if _SC is not None else _load(path)
    cpu0 = time.process_time()
    for spec in episode_specs(sc, count, start=start):
        run_episode_sync(sc, spec).to_jsonl()
    return count, time.process_time() - cpu0


def bench_episodes(paths: list[Path], episodes: int, workers: int) -> list[list[str]]:
    global _SC
    from simworld.episode import episode_specs, run_episode_sync

    rows = []
    for path in paths:
        sc = _SC = _load(str(path))
        for spec in episode_specs(sc, 50, start=10**6):  # warm caches and kernels
            run_episode_sync(sc, spec)
        t0 = time.perf_counter()
        _, cpu = _run_chunk((str(path), 0, episodes))
        wall1 = time.perf_counter() - t0
        cells = [path.stem, f"{episodes:,}", f"{episodes / wall1:,.0f}", f"{episodes / cpu:,.0f}"]
        if workers > 1:
            total = episodes * workers
            share = [(str(path), k * episodes, episodes) for k in range(workers)]
            with mp.get_context("fork").Pool(workers) as pool:
                pool.map(_run_chunk, [(str(path), 10**6 + k * 10, 10) for k in range(workers)])  # start workers
                t0 = time.perf_counter()
                done = sum(n for n, _ in pool.map(_run_chunk, share, chunksize=1))
                wall = time.perf_counter() - t0
            assert done == total
            cells += [f"{total:,}", f"{total / wall:,.0f}"]
        else:
            cells += ["-", "-"]
        rows.append(cells)
    return rows


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([title, "", line(header), sep, *(line(r) for r in rows), ""])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=2000, help="episodes per scenario and per process")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="processes for the "
                    "parallel column (1: skip it)")
    ap.add_argument("--repeat", type=int, default=5, help="timings are the best of this many runs")
    ap.add_argument("--python-max", type=int, default=10**6, help="largest space the plain-Python analysis runs on")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    print(f"cores: {os.cpu_count()} (usable by this process: {len(os.sched_getaffinity(0))}); "
          f"python {sys.version.split()[0]}; numpy {np.__version__}")
    import numba

    print(f"numba {numba.__version__}, threads: kernels are single-threaded\n")
    rows = bench_analysis(args.repeat, args.python_max)
    print(table("Outcome-space analysis (two parties, additive utilities; times in ms, best of "
                f"{args.repeat})",
                ["outcomes", "grid", "frontier", "numba enum", "numba pareto", "numba full", "python full",
                 "speedup", "same result"], rows))
    paths = sorted((ROOT / "scenarios" / "negotiation").glob("*.yaml"))
    rows = bench_episodes(paths, args.episodes, args.workers)
    print(table("Scripted negotiation episodes (run to the end and serialised to JSONL)",
                ["scenario", "episodes", "eps/s 1 proc (wall)", "eps/s 1 proc (cpu)",
                 f"episodes x{args.workers}", f"eps/s {args.workers} procs (wall)"], rows))


if __name__ == "__main__":
    main()
