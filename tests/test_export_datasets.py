"""Exports load with Hugging Face `datasets` (the JSON loader TRL, LLaMA-Factory and most trainers
use) when they mix scenarios of different worlds, whichever run comes first.

`datasets` reads a JSON Lines file in blocks (`chunksize`) and gives every block the types of the
first: an object whose keys depend on the data (variations, role names, scorer names) or a field
that is null throughout the first block (no fork there) cannot take what a later block holds. A
small `chunksize` makes a small export many blocks. The runs: retail (oracle, and a noisy oracle on
the same seed, for DPO pairs), two negotiation scenarios, and forks of each negotiation with
another agent (so `parent` and `fork_at` are set in later blocks only, and DPO has pairs of every
world).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import orjson
import pytest

import test_export_worlds as worlds
from simworld.export import ExportOptions, export_runs
from simworld.runio import iter_records
from simworld.runner import run_batch
from simworld.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
CHUNK = 1 << 16  # a few llama3 lines a block
META_CHUNK = 1 << 12  # a few metadata lines a block
FORMATS = ("llama3", "openai", "trl", "sharegpt", "dpo")


def _run(out: Path, scenario: str, episodes: int, overrides: dict[str, Any] | None = None) -> Path:
    run_batch(load_scenario(SCENARIOS / scenario, overrides=overrides), out, episodes=episodes)
    return out


def _forks(out: Path, parent: Path, scenario: str, role: str) -> Path:
    """Each episode of `parent` forked at its first turn, `role` played on by a hardliner."""
    other = load_scenario(SCENARIOS / scenario, overrides={f"roles.{role}.agent": {"type": "hardliner"}})
    return worlds.fork_run(out, parent, other)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("mixed")
    retail = [_run(root / "retail", "retail/mixed.yaml", 14),
              _run(root / "retail_noisy", "retail/mixed.yaml", 14, {"roles.support.agent": {
                  "type": "noisy_oracle", "error_rate": 0.3, "unrecovered_rate": 0.5}})]
    car = _run(root / "car", "negotiation/used_car.yaml", 10)
    lease = _run(root / "lease", "negotiation/lease_renewal.yaml", 10)
    negotiation = [car, _forks(root / "car_forks", car, "negotiation/used_car.yaml", "buyer"),
                   lease, _forks(root / "lease_forks", lease, "negotiation/lease_renewal.yaml", "tenant")]
    return {"retail_first": retail + negotiation, "negotiation_first": negotiation + retail}


@pytest.fixture(scope="module")
def records(runs) -> dict[tuple[str, str], dict[str, Any]]:
    """Every trajectory, by (run name, episode id): the noisy retail run's ids are the oracle's."""
    return {(run.name, r["episode_id"]): r for run in runs["retail_first"] for r in iter_records(run)}


def _load(path: Path, chunk: int, cache: Path) -> Any:
    datasets.disable_progress_bars()
    return datasets.load_dataset("json", data_files=str(path), split="train", chunksize=chunk, cache_dir=str(cache))


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def _check_metadata(row: dict[str, Any], line: dict[str, Any], records: dict[tuple[str, str], dict[str, Any]]) -> None:
    """A loaded metadata row (a llama3 line, a metadata line, or one side of a DPO pair's) holds what
    was written, and its JSON-text maps read back as the trajectory's."""
    assert row["scores"]["value"] == line["scores"]["value"] and row["scores"]["passed"] == line["scores"]["passed"]
    assert json.loads(row["scores"]["scorers"]) == json.loads(line["scores"]["scorers"])
    prov, written = row["provenance"], line["provenance"]
    assert prov == written
    record = records[prov["run"], prov["episode_id"]]
    assert json.loads(prov["variation"]) == record["variation"]
    assert json.loads(prov["agents"]) == record["provenance"]["agent_ids"]
    assert json.loads(prov["models"]) == record["provenance"]["models"]
    fork_at = record["provenance"].get("fork_at")
    assert (prov["parent"], prov["fork_at"]) == (record["provenance"].get("parent") or "",
                                                 -1 if fork_at is None else fork_at)
    assert prov["seed"] == record["seed"] and "scores" not in prov


@pytest.mark.parametrize("order", ["retail_first", "negotiation_first"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_an_export_mixing_worlds_loads_with_datasets(runs, records, order, fmt, tmp_path):
    out = tmp_path / f"{fmt}.jsonl"
    res = export_runs(runs[order], ExportOptions(fmt=fmt, out=str(out), dedup=False, validation=0.3))
    files = [(path, res.written[split], CHUNK) for split, path in res.outputs.items()]
    files += [(path, res.written[split], META_CHUNK) for split, path in res.metadata.items()]
    assert len(files) == (2 if fmt == "llama3" else 4)
    for path, written, chunk in files:
        lines = _lines(path)
        assert len(lines) == written > 0
        loaded = _load(path, chunk, tmp_path / "hf")
        assert loaded.num_rows == written
        if "provenance" in lines[0]:
            assert path.stat().st_size > 2 * chunk  # blocks, each typed like the first
        if "provenance" not in lines[0]:  # the trainer formats' data: what their trainer reads
            continue
        if fmt == "dpo":  # both sides of each pair
            rows = [({k: row[k][side] for k in ("scores", "provenance")}, {k: line[k][side] for k in ("scores", "provenance")})
                    for row, line in zip(loaded, lines) for side in ("chosen", "rejected")]
            features = loaded.features["provenance"]["chosen"]
        else:
            rows, features = list(zip(loaded, lines)), loaded.features["provenance"]
        for row, line in rows:
            _check_metadata(row, line, records)
        assert features["seed"].dtype == "int64" and features["fork_at"].dtype == "int64"
        assert features["parent"].dtype == features["variation"].dtype == "string"
    # The export does mix the worlds: variations of both, forks and others.
    meta = [m for path, _, _ in files if "provenance" in _lines(path)[0] for m in _lines(path)]
    sides = [m["provenance"][s] for m in meta for s in ("chosen", "rejected")] if fmt == "dpo" else \
        [m["provenance"] for m in meta]
    assert {p["scenario"] for p in sides} == {"retail_mixed", "used_car", "lease_renewal"}
    assert {p["parent"] == "" for p in sides} == {True, False}


def test_a_null_where_the_first_block_has_no_value_is_what_datasets_refuses(runs, tmp_path):
    """Why every scorer's value is in JSON text and a non-fork has parent "" and fork_at -1: written
    as null where they do not apply (a scorer the sample's scenario does not use, no fork), a field
    null throughout the first block is typed null, and a later block's values cannot be cast."""
    out = tmp_path / "l.jsonl"
    export_runs(runs["retail_first"], ExportOptions(out=str(out), dedup=False))
    lines = _lines(out)
    names = list(dict.fromkeys(name for x in lines for name in json.loads(x["scores"]["scorers"])))
    assert "negotiation" in names and "state_match" in names
    as_nulls = {
        "scores": lambda x: {**{n: json.loads(x["scores"]["scorers"]).get(n) for n in names},
                             "value": x["scores"]["value"], "passed": x["scores"]["passed"]},
        "provenance": lambda x: {**x["provenance"], "parent": x["provenance"]["parent"] or None,
                                 "fork_at": None if x["provenance"]["fork_at"] < 0 else x["provenance"]["fork_at"]},
    }
    assert _load(out, CHUNK, tmp_path / "hf").num_rows == len(lines)
    for key, rewrite in as_nulls.items():
        other = tmp_path / f"{key}-null.jsonl"
        other.write_bytes(b"".join(orjson.dumps({**x, key: rewrite(x)}) + b"\n" for x in lines))
        with pytest.raises(datasets.exceptions.DatasetGenerationError) as failed:
            _load(other, CHUNK, tmp_path / "hf")
        cause = failed.value
        while cause.__cause__ or cause.__context__:
            cause = cause.__cause__ or cause.__context__
        assert "Couldn't cast" in str(cause) and "to null" in str(cause), cause
