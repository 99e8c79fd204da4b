"""`repeats`: K episodes per task (same task and variation, own agent and tool randomness), for pass^k.

Real runs of the retail scenarios: groups share the task instance, conversations differ, every
episode replays, resume works, pass^k is C(c, k) / C(n, k) over task success, and repeats = 1
changes nothing.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from simworld.episode import Episode, EpisodeSpec, episode_specs
from simworld.replay import replay_run
from simworld.runio import iter_records, shard_paths
from simworld.runner import resolve_scenario, run_batch
from simworld.scenario import load_scenario
from simworld.scoring.report import score_run
from simworld.types import strip_timings
from test_replay import cli

ROOT = Path(__file__).resolve().parent.parent
MIXED = ROOT / "scenarios" / "retail" / "mixed.yaml"
K = 4


def _run(out: Path, episodes: int, *sets: str) -> list[dict]:
    run_batch(resolve_scenario(MIXED, sets), out, episodes=episodes)
    return sorted(iter_records(out), key=lambda r: r["episode_index"])


def _stripped(records: list[dict]) -> list[bytes]:
    return [orjson.dumps(strip_timings(r), option=orjson.OPT_SORT_KEYS) for r in records]


def _customer_text(record: dict) -> str:
    return "\n".join(e["content"] for e in record["events"] if e["speaker"] == "customer")


@pytest.fixture(scope="module")
def repeated(tmp_path_factory):
    out = tmp_path_factory.mktemp("repeats") / "run"
    return out, _run(out, 5 * K, f"repeats={K}")


def test_a_group_retries_one_task_with_its_own_agents(repeated):
    _, records = repeated
    groups = [records[g:g + K] for g in range(0, len(records), K)]
    assert len(groups) == 5 and all(len(g) == K for g in groups)
    instances = set()
    for group in groups:
        first = group[0]
        assert first["task_seed"] == first["seed"]  # the group's task is its first episode's
        for r in group:
            assert r["task"] == first["task"] and r["variation"] == first["variation"]
            assert r["task_seed"] == first["task_seed"]
        assert len({r["seed"] for r in group}) == K  # agents and tools: each episode its own seed
        # the scripted customer phrases (and typos) its requests differently in every try
        assert len({_customer_text(r) for r in group}) > 1, first["task"]["instance_id"]
        instances.add(first["task"]["instance_id"])
    assert len(instances) == len(groups)
    # mixed.yaml draws the task type per group: the draw is the group's, not per episode
    assert len({g[0]["variation"]["task.type"] for g in groups}) > 1


def test_repeated_episodes_replay_exactly(repeated):
    out, records = repeated
    results = list(replay_run(out))
    assert len(results) == len(records)
    assert all(r.ok for r in results), [r.mismatch.describe() for r in results if not r.ok]
    # the recorded task_seed is what replay needs: without it the task cannot be rebuilt
    rec = dict(records[1])
    del rec["task_seed"]
    from simworld.replay import parse_record, replay_trajectory

    sc = load_scenario(out / "scenario.yaml")
    bad = replay_trajectory(parse_record(rec), sc)
    assert not bad.ok and bad.events_checked == 0  # caught in the setup (task, briefs), before any event


def test_resume_with_repeats_equals_an_uninterrupted_run(tmp_path, repeated):
    _, reference = repeated
    # extended in two sessions, the second starting mid-group
    out = tmp_path / "extended"
    _run(out, 6, f"repeats={K}")
    assert _stripped(_run(out, 5 * K, f"repeats={K}")) == _stripped(reference)
    # episodes lost from the middle of groups are run again, the same
    out = tmp_path / "holes"
    _run(out, 5 * K, f"repeats={K}")
    (shard,) = shard_paths(out)
    lines = shard.read_bytes().splitlines(keepends=True)
    shard.write_bytes(b"".join(x for x in lines if orjson.loads(x)["episode_index"] not in (5, 9, 10)))
    assert len(list(iter_records(out))) == 5 * K - 3
    assert _stripped(_run(out, 5 * K, f"repeats={K}")) == _stripped(reference)


def test_repeats_one_is_the_run_without_repeats(tmp_path):
    specs = episode_specs(resolve_scenario(MIXED), 8)
    assert all(s.task_seed is None for s in specs)
    # a group of one: the task seed is the episode's own, exactly as without the field
    sc = resolve_scenario(MIXED)
    for spec in specs[:3]:
        own = EpisodeSpec(spec.episode_id, spec.index, spec.seed, spec.variation, task_seed=spec.seed)
        a = Episode(sc, spec).task.record()
        assert Episode(sc, own).task.record() == a
    records = _run(tmp_path / "run", 4)
    assert all("task_seed" not in r for r in records)  # records keep the old shape
    assert "repeats" not in (tmp_path / "run" / "scenario.yaml").read_text()
    base = load_scenario(MIXED)
    assert resolve_scenario(MIXED, ["repeats=1"]).content_hash == base.content_hash
    assert resolve_scenario(MIXED, [f"repeats={K}"]).content_hash != base.content_hash


def test_pass_k_is_over_task_success_of_each_group(tmp_path):
    # The noisy support agent with few turns: some tries of a task succeed, some run out of turns.
    out = tmp_path / "run"
    records = _run(out, 10 * K, f"repeats={K}", "roles.support.agent.type=noisy_oracle",
                   "roles.support.agent.error_rate=0.5", "max_turns=24")
    summary, _ = score_run(out)
    d = summary.as_dict()
    tries: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        tries[r["task"]["instance_id"]].append(r["outcome"]["success"])
    assert d["tasks"] == len(tries) == 10
    counts = [(len(v), sum(v)) for v in tries.values()]
    assert any(0 < c < n for n, c in counts), counts  # groups with both outcomes: pass^k is not trivial
    for k in range(1, K + 1):
        expected = sum(math.comb(c, k) / math.comb(n, k) for n, c in counts) / len(counts)
        assert d["pass_k"][f"pass^{k}"] == pytest.approx(expected, abs=1e-6)
    assert "pass^5" not in d["pass_k"]
    assert d["pass_k"]["pass^1"] == pytest.approx(d["total"]["success_rate"])
    assert d["pass_k"]["pass^1"] > d["pass_k"]["pass^2"] > d["pass_k"]["pass^4"]
    # `simworld run` says the same at the end of the run, from its repeat groups (no scoring needed).
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["summary"]["pass_k"] == d["pass_k"]


def test_cli_run_takes_repeats_from_set(tmp_path):
    out = tmp_path / "run"
    res = cli("run", str(MIXED), "--episodes", "6", "--set", "repeats=3", "--out", str(out), "-q")
    assert res.returncode == 0, res.stderr
    records = sorted(iter_records(out), key=lambda r: r["episode_index"])
    assert [r["task"]["instance_id"] for r in records[:3]] == [records[0]["task"]["instance_id"]] * 3
    assert records[3]["task"]["instance_id"] != records[0]["task"]["instance_id"]
    assert "repeats: 3" in (out / "scenario.yaml").read_text()
    assert cli("replay", str(out)).returncode == 0
    assert "note:" not in res.stderr  # (6 is a multiple of 3)
    scored = cli("score", str(out))
    assert "pass^3" in scored.stdout and "tried once" not in scored.stdout
    assert "over" not in next(line for line in scored.stdout.splitlines() if line.startswith("pass^k"))
    bad = cli("run", str(MIXED), "--episodes", "2", "--set", "repeats=0", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "repeats" in bad.stderr and "Traceback" not in bad.stderr


def test_episodes_not_a_multiple_of_repeats_are_said_so_and_pass_k_counts_its_tasks(tmp_path):
    """7 episodes with repeats=3: the last task is tried once. pass^2 and pass^3 are over the two
    tasks tried 3 times, and the lines say so instead of claiming all 3 tasks."""
    out = tmp_path / "run"
    res = cli("run", str(MIXED), "--episodes", "7", "--set", "repeats=3", "--out", str(out), "-q", "--seed", "1",
              "--set", "roles.support.agent.type=noisy_oracle", "--set", "roles.support.agent.error_rate=0.5",
              "--set", "max_turns=24")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ("note: 7 episodes are not a multiple of repeats=3: the last task is tried once, not 3 times, "
                          "so pass^k for k > 1 leaves it out\n")
    tries: dict[int, list[bool]] = defaultdict(list)
    for r in iter_records(out):
        tries[r["task_seed"]].append(r["outcome"]["success"])
    counts = sorted((len(v), sum(v)) for v in tries.values())
    assert [n for n, _ in counts] == [1, 3, 3] and any(0 < c < n for n, c in counts), counts  # (pass^k not trivial)
    pass_k = {f"pass^{k}": round(sum(math.comb(c, k) / math.comb(n, k) for n, c in counts if n >= k)
                                 / sum(n >= k for n, _ in counts), 6) for k in (1, 2, 3)}
    values = (f"pass^1 {pass_k['pass^1']:.3f}, pass^2 {pass_k['pass^2']:.3f} over 2 tasks, "
              f"pass^3 {pass_k['pass^3']:.3f} over 2 tasks")
    scope = "3 tasks; pass^k is over the tasks tried at least k times"
    # (the summary table may wrap the row: compare the words)
    assert f"pass^k {values} (all k tries of a task succeed; {scope})" in " ".join(res.stdout.split())
    manifest = orjson.loads((out / "manifest.json").read_bytes())["summary"]
    assert manifest["pass_k"] == pass_k and manifest["pass_k_tasks"] == {"pass^1": 3, "pass^2": 2, "pass^3": 2}
    scored = cli("score", str(out))
    assert scored.returncode == 0, scored.stderr
    assert f"pass^k (all k tries of a task succeed; {scope}): {values}" in " ".join(scored.stdout.split())
    summary = orjson.loads((out / "scores" / "summary.json").read_bytes())
    assert summary["pass_k"] == pass_k and summary["pass_k_tasks"] == manifest["pass_k_tasks"]
