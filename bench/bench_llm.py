"""Model calls/s through simworld's LLM agent vs. the bare `openai` AsyncClient.

Against the scripted OpenAI-compatible test server (``tests/llm_server.py``, its own process) with
a fixed reply latency (100 ms by default), at concurrency 1, 8, 32 and 128:

* simworld: ledger episodes (``tests/ledger_world.py``) whose customer and clerk are both
  `agent.type: llm` (4 model calls per episode), `concurrency` episodes in flight on one asyncio
  loop the way the runner drives them, each trajectory serialized as the run would store it; once
  with `client: litellm` (forced), once with `client: openai` (the SDK directly; what the default
  `client: auto` picks for an `openai/` model on an api_base, as here);
* direct: the same number of chat-completion calls with ``openai.AsyncOpenAI``,
  `concurrency` in flight;
* ideal: concurrency / latency.

Target: at concurrency 32, simworld ≥ 80% of the direct client. Each cell is the best of
`--repeat` runs (the machine is shared; the best run is the least disturbed one).

    python bench/bench_llm.py [--latency 0.1] [--levels 1,8,32,128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

CALLS_PER_EPISODE = 4


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "llm_server.py"), "--latency", str(latency),
                             "--policy", "ledger"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("PORT "):
        proc.kill()
        raise SystemExit(f"test server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}/v1"


def scenario(base_url: str, client: str = "litellm"):
    import ledger_world
    from simworld.scenario import scenario_from_data

    data = ledger_world.scenario_data()
    for role in ("user", "clerk"):
        data["roles"][role]["agent"] = {"type": "llm", "model": "openai/bench-model", "api_base": base_url,
                                        "max_retries": 0, "timeout": 30, "client": client}
    return scenario_from_data(data)


async def through_simworld(sc, episodes: int, concurrency: int) -> tuple[float, int]:
    """(seconds, model calls) for `episodes` episodes, `concurrency` in flight."""
    from simworld.episode import episode_specs, run_episode

    specs = iter(episode_specs(sc, episodes))
    calls = 0
    failures = []

    async def lane() -> None:
        nonlocal calls
        for spec in specs:
            traj = await run_episode(sc, spec)
            traj.to_jsonl()
            if traj.outcome.error:
                failures.append(traj.outcome.error)
            calls += sum(m["calls"] for m in traj.provenance.models.values())

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} episodes failed, e.g. {failures[0]}")
    return elapsed, calls


async def direct(client, n_calls: int, concurrency: int, request: dict) -> float:
    remaining = iter(range(n_calls))

    async def lane() -> None:
        for _ in remaining:
            await client.chat.completions.create(**request)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.perf_counter() - started


def first_clerk_request(sc) -> dict:
    """A request shaped like the clerk's first call (system prompt, one user turn, the tools)."""
    from simworld.agents.llm.convert import openai_messages
    from simworld.episode import Episode, episode_specs
    from simworld.types import Message

    ep = Episode(sc, episode_specs(sc, 1)[0], make_agents=False)
    ep.events.append(Message(role="user", speaker="user", content="Hi, please deposit 5 into account 7."))
    return {"model": "bench-model", "messages": openai_messages(ep.perspective("clerk")),
            "tools": [t.openai() for t in ep.tools_of("clerk")], "temperature": 0.0, "max_tokens": 1024}


async def main_async(args: argparse.Namespace, base_url: str) -> list[tuple[int, int, float, float, float, float]]:
    import openai

    from simworld.agents.llm.client import litellm

    litellm()  # import outside the timed region
    via_litellm, via_openai = scenario(base_url, "litellm"), scenario(base_url, "openai")
    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=30)
    request = first_clerk_request(via_litellm)
    for sc in (via_litellm, via_openai):  # warm up every path (connections, caches)
        await through_simworld(sc, 8, 4)
    await direct(client, 16, 4, request)
    rows = []
    for level in args.levels:
        episodes = max(10, 2 * level)
        n_calls = episodes * CALLS_PER_EPISODE
        best = {"litellm": 0.0, "openai": 0.0, "direct": 0.0}
        for _ in range(args.repeat):  # interleaved, so a busy moment hurts every column alike
            for name, sc in (("litellm", via_litellm), ("openai", via_openai)):
                elapsed, calls = await through_simworld(sc, episodes, level)
                assert calls == n_calls, (calls, n_calls)
                best[name] = max(best[name], calls / elapsed)
            best["direct"] = max(best["direct"], n_calls / await direct(client, n_calls, level, request))
        rows.append((level, n_calls, best["litellm"], best["openai"], best["direct"], level / args.latency))
        print(f"  concurrency {level}: " + ", ".join(f"{k} {v:.1f}/s" for k, v in best.items()), file=sys.stderr,
              flush=True)
    await client.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 128])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    server, base_url = start_server(args.latency)
    try:
        rows = asyncio.run(main_async(args, base_url))
    finally:
        server.terminate()
        server.wait(10)
    from importlib.metadata import version

    print(f"\nLLM agent throughput: {os.cpu_count()} cores, Python {platform.python_version()}, litellm "
          f"{version('litellm')}, openai {version('openai')}, server latency {args.latency * 1000:.0f} ms, "
          f"best of {args.repeat}, load average {os.getloadavg()[0]:.1f}")
    print("simworld/s: calls/s through simworld episodes with client litellm (forced) and client openai "
          "(= the default client auto for an openai/ model on an api_base)")
    print(f"{'concurrency':>11} {'calls':>6} {'litellm/s':>10} {'openai/s':>9} {'direct/s':>9} {'ideal/s':>8} "
          f"{'litellm/direct':>15} {'openai/direct':>14}")
    for level, calls, lite, oai, dir_, ideal in rows:
        print(f"{level:>11} {calls:>6} {lite:>10.1f} {oai:>9.1f} {dir_:>9.1f} {ideal:>8.0f} {lite / dir_:>15.0%} "
              f"{oai / dir_:>14.0%}")
    for level, calls, lite, oai, dir_, ideal in rows:
        if level == 32:
            for name, value in (("client litellm (forced)", lite), ("client auto/openai (default)", oai)):
                ratio = value / dir_
                print(f"target at concurrency 32, {name}: >= 80% of direct: {'met' if ratio >= 0.8 else 'NOT met'} "
                      f"({ratio:.0%})")


if __name__ == "__main__":
    main()
