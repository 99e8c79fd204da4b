"""Memory of the negotiation world over many episodes: peak RSS per outcome-space size.

Runs N scripted episodes of supplier_contract in one fresh process per size, with the unit price's
step shrunk so that the outcome space has about 1M, 4M, 12M or 19M outcomes (MAX_OUTCOMES is 20M).
Every episode jitters both parties' weights, so each compiles two new utility models: without a
bound the caches grow with the number of episodes. Prints, per size, the RSS after the first
episode, at the end, the peak (ru_maxrss) and what the shared array cache holds
(`space.ARRAY_CACHE`, bounded by `space.CACHE_BYTES`).

    python bench/bench_negotiation_memory.py --episodes 60 --sizes 1M 4M

Measured 2026-11-25 on the shared 2-core machine, one process per row, in one sitting. "before":
the caches as of 965fd29, each bounded on its own (the model cache by 2^25 outcomes), while the
analyses (32) and the specs' recent models (16) kept the arrays of models the model cache had
dropped, and the digit table was built through int64 temporaries 8x its size; "after": one budget
(CACHE_BYTES, 512 MiB) over every per-outcome array the caches hold, beyond which only the running
episode's models, analysis and digit table stay. RSS in MB:

| outcomes   | episodes | before: 1st | end   | peak  | after: 1st | end   | peak  | cache held | entries held                |
|------------|----------|-------------|-------|-------|------------|-------|-------|------------|-----------------------------|
| 1,000,400  |       60 |         254 | 1,021 | 1,021 |        254 |   728 |   728 |        500 | 30 models, 15 analyses      |
| 4,000,400  |       60 |         435 | 2,915 | 2,914 |        435 |   811 |   811 |        495 | 7 models, 3 analyses        |
| 12,000,400 |       20 |         736 | 5,709 | 5,801 |        736 |   763 | 1,023 |        506 | 2 models, 1 analysis, table |
| 19,200,400 |        8 |       1,025 | 5,426 | 5,849 |      1,024 | 1,047 | 1,485 |        810 | 2 models, 1 analysis, table |

Before, memory grew with every episode until the analyses' cache was full (32 episodes;
extrapolated, about 10 GB at 19M outcomes: two 154 MB utility arrays per analysis); after, it is
flat from the first few episodes. At 19M outcomes the running episode alone needs more than the
budget (two 326 MB models and a 183 MB digit table), which the cache keeps: about 1.5 GB peak per
worker, so MAX_OUTCOMES (20M) stays as it is.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "negotiation" / "supplier_contract.yaml"
STEPS = {"1M": 0.0024, "4M": 0.0006, "12M": 0.0002, "19M": 0.000125}
"""Unit price steps over its range [8, 14] (times 400 combinations of the other issues)."""


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(step: float, episodes: int) -> None:
    """Run the episodes in this process and print one tab-separated line of numbers."""
    from simworld.episode import episode_specs, run_episode_sync
    from simworld.environments.negotiation import space as negotiation_space
    from simworld.registry import load_builtins
    from simworld.scenario import load_scenario, parse_overrides

    load_builtins()
    sc = load_scenario(str(SCENARIO), parse_overrides([f"world.params.issues.unit_price.step={step}"]))
    first = 0.0
    outcomes = 0
    t0 = time.perf_counter()
    for spec in episode_specs(sc, episodes):
        t = run_episode_sync(sc, spec)
        t.to_jsonl()
        outcomes = int(t.task.goal["outcome_space"])
        if spec.index == 0:
            first = rss_mb()
    seconds = time.perf_counter() - t0
    cache = getattr(negotiation_space, "ARRAY_CACHE", None)  # (absent before the shared cache)
    held = f"{cache.held / 2**20:.0f}" if cache is not None else "-"
    kinds = " ".join(f"{k}={n}" for k, n in cache.counts().items()) if cache is not None else "-"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{outcomes}\t{first:.0f}\t{rss_mb():.0f}\t{peak:.0f}\t{held}\t{kinds}\t{seconds / episodes:.3f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=60, help="episodes per size (one process each)")
    ap.add_argument("--sizes", nargs="+", default=["1M", "4M"], choices=sorted(STEPS),
                    help="outcome-space sizes (19M is close to MAX_OUTCOMES: about 1.5 GB)")
    ap.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        child(args.child, args.episodes)
        return
    from simworld.environments.negotiation import space as negotiation_space

    budget = getattr(negotiation_space, "CACHE_BYTES", None)
    print(f"supplier_contract, {args.episodes} episodes per size, one process each; cache budget "
          + (f"{budget / 2**20:,.0f} MB\n" if budget is not None else "(none)\n"))
    header = ["outcomes", "episodes", "RSS after 1st (MB)", "RSS at end (MB)", "peak RSS (MB)",
              "cache held (MB)", "cache entries", "s/episode"]
    rows = []
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(STEPS[size]), "--episodes",
                              str(args.episodes)], capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            sys.exit(f"{size}: the child process failed:\n{out.stderr[-2000:]}")
        outcomes, first, end, peak, held, kinds, per = out.stdout.strip().splitlines()[-1].split("\t")
        rows.append([f"{int(outcomes):,}", f"{args.episodes:,}", first, end, peak, held, kinds, per])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |")


if __name__ == "__main__":
    main()
