"""DPO pairs compare the perspective's own behaviour: both sides of a pair faced the same agents in
every other role, so the other party did not cause the score gap."""

from __future__ import annotations

import pytest

import test_export_worlds as worlds
from simworld.errors import counted
from simworld.export import ExportOptions, export_runs
from test_replay import cli


def export(runs, out, **kw):
    return export_runs([str(r) for r in runs], ExportOptions(out=str(out), **kw))


def haggle(seller_step: float, buyer_step: float) -> dict:
    data = worlds.haggle_data()
    roles = data["roles"]
    return {**data, "roles": {"seller": {**roles["seller"], "agent": {"type": "haggler", "step": seller_step}},
                              "buyer": {**roles["buyer"], "agent": {"type": "haggler", "step": buyer_step}}}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairing")
    # base; the buyer changed (it never moves its offer); the seller changed. Same seed throughout.
    return (worlds.make_run(root / "base", haggle(0.25, 0.3), 12),
            worlds.make_run(root / "buyer", haggle(0.25, 0.0), 12),
            worlds.make_run(root / "seller", haggle(0.6, 0.3), 12))


def counterpart(provenance: dict) -> dict:
    agents = worlds.provenance_map(provenance, "agents")
    agents.pop(provenance["perspective"])
    return agents


def test_both_sides_of_every_pair_faced_the_same_other_agents(runs, tmp_path):
    res = export(runs, tmp_path / "dpo.jsonl", fmt="dpo")
    pairs = worlds.read_samples(tmp_path / "dpo.jsonl")
    assert len(pairs) == res.card["dpo"]["pairs"] > 0
    for p in pairs:
        chosen, rejected = p["provenance"]["chosen"], p["provenance"]["rejected"]
        assert counterpart(chosen) == counterpart(rejected)
        own = chosen["perspective"]
        assert worlds.provenance_map(chosen, "agents")[own] != worlds.provenance_map(rejected, "agents")[own]
    # Each perspective pairs with the run that changed its own agent only.
    assert {p["provenance"]["chosen"]["perspective"] for p in pairs} == {"seller", "buyer"}
    for p in pairs:
        runs_ = {p["provenance"]["chosen"]["run"], p["provenance"]["rejected"]["run"]}
        assert runs_ == {"base", "buyer" if p["provenance"]["chosen"]["perspective"] == "buyer" else "seller"}


def test_score_gaps_against_another_counterpart_are_counted_and_named(runs, tmp_path):
    base, buyer, _ = runs
    # The seller's score gaps between these runs: the buyer changed, the seller did not.
    export([base, buyer], tmp_path / "all.jsonl", fmt="trl", dedup=False)
    scores: dict = {}
    for s in worlds.read_samples(tmp_path / "all.jsonl"):
        prov = s["provenance"]
        scores.setdefault((prov["instance_id"], prov["seed"], prov["perspective"]), set()).add(s["scores"]["value"])
    seller_gaps = sum(1 for (_, _, role), values in scores.items() if role == "seller" and len(values) > 1)
    assert seller_gaps > 0

    res = export([base, buyer], tmp_path / "dpo.jsonl", fmt="dpo")
    pairs = worlds.read_samples(tmp_path / "dpo.jsonl")
    assert pairs and {p["provenance"]["chosen"]["perspective"] for p in pairs} == {"buyer"}
    dpo = res.card["dpo"]
    assert dpo["skipped_counterpart_differs"] == seller_gaps
    md = (tmp_path / "dpo.card.md").read_text()
    assert f"{seller_gaps:,} whose score gap lies only between sides played against other agents" in md

    done = cli("export", str(base), str(buyer), "--format", "dpo", "-o", str(tmp_path / "cli.jsonl"))
    assert done.returncode == 0, done.stderr
    note = f"note: {counted(seller_gaps, 'group')} of one task instance, seed and perspective made no pair"
    assert note in done.stderr
    assert "other roles' agents differ" in done.stderr


def test_a_run_of_another_agent_made_with_set_pairs_with_the_scenarios_own(tmp_path):
    """`--set roles.support.agent={type: oracle}` drops noisy_support's error_rate axis; the other
    axes keep their draws, so both runs play the same task instances and the noisy oracle's
    mistakes pair against the oracle's clean runs."""
    from simworld.runner import resolve_scenario, run_batch

    path = worlds.ROOT / "scenarios" / "retail" / "noisy_support.yaml"
    n = 40
    run_batch(resolve_scenario(path), tmp_path / "noisy", episodes=n)
    run_batch(resolve_scenario(path, ["roles.support.agent={type: oracle}"]), tmp_path / "oracle", episodes=n)
    from simworld.runio import iter_records

    tasks = [{r["episode_id"]: r["task"]["instance_id"] for r in iter_records(tmp_path / run)}
             for run in ("noisy", "oracle")]
    assert len(tasks[0]) == n and tasks[0] == tasks[1]
    res = export([tmp_path / "noisy", tmp_path / "oracle"], tmp_path / "dpo.jsonl", fmt="dpo")
    dpo = res.card["dpo"]
    assert dpo["pairs"] >= n // 10 and dpo["skipped_counterpart_differs"] == 0
    for p in worlds.read_samples(tmp_path / "dpo.jsonl"):
        agents = {side: worlds.provenance_map(p["provenance"][side], "agents") for side in ("chosen", "rejected")}
        assert agents["chosen"]["customer"] == agents["rejected"]["customer"]
        assert {agents["chosen"]["support"].split("(")[0], agents["rejected"]["support"].split("(")[0]} == \
            {"oracle", "noisy_oracle"}
