"""Export throughput and memory: `simworld export --format llama3` over 10,000 and 100,000 trajectories.

    python bench/bench_export.py                 # retail-sized and compact trajectories, 10k and 100k
    python bench/bench_export.py --sizes 10000   # quicker
    python bench/bench_export.py --sets compact --repeat 3   # one set, the least CPU of three exports a row

Trajectories: the scripted retail scenario (scenarios/retail/mixed.yaml) is run for --base
episodes and scored once; the run is then grown synthetically to N trajectories by copying its
records with new episode ids and seeds and with the digits of every message and tool result
remapped per copy (a per-copy digit permutation: ids, amounts and dates all change, so copies are
neither exact nor near duplicates and dedup does real work). Score lines are copied alongside, as
`simworld score` would have written them. A second set uses the same recipe on the scripted
used-car negotiation (two samples per trajectory, a smaller system prompt), so the cost of the
retail system prompt (about 19 kB of tool definitions in every sample) can be told apart from the
per-sample work. A third, compact set does the same with the two-turn deposit world of the test
suite (tests/ledger_world.py, loaded as a plugin): short conversations, three tools.

Each export runs in a fresh process (`python -m simworld export ...` semantics through
`export_runs`), pinned to one core where the OS allows; the table reports CPU seconds of that
process (user + kernel), samples per CPU second, and its peak RSS. Memory is flat when the 100k
row's peak RSS is close to the 10k row's. Two floors are measured right after each export, in
the parent process: "read floor", the CPU time reading and parsing the run's records takes with
no other work, and "write floor", the CPU time the same number of lines of the same size take
through the export's writer. Whatever the export does per sample comes on top of both.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

def build_base(out: Path, scenario: Path, episodes: int) -> Path:
    from simworld.runner import resolve_scenario, run_batch
    from simworld.scoring.report import score_run

    sc = resolve_scenario(scenario)
    run_batch(sc, out, episodes=episodes)
    score_run(out)
    return out


def grow(base: Path, out: Path, n: int, seed: int = 0) -> Path:
    """A run of `n` trajectories made from `base`'s records (see the module docstring)."""
    out.mkdir(parents=True)
    shutil.copy(base / "scenario.yaml", out / "scenario.yaml")
    (out / "scores").mkdir()
    records = sorted((p for p in base.glob("trajectories-*.jsonl")), key=str)
    lines = [line for p in records for line in p.read_bytes().splitlines() if line.strip()]
    scores = {orjson.loads(x)["episode_id"]: orjson.loads(x) for x in (base / "scores" / "scores.jsonl").read_bytes().splitlines()}
    rng = random.Random(seed)
    with open(out / "trajectories-0.jsonl", "wb") as fh, open(out / "scores" / "scores.jsonl", "wb") as sh:
        for i in range(n):
            rec = orjson.loads(lines[i % len(lines)])
            old_id = rec["episode_id"]
            perm = list(b"123456789")
            rng.shuffle(perm)  # 0 stays 0: no JSON number gains a leading zero
            table = bytes.maketrans(b"0123456789", b"0" + bytes(perm))
            events = orjson.dumps(rec["events"]).translate(table)  # digits only: JSON stays valid
            rec["events"] = orjson.loads(events)
            rec["episode_id"] = f"{old_id}-x{i:07d}"
            rec["episode_index"] = i  # one index per episode, in file order, as a run of n episodes writes them
            rec["seed"] = rng.getrandbits(62)
            fh.write(orjson.dumps(rec) + b"\n")
            line = dict(scores[old_id], episode_id=rec["episode_id"])
            sh.write(orjson.dumps(line) + b"\n")
    return out


CHILD = r"""
import os, resource, sys, time, json
try:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
except (AttributeError, OSError):
    pass
sys.path.insert(0, sys.argv[1])
from simworld.export import ExportOptions, export_runs
opts = json.loads(sys.argv[3])
r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
res = export_runs([sys.argv[2]], ExportOptions(**opts))
r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - w0
user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
try:  # this process's own peak (Linux keeps ru_maxrss across exec: it would hold the forking parent's size)
    with open("/proc/self/status") as fh:
        peak = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"cpu": user + system, "user": user, "sys": system, "wall": wall,
                  "samples": sum(res.written.values()), "out_bytes": os.path.getsize(opts["out"]),
                  "dups": res.card["duplicates_removed"], "rss_mib": peak}))
"""


def export_once(run: Path, out: Path, **opts) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    args = [sys.executable, "-c", CHILD, str(ROOT), str(run), json.dumps({"out": str(out), **opts})]
    res = subprocess.run(args, capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(res.stderr)
    out.unlink(missing_ok=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def read_floor(run: Path) -> float:
    """CPU seconds reading and parsing the run's records takes with no other work."""
    from simworld.runio import iter_records

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in iter_records(run):
        pass
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def write_floor(path: Path, line_bytes: int, n: int) -> float:
    """CPU seconds this machine takes to write `n` lines of `line_bytes` through the export's own
    writer with no other work: the part of an export's time that is the kernel's, not simworld's."""
    from simworld.export.pipeline import _Outputs

    line = b"x" * (line_bytes - 1)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    out = _Outputs({"train": path})
    for _ in range(n):
        out.write("train", line)
    out.commit()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    path.unlink()
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--base", type=int, default=1000, help="Real scripted episodes per set.")
    ap.add_argument("--keep", action="store_true", help="Keep the generated runs (printed).")
    ap.add_argument("--sets", nargs="+", choices=("retail", "negotiation", "compact"),
                    default=["retail", "negotiation", "compact"], help="Which trajectory sets to run.")
    ap.add_argument("--repeat", type=int, default=1,
                    help="Exports per row; the row reports the one that took the least CPU (on a machine "
                         "shared with other work, the least disturbed).")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_export_"))
    # The compact set: the two-turn deposit world of the test suite (tests/ledger_world.py), as a
    # plugin, written out as a scenario file.
    sys.path.insert(0, str(ROOT / "tests"))
    os.environ["SIMWORLD_PLUGINS"] = "ledger_world"
    import yaml

    import ledger_world

    compact = tmp / "ledger.yaml"
    data = ledger_world.scenario_data()
    data["world"]["params"]["n_accounts"] = 100_000  # tasks rarely repeat an account
    compact.write_text(yaml.safe_dump(data))
    sets = [(name, scenario) for name, scenario in (("retail", ROOT / "scenarios" / "retail" / "mixed.yaml"),
                                                     ("negotiation", ROOT / "scenarios" / "negotiation" / "used_car.yaml"),
                                                     ("compact", compact)) if name in args.sets]
    rows = []
    try:
        for name, scenario in sets:
            t0 = time.perf_counter()
            base = build_base(tmp / f"{name}-base", scenario, args.base)
            print(f"{name}: {args.base} real episodes run and scored in {time.perf_counter() - t0:.1f}s", flush=True)
            for n in args.sizes:
                run = grow(base, tmp / f"{name}-{n}", n)
                size = (run / "trajectories-0.jsonl").stat().st_size
                for label, opts in (("default (dedup on)", {}), ("--no-dedup", {"dedup": False})):
                    r = min((export_once(run, tmp / "out.jsonl", **opts) for _ in range(max(1, args.repeat))),
                            key=lambda x: x["cpu"])
                    r["floor"] = write_floor(tmp / "floor.jsonl", round(r["out_bytes"] / r["samples"]), r["samples"])
                    r["read"] = read_floor(run)
                    rows.append((name, n, size / n, label, r))
                    print(f"  {n:>7,} {label:<20} {r['samples']:>7,} samples  cpu {r['cpu']:6.1f}s "
                          f"(user {r['user']:.1f}, sys {r['sys']:.1f})  {r['samples'] / r['cpu']:8,.0f}/s  "
                          f"floors: read {r['read']:.1f}s, write {r['floor']:.1f}s  peak RSS {r['rss_mib']:6.0f} MiB", flush=True)
                if not args.keep:
                    shutil.rmtree(run)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"runs kept in {tmp}")
    print()
    print(f"{os.cpu_count()} cores on the machine, each export pinned to one"
          + (f"; each row the least CPU of {args.repeat} exports." if args.repeat > 1 else "."))
    print("| set | trajectories | record bytes | sample bytes | options | samples | CPU s (user + sys) "
          "| samples/s (1 core) | read floor s | write floor s | peak RSS MiB |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, n, rec_bytes, label, r in rows:
        print(f"| {name} | {n:,} | {rec_bytes:,.0f} | {r['out_bytes'] / r['samples']:,.0f} | {label} | "
              f"{r['samples']:,} | {r['cpu']:.1f} ({r['user']:.1f} + {r['sys']:.1f}) | "
              f"{r['samples'] / r['cpu']:,.0f} | {r['read']:.1f} | {r['floor']:.1f} | {r['rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
