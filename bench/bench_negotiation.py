"""Benchmark of the negotiation worlds: outcome-space analysis and scripted episodes per second.

    python bench/bench_negotiation.py [--episodes 2000] [--workers N] [--repeat 5] [--python-max 1000000]
    python bench/bench_negotiation.py --variety 500

Prints two tables (with --variety N, only the third):

1. Outcome-space analysis at 10^4, 10^5 and 10^6 outcomes (three issues, two parties, random
   additive preferences): enumerating both parties' utilities, the Pareto frontier, and the whole
   analysis (frontier + Nash + Kalai-Smorodinsky + max welfare), Numba kernels (compiled before
   timing, best of --repeat) against the same analysis in plain Python (`analyse_python`).
   Target: Pareto frontier of 10^6 outcomes in under 1 s on one core.
2. Scripted negotiation episodes per second for each scenario under scenarios/negotiation/, each
   episode run to the end and serialised (`run_episode_sync(...).to_jsonl()`), in one process and
   in --workers forked processes. Target: >= 1,000 episodes/s.
3. Variety over the first N episodes of each scenario: distinct move sequences (every call with its
   arguments), dialogue-act sequences (`act_sequence`: research, open, concede, hold, counter,
   reject, accept, walk per turn), opening offers, outcomes, utterances and persona texts.

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

Openings (2026-11-25): anchored openings (89b0a43) had made episodes 5-9% slower with numpy passes
over the whole outcome space per opening; `kernels.opening_offer` chooses the same opening (same
trajectories, byte for byte) from the utility buckets in one call. Per opening, in episodes: 42 ->
17 us (lease_renewal), 31 -> 11 (refund_dispute), 63 -> 21 (supplier_contract), 51 -> 21 (used_car).
Whole episodes, one process alternating the two versions in one sitting (best CPU time of three):
+6% (lease_renewal), +7% (refund_dispute), +12% (supplier_contract), +4% (used_car). This script,
--repeat 2, best CPU of two alternating runs of each version (a loaded machine: compare ratios):

| scenario          | before CPU eps/s | after CPU eps/s |
|-------------------|------------------|-----------------|
| lease_renewal     |              986 |           1,010 |
| refund_dispute    |              992 |           1,006 |
| supplier_contract |              582 |             681 |
| used_car          |              667 |             704 |

Variety (2026-11-25, --variety 500): "before" is the scenarios and strategies with fixed personas and
information tools that changed nothing; "after" adds per-episode temperaments (brief text,
concession, patience, anchor, research and rejection habits, remarks), stock levels that move
concessions and openings, and policy limits that bound offers (which narrows the refunds agreed in
refund_dispute: outcomes fall there):

| scenario          | act sequences |   openings |   outcomes |     utterances |          turns | persona texts |
|-------------------|---------------|------------|------------|----------------|----------------|---------------|
| lease_renewal     |    297 -> 325 | 147 -> 188 | 194 -> 201 | 2,718 -> 2,872 | 4,147 -> 3,935 |        2 -> 6 |
| refund_dispute    |    285 -> 311 | 312 -> 404 | 261 -> 224 | 3,055 -> 2,979 | 4,231 -> 3,975 |        2 -> 6 |
| supplier_contract |    402 -> 425 | 311 -> 386 | 290 -> 291 | 4,567 -> 4,713 | 6,517 -> 6,315 |        2 -> 6 |
| used_car          |    431 -> 441 | 252 -> 407 | 263 -> 272 | 4,321 -> 4,442 | 6,170 -> 5,872 |        2 -> 7 |

Move sequences with their exact arguments are all distinct before and after (499-500 of 500).
What the variety costs, the same code with the features on and off in one process: temperaments
nothing measurable (lease_renewal 1,093 -> 1,095 eps/s); stock and policy limits about 5% in
supplier_contract (the policy-limited utility over 10,000 outcomes is compiled per episode). The
stock is drawn per episode (`stock.vary`), not by a variation: a variation per inventory value
tripled the distinct variations, each validated once, and cost used_car 20%.

Memory budget (2026-11-25): the caches' per-outcome arrays under one byte budget
(`space.ARRAY_CACHE`; memory in bench/bench_negotiation_memory.py). Same trajectories (300
episodes of each scenario, byte for byte). This script, --workers 1 --python-max 0 --repeat 1, four
alternating runs of each version (CPU eps/s, best of four; the runs of one version spread by 4-8%
on the loaded machine), and per-episode instructions (valgrind callgrind, the difference between
runs of 50 or 100 and 250 or 400 episodes; run to run about +-0.5%), which the load does not move:

| scenario          | before CPU eps/s | after CPU eps/s | instructions per episode, after / before |
|-------------------|------------------|-----------------|------------------------------------------|
| lease_renewal     |            1,087 |           1,047 |                                    1.004 |
| refund_dispute    |            1,032 |           1,017 |                                    0.999 |
| supplier_contract |              626 |             612 |                                    1.003 |
| used_car          |              731 |             713 |                                    1.004 |

The cache's bookkeeping is about 9 us per episode (timeit of one episode's gets and puts). Alone
in a process (2,000 supplier_contract episodes after 50 to warm up, three alternating runs), user
CPU was 3.35-3.49 s before and 3.30-3.37 s after.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np
import orjson

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


def move_sequence(events: list) -> tuple:
    """An episode's moves: (speaker, tool, arguments) of every call, the free-text reasons left out."""
    return tuple((e.speaker, c.name, orjson.dumps({k: v for k, v in c.arguments.items() if k != "reason"},
                                                   option=orjson.OPT_SORT_KEYS))
                 for e in events if e.role == "assistant" for c in e.tool_calls)


def act_sequence(t) -> tuple:
    """An episode as dialogue acts per turn: (speaker, act), the act one of research, open, concede
    (an offer worth less to its maker than its previous one), hold (the same terms again), counter
    (other terms worth no less), accept, walk, reject; 'reject+' before an offer that follows one."""
    from simworld.environments.negotiation.space import utility_model

    models = {role: utility_model(p["utility"]) for role, p in t.task.private.items() if "utility" in p}
    last: dict[str, int] = {}
    acts = []
    for e in t.events:
        if e.role != "assistant" or e.speaker not in models:
            continue
        names = [c.name for c in e.tool_calls]
        act = "talk"
        for c in e.tool_calls:
            if c.name == "make_offer":
                model = models[e.speaker]
                try:
                    outcome = model.space.index(c.arguments)
                except (KeyError, ValueError):
                    act = "invalid"
                    break
                before = last.get(e.speaker)
                act = ("open" if before is None else "hold" if outcome == before
                       else "concede" if model.utilities[outcome] < model.utilities[before] else "counter")
                last[e.speaker] = outcome
                act = ("reject+" if "reject_offer" in names else "") + act
            elif c.name in ("accept_offer", "walk_away"):
                act = "accept" if c.name == "accept_offer" else "walk"
            elif c.name == "reject_offer" and act == "talk":
                act = "reject"
            elif act == "talk":
                act = "research"
        acts.append((e.speaker, act))
    return tuple(acts)


def bench_variety(paths: list[Path], episodes: int) -> list[list[str]]:
    """Distinct move sequences (exact calls), dialogue-act sequences, opening offers (per role),
    outcomes (agreed terms, or none), utterances and persona texts (system prompts up to the private
    preferences) over the first `episodes` episodes of each scenario
    (its own seed and variations)."""
    from simworld.episode import episode_specs, run_episode_sync

    rows = []
    for path in paths:
        sc = _load(str(path))
        moves, acts, utterances, personas, openings, deals = set(), set(), set(), set(), set(), set()
        said = 0
        for spec in episode_specs(sc, episodes):
            t = run_episode_sync(sc, spec)
            sequence = move_sequence(t.events)
            moves.add(sequence)
            acts.add(act_sequence(t))
            openings.update(next((m for m in sequence if m[0] == role and m[1] == "make_offer"), None)
                            for role in t.system)
            deals.add(orjson.dumps(t.outcome.metrics.get("agreed_outcome"), option=orjson.OPT_SORT_KEYS))
            for e in t.events:
                if e.role == "assistant":
                    utterances.add(e.content)
                    said += 1
            personas.update(text.split("You negotiate as")[0] for text in t.system.values())
        openings.discard(None)
        rows.append([path.stem, f"{episodes:,}", f"{len(moves):,}", f"{len(acts):,}", f"{len(openings):,}",
                     f"{len(deals):,}", f"{len(utterances):,}", f"{said:,}", f"{len(personas):,}"])
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
    ap.add_argument("--variety", type=int, default=0, metavar="N", help="only count distinct move sequences, "
                    "utterances and system prompts over N episodes of each scenario")
    ap.add_argument("--python-max", type=int, default=10**6, help="largest space the plain-Python analysis runs on")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    paths = sorted((ROOT / "scenarios" / "negotiation").glob("*.yaml"))
    if args.variety:
        print(table(f"Variety over {args.variety:,} episodes per scenario (distinct values)",
                    ["scenario", "episodes", "move sequences", "act sequences", "openings", "outcomes",
                     "utterances", "turns", "persona texts"], bench_variety(paths, args.variety)))
        return
    print(f"cores: {os.cpu_count()} (usable by this process: {len(os.sched_getaffinity(0))}); "
          f"python {sys.version.split()[0]}; numpy {np.__version__}")
    import numba

    print(f"numba {numba.__version__}, threads: kernels are single-threaded\n")
    rows = bench_analysis(args.repeat, args.python_max)
    print(table("Outcome-space analysis (two parties, additive utilities; times in ms, best of "
                f"{args.repeat})",
                ["outcomes", "grid", "frontier", "numba enum", "numba pareto", "numba full", "python full",
                 "speedup", "same result"], rows))
    rows = bench_episodes(paths, args.episodes, args.workers)
    print(table("Scripted negotiation episodes (run to the end and serialised to JSONL)",
                ["scenario", "episodes", "eps/s 1 proc (wall)", "eps/s 1 proc (cpu)",
                 f"episodes x{args.workers}", f"eps/s {args.workers} procs (wall)"], rows))


if __name__ == "__main__":
    main()
