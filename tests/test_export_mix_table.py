"""An export that mixes in external conversations (`--mix`) loads with Hugging Face `datasets` as one
table, as an export without them does: external samples carry the synthetic samples' provenance
and scores keys, with the same types, and stand-ins where a key is about a simulation.

`datasets` reads JSON Lines in blocks (`chunksize` bytes, then the rest of the line) and types every
block like the first; a chunk of one byte makes every line a block of its own. The export writes a
synthetic sample first (external ones are mixed in after each synthetic one, as the fraction
asks), so the file as written has a first block of synthetic samples only; the same lines with
the external ones first (as a shuffle may put them) have a first block of external samples only.

The tools and call arguments of llama3 lines (and the tools of openai lines) are objects, as the
formats have them: `datasets` keeps a field as JSON text when its objects' keys differ within the
first block, else types it as a struct. So the external data here offer two tools with different
parameters and call both (as the ledger clerk does), with parameter schemas of OpenAI's strict form
(``type``, ``properties``, ``required``, ``additionalProperties``: the keys of simworld's own).
External tools whose schemas have other top-level keys, coming after a first block of simworld's,
or uniform ones coming first, would still stop the loader at the ``tools`` column: a matter of
the formats, not of the metadata tested here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import orjson
import pytest

import test_export_worlds as worlds
from simworld.export import ExportOptions, export_runs

SLOPPY = {**worlds.scenario_cases()[1].values[0], "name": "ledger_sloppy"}
FRACTION = 0.4
STAND_INS = {"run": "", "scenario": "", "scenario_hash": "", "episode_id": "", "seed": -1, "episode_index": -1,
             "variation": "{}", "task_type": "", "instance_id": "", "agents": "{}", "models": "{}",
             "simworld_version": "", "parent": "", "fork_at": -1, "success": False, "synthetic": False,
             "perspective": "assistant"}


def _external(path: Path, n: int) -> Path:
    def tool(name: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
        return {"type": "function", "function": {"name": name, "description": description, "parameters": {
            "type": "object", "properties": properties, "required": sorted(properties),
            "additionalProperties": False}}}

    def call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        arguments_text = orjson.dumps(arguments).decode()
        return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments_text}}

    tools = [tool("book", "Book a flight.", {"flight": {"type": "integer"}, "city": {"type": "string"}}),
             tool("cancel", "Cancel a booking.", {"reference": {"type": "string"}})]
    lines = []
    for i in range(n):
        lines.append({"tools": tools, "messages": [
            {"role": "system", "content": "You are a travel agent."},
            {"role": "user", "content": f"Book flight {i} to city {i * 31 % 97}, then cancel my booking R{i * 7}."},
            {"role": "assistant", "content": None, "tool_calls": [
                call("c1", "book", {"flight": i, "city": f"city {i * 31 % 97}"}),
                call("c2", "cancel", {"reference": f"R{i * 7}"})]},
            {"role": "tool", "tool_call_id": "c1", "content": f"booked {i}"},
            {"role": "tool", "tool_call_id": "c2", "content": f"cancelled R{i * 7}"},
            {"role": "assistant", "content": f"Booked flight {i} (reference R{i * 7919}) and cancelled R{i * 7}."}]})
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[list[Path], Path]:
    root = tmp_path_factory.mktemp("mixtable")
    runs = [worlds.make_run(root / "good", worlds.ledger_data(), 24), worlds.make_run(root / "sloppy", SLOPPY, 12)]
    return runs, _external(root / "real.jsonl", 80)


def _export(runs: list[Path], out: Path, **kw: Any) -> Any:
    return export_runs([str(r) for r in runs], ExportOptions(out=str(out), dedup=False, **kw))


def _load(path: Path, chunk: int, cache: Path) -> Any:
    datasets.disable_progress_bars()
    return datasets.load_dataset("json", data_files=str(path), split="train", chunksize=chunk, cache_dir=str(cache))


def _first_block(raw: list[bytes], chunk: int) -> list[int]:
    """The lines `datasets` reads as its first block: those that start within the first `chunk` bytes."""
    starts, at = [], 0
    for i, line in enumerate(raw):
        if at >= chunk:
            break
        starts.append(i)
        at += len(line) + 1
    return starts


def _external_first(raw: list[bytes]) -> list[int]:
    """The order of the lines with the external samples first (each kind in its written order)."""
    return sorted(range(len(raw)), key=lambda i: orjson.loads(raw[i])["synthetic"])


def _check_rows(loaded: Any, lines: list[dict[str, Any]], ext: Path) -> None:
    """Each row holds what its line does; the external rows hold the stand-ins, the synthetic ones a
    scenario and no external file."""
    assert loaded.num_rows == len(lines)
    externals = 0
    keys = list(lines[0]["provenance"])
    for row, line in zip(loaded, lines):
        assert row["provenance"] == line["provenance"] and row["scores"] == line["scores"]
        assert list(line["provenance"]) == keys  # the same keys, in the same order
        prov = row["provenance"]
        if line["synthetic"]:
            assert (prov["source"], prov["line"]) == ("", -1)
            assert prov["scenario"] in ("ledger_deposit", "ledger_sloppy") and prov["task_type"] == "deposit"
            assert prov["seed"] >= 0 and prov["episode_id"] and 0 <= row["scores"]["value"] <= 1
            continue
        externals += 1
        assert {k: prov[k] for k in STAND_INS} == STAND_INS
        assert prov["source"] == str(ext) and line["id"] == f"real.jsonl:{prov['line']}" and prov["line"] >= 1
        assert row["scores"] == {"value": -1.0, "passed": False, "scorers": "{}"}
    assert 0 < externals < len(lines)


@pytest.mark.parametrize("order", ["as_written", "external_first"])
@pytest.mark.parametrize("fmt", ["llama3", "sharegpt", "openai"])
def test_a_mixed_export_loads_as_one_table(setup, tmp_path, fmt, order):
    runs, ext = setup
    out = tmp_path / "mix.jsonl"
    res = _export(runs, out, fmt=fmt, mix=(f"{ext}:{FRACTION}",))
    plain = _export(runs, tmp_path / "plain.jsonl", fmt=fmt)
    data, meta = out, res.metadata.get("train")
    raw = (meta or data).read_bytes().splitlines()
    order_of = list(range(len(raw))) if order == "as_written" else _external_first(raw)
    files = {"data": (data, data.read_bytes().splitlines())}
    if meta is not None:
        files["meta"] = (meta, meta.read_bytes().splitlines())
    for key, (path, written) in files.items():  # data and metadata in the same order, line for line
        reordered = tmp_path / f"{order}.{key}.jsonl"
        reordered.write_bytes(b"".join(written[i] + b"\n" for i in order_of))
        files[key] = (reordered, [orjson.loads(written[i]) for i in order_of])
    with_metadata = files["meta" if meta is not None else "data"]
    plain_metadata = plain.metadata.get("train", tmp_path / "plain.jsonl")
    for chunk in (1, 1 << 12):
        path, lines = with_metadata
        first = _first_block(path.read_bytes().splitlines(), chunk)
        assert len(first) < len(lines)  # more blocks than the first
        if chunk == 1 or order == "external_first":  # (4 KiB as written: the second line may be in the first block)
            assert {lines[i]["synthetic"] for i in first} == {order == "as_written"}
        for path, lines in files.values():
            assert _load(path, chunk, tmp_path / "hf").num_rows == len(lines)
        loaded = _load(with_metadata[0], chunk, tmp_path / "hf")
        _check_rows(loaded, with_metadata[1], ext)
        alone = _load(plain_metadata, chunk, tmp_path / "hf")  # typed as an export without --mix is
        assert loaded.features["provenance"] == alone.features["provenance"]
        assert loaded.features["scores"] == alone.features["scores"]


def test_the_card_and_the_filters_count_external_samples_as_before(setup, tmp_path):
    """External samples are counted as external (scenario and task type ``external``, no ``""``),
    out of the success rate and score distribution of the synthetic ones; the export's filters
    choose among synthetic samples and the external ones are mixed in at the fraction asked."""
    runs, ext = setup
    plain = _export(runs, tmp_path / "plain.jsonl")
    mixed = _export(runs, tmp_path / "mix.jsonl", mix=(f"{ext}:{FRACTION}",))
    card, alone = mixed.card, plain.card
    n_ext = mixed.card["mix"][0]["samples"]
    assert n_ext == round(FRACTION / (1 - FRACTION) * alone["samples"])
    assert card["counts"]["source"] == {"synthetic": alone["samples"], "external": n_ext}
    assert card["counts"]["scenario"] == {**alone["counts"]["scenario"], "external": n_ext}
    assert card["counts"]["task_type"] == {**alone["counts"]["task_type"], "external": n_ext}
    assert "" not in card["counts"]["scenario"] and "" not in card["counts"]["task_type"]
    for key in ("success_rate", "mean_score", "score_histogram", "scorer_means", "assistant_turns_per_sample",
                "tool_calls_per_sample"):
        assert card[key] == alone[key], key
    assert 0 < alone["success_rate"] < 1  # (the sloppy clerk fails some: --only-success has work to do)
    # Filters that the external samples' stand-ins would fail (success false, score -1, scenario
    # and task type "") leave them in, as before: they filter the runs' records.
    filtered = _export(runs, tmp_path / "f.jsonl", mix=(f"{ext}:{FRACTION}",), only_success=True, min_score=0.5,
                       scenarios=("ledger_sloppy",), task_types=("deposit",))
    lines = worlds.read_lines(tmp_path / "f.jsonl")
    synthetic = [x for x in lines if x["synthetic"]]
    real = [x for x in lines if not x["synthetic"]]
    assert synthetic and all(x["provenance"]["success"] and x["provenance"]["scenario"] == "ledger_sloppy"
                             and x["scores"]["value"] >= 0.5 for x in synthetic)
    assert len(real) == filtered.card["mix"][0]["samples"] == round(FRACTION / (1 - FRACTION) * len(synthetic))
    assert all(x["provenance"]["success"] is False and x["scores"]["value"] == -1.0 for x in real)
    assert filtered.card["counts"]["scenario"] == {"ledger_sloppy": len(synthetic), "external": len(real)}
