"""An export owns the files it writes beside OUT (data, validation split, metadata files, card): one
into the same OUT removes those an earlier export wrote and it does not, together with putting its
own in place, so that no old split or metadata sits beside data it does not belong to."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import orjson
import pytest

import test_export_worlds as worlds
from simworld.errors import SimworldError
from simworld.export import ExportOptions, export_runs
from simworld.export.pipeline import _Outputs
from test_replay import cli


def export(runs, out, **kw):
    return export_runs([str(r) for r in runs], ExportOptions(out=str(out), **kw))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("stale")
    return (worlds.make_run(root / "good", worlds.ledger_data(), 30),
            worlds.make_run(root / "sloppy", worlds.scenario_cases()[1].values[0], 12))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _ids(path: Path) -> set[str]:
    return {line["id"] for line in worlds.read_samples(path)}


def test_a_second_export_to_the_same_out_removes_what_the_first_wrote_and_it_does_not(runs, tmp_path):
    """The QA case: an openai export with a validation split, then a llama3 export of another run
    to the same OUT (no .jsonl in its name). The old split and metadata files would be read as this
    export's: 4 files of another run and format beside the new data."""
    good, sloppy = runs
    out = tmp_path / "o.data"
    bystanders = {"o.meta.jsonl": b"1\n", "o.data.validation.jsonl.bak": b"2\n", "o.datax.meta.jsonl": b"3\n",
                  "other.jsonl": b"4\n", "o.data.card.txt": b"5\n"}
    for name, data in bystanders.items():
        (tmp_path / name).write_bytes(data)
    export([good], out, fmt="openai", validation=0.3)
    first = {"o.data", "o.data.validation.jsonl", "o.data.meta.jsonl", "o.data.validation.meta.jsonl",
             "o.data.card.md", "o.data.card.json"}
    assert set(_files(tmp_path)) == first | set(bystanders)
    res = cli("export", str(sloppy), "--format", "llama3", "--only-success", "--out", str(out))
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    gone = [out.with_name(n) for n in ("o.data.validation.jsonl", "o.data.meta.jsonl", "o.data.validation.meta.jsonl")]
    assert res.stderr == (f"note: removed {', '.join(map(str, gone))}: an earlier export to {out} wrote them and "
                          "this one does not\n")
    after = _files(tmp_path)
    assert set(after) == {"o.data", "o.data.card.md", "o.data.card.json"} | set(bystanders)
    assert all(after[name] == data for name, data in bystanders.items())  # only the exact names are OUT's
    card = orjson.loads(after["o.data.card.json"])
    assert card["outputs"] == {"train": str(out)} and card["samples"] == len(after["o.data"].splitlines())
    assert {line["provenance"]["run"] for line in worlds.read_samples(out)} == {"sloppy"}
    # The same again removes nothing and says nothing.
    again = cli("export", str(sloppy), "--format", "llama3", "--only-success", "--out", str(out))
    assert again.returncode == 0 and again.stderr == "", again.stderr


@pytest.mark.parametrize("fmt", ["llama3", "openai", "dpo"])
def test_an_export_without_validation_leaves_no_old_split_that_leaks_into_train(runs, tmp_path, fmt):
    """README's `data/train.jsonl` exported with --validation, then again without: every sample is
    in train.jsonl now, so an old train.validation.jsonl would hold samples that are also trained on."""
    good, sloppy = runs
    out = tmp_path / "data" / "train.jsonl"
    both = [good, sloppy] if fmt == "dpo" else [good]
    first = export(both, out, fmt=fmt, validation=0.4)
    held_out = _ids(first.outputs["validation"])
    assert held_out and first.outputs["validation"] == out.with_name("train.validation.jsonl")
    second = export(both, out, fmt=fmt)
    assert held_out <= _ids(out)  # ... the held-out samples are train samples now
    expected = [out.with_name("train.validation.jsonl")]
    if fmt != "llama3":
        expected.append(out.with_name("train.validation.meta.jsonl"))
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        ["train.jsonl", "train.card.md", "train.card.json"] + (["train.meta.jsonl"] if fmt != "llama3" else []))
    assert list(second.removed) == expected


def test_a_val_out_file_keeps_no_metadata_of_an_earlier_format(runs, tmp_path):
    good, _ = runs
    out, val = tmp_path / "a.jsonl", tmp_path / "held" / "v.jsonl"
    export([good], out, fmt="openai", validation=0.4, val_out=str(val))
    assert (val.parent / "v.meta.jsonl").exists()
    # llama3 holds its metadata in its lines; the default split's name beside OUT is OUT's too.
    (tmp_path / "a.validation.jsonl").write_bytes(b"from an export before\n")
    res = export([good], out, fmt="llama3", validation=0.4, val_out=str(val))
    assert sorted(p.name for p in val.parent.iterdir()) == ["v.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.card.json", "a.card.md", "a.jsonl", "held"]
    assert set(res.removed) == {val.parent / "v.meta.jsonl", tmp_path / "a.meta.jsonl",
                                tmp_path / "a.validation.jsonl"}


def test_a_file_the_export_reads_is_never_removed(runs, tmp_path):
    """A --mix file that has a name of OUT's family is read, not left over: it stays."""
    good, _ = runs
    mix = tmp_path / "a.validation.jsonl"
    mix.write_bytes(b"".join(orjson.dumps({"messages": [{"role": "user", "content": f"q {i}"},
                                                        {"role": "assistant", "content": f"a {i}"}]}) + b"\n"
                             for i in range(20)))
    before = mix.read_bytes()
    res = export([good], tmp_path / "a.jsonl", mix=(f"{mix}:0.2",))
    assert mix.read_bytes() == before and res.removed == ()


def test_a_failed_commit_leaves_the_earlier_export_whole(tmp_path):
    """The old split and metadata are set aside with the renames: a rename that fails puts them
    back with the data they belong to, and leaves no hidden file."""
    out = tmp_path / "a.jsonl"
    old = {"a.jsonl": b"old data\n", "a.validation.jsonl": b"old split\n", "a.meta.jsonl": b"old meta\n",
           "a.validation.meta.jsonl": b"old split meta\n", "a.card.md": b"old card\n"}
    for name, data in old.items():
        (tmp_path / name).write_bytes(data)
    outputs = _Outputs({"train": out})
    outputs.write("train", b'{"new": 1}')
    (tmp_path / "a.card.json").mkdir()  # the card's rename, the last one, fails
    with pytest.raises(SimworldError, match=re.escape(f"cannot write {tmp_path / 'a.card.json'}: ")):
        outputs.commit({tmp_path / "a.card.md": b"new card\n", tmp_path / "a.card.json": b"{}\n"})
    assert _files(tmp_path) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*old, "a.card.json"])


def test_a_file_that_cannot_be_removed_fails_the_export_and_changes_nothing(tmp_path, monkeypatch):
    out = tmp_path / "a.jsonl"
    old = {"a.jsonl": b"old data\n", "a.validation.jsonl": b"old split\n", "a.meta.jsonl": b"old meta\n"}
    for name, data in old.items():
        (tmp_path / name).write_bytes(data)
    real = os.replace

    def replace(src, dst, *args, **kwargs):  # as a sticky directory does to another user's file
        if Path(src) == tmp_path / "a.meta.jsonl":
            raise PermissionError(errno.EPERM, "Operation not permitted", os.fspath(src))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    outputs = _Outputs({"train": out})
    outputs.write("train", b'{"new": 1}')
    with pytest.raises(SimworldError, match=re.escape(
            f"cannot remove {tmp_path / 'a.meta.jsonl'}, which an earlier export to {out} wrote and this one does "
            "not: Operation not permitted")):
        outputs.commit()
    assert _files(tmp_path) == old and sorted(p.name for p in tmp_path.iterdir()) == sorted(old)


def test_val_out_without_validation_is_refused(runs, tmp_path):
    good, _ = runs
    res = cli("export", str(good), "--out", str(tmp_path / "a.jsonl"), "--val-out", str(tmp_path / "v.jsonl"))
    assert res.returncode == 2 and res.stderr == ("error: --val-out applies with --validation FRACTION (without it "
                                                  "there is no validation split to write)\n"), res.stderr
    assert list(tmp_path.iterdir()) == []
