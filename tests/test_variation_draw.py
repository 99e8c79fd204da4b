"""Variation draws: each path from its own stream, so a `--set` that overrides or removes one axis
leaves every other axis's values as they were, episode by episode; runs begun with the old draw
(one stream over the sorted paths, manifest format simworld.run/1) resume with it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest

import simworld.episode
import simworld.runner
from simworld.episode import draw_variation_legacy, episode_specs
from simworld.runio import iter_records
from simworld.runner import resolve_scenario, run_batch
from simworld.types import strip_timings

ROOT = Path(__file__).resolve().parent.parent
NOISY = ROOT / "scenarios" / "retail" / "noisy_support.yaml"
USED_CAR = ROOT / "scenarios" / "negotiation" / "used_car.yaml"


def variations(path: Path, sets=(), n: int = 300, **kw) -> list[dict]:
    return [s.variation for s in episode_specs(resolve_scenario(path, sets), n, **kw)]


@pytest.mark.parametrize("path, sets, gone", [
    # replacing the agent drops its parameters' axis (error_rate sorts between the other two)
    (NOISY, ["roles.support.agent={type: oracle}"], {"roles.support.agent.error_rate"}),
    (NOISY, ["roles.support.agent.error_rate=0.0"], {"roles.support.agent.error_rate"}),
    (NOISY, ["roles.customer.agent.style=long"], {"roles.customer.agent.style"}),
    (NOISY, ["repeats=3", "roles.support.agent={type: oracle}"], {"roles.support.agent.error_rate"}),
    # the buyer changes; the seller, reservations and opener stay as drawn
    (USED_CAR, ["roles.buyer.agent.type=hardliner"], {"roles.buyer.agent"}),
    (USED_CAR, ["first_speaker=buyer"], {"first_speaker"}),
])
def test_overriding_or_removing_one_axis_leaves_every_other_axis_as_it_was(path, sets, gone):
    base = variations(path, [s for s in sets if s.startswith("repeats=")])
    changed = variations(path, sets)
    assert set(changed[0]) == set(base[0]) - gone  # the axis did go
    for i, (b, c) in enumerate(zip(base, changed)):
        assert c == {k: v for k, v in b.items() if k not in gone}, f"episode {i}"


def test_an_axis_added_to_the_scenario_leaves_the_others_as_they_were():
    base = variations(NOISY)
    more = variations(NOISY, ["variations.roles.customer.agent.typo_rate=[0.0, 0.05]"])
    assert {tuple(sorted(set(m) - set(b))) for m, b in zip(more, base)} == {("roles.customer.agent.typo_rate",)}
    assert [{k: m[k] for k in b} for m, b in zip(more, base)] == base


def chi_square(counts: Counter, cells: int, n: int) -> float:
    return sum((counts.get(k, 0) - n / cells) ** 2 / (n / cells) for k in range(cells))


def test_each_axis_is_uniform_and_the_axes_are_independent():
    sc = resolve_scenario(NOISY)
    n = 4000
    drawn = [s.variation for s in episode_specs(sc, n)]
    index = {path: {json.dumps(v): i for i, v in enumerate(values)} for path, values in sc.variations.items()}

    def idx(v, path):
        return index[path][json.dumps(v[path])]

    # 99.9th percentiles of chi-square: 9 dof 27.9, 2 dof 13.8, 8 dof 26.1
    task = Counter(idx(v, "task.type") for v in drawn)
    assert chi_square(task, 10, n) < 27.9
    style, rate = "roles.customer.agent.style", "roles.support.agent.error_rate"
    assert chi_square(Counter(idx(v, style) for v in drawn), 3, n) < 13.8
    joint = Counter(idx(v, style) * 3 + idx(v, rate) for v in drawn)
    assert chi_square(joint, 9, n) < 26.1


def test_two_axes_with_the_same_values_are_drawn_apart():
    sets = ["variations.roles.customer.agent.typo_rate=[0.0, 0.01, 0.02, 0.03]",
            "variations.roles.customer.agent.patience=[1, 2, 3, 4]"]
    drawn = variations(NOISY, sets, n=2000)
    same = sum(v["roles.customer.agent.typo_rate"] * 100 == v["roles.customer.agent.patience"] - 1 for v in drawn)
    assert 0.2 < same / len(drawn) < 0.3  # 1/4 apart; one stream per value list would give 1


def test_the_draw_does_not_depend_on_the_process_or_its_hash_seed():
    code = ("import json, sys; from simworld.runner import resolve_scenario; from simworld.episode import episode_specs;"
            f"print(json.dumps([s.variation for s in episode_specs(resolve_scenario({str(USED_CAR)!r}), 50)]))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}).stdout for seed in ("1", "2")}
    assert len(outs) == 1 and json.loads(outs.pop()) == variations(USED_CAR, n=50)


def test_the_legacy_draw_is_the_old_one_stream_walk():
    sc = resolve_scenario(NOISY)
    for spec in episode_specs(sc, 20, legacy_draw=True):
        rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 1]))
        expected = {p: sc.variations[p][int(rng.integers(len(sc.variations[p])))] for p in sorted(sc.variations)}
        assert spec.variation == expected == draw_variation_legacy(sc.variations, spec.seed)
    assert variations(NOISY, n=20, legacy_draw=True) != variations(NOISY, n=20)


# -- runs begun with the old draw --------------------------------------------------------------

N, FIRST = 24, 9


def legacy_run(out: Path, episodes: int, monkeypatch) -> None:
    """What `simworld run` wrote before the per-path draw: manifest format simworld.run/1, one stream."""
    with monkeypatch.context() as m:
        m.setattr(simworld.episode, "draw_variation", draw_variation_legacy)
        m.setattr(simworld.runner, "MANIFEST_FORMAT", "simworld.run/1")
        result = run_batch(resolve_scenario(USED_CAR), out, episodes=episodes, source=str(USED_CAR))
    assert result.status == "complete"


def stripped(run_dir: Path) -> list[bytes]:
    return sorted(orjson.dumps(strip_timings(r), option=orjson.OPT_SORT_KEYS) for r in iter_records(run_dir))


def simworld_run(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "simworld", "run", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def legacy_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("legacy") / "whole"
    with pytest.MonkeyPatch.context() as mp:
        legacy_run(out, N, mp)
    return out


def manifest(run_dir: Path) -> dict:
    return orjson.loads((run_dir / "manifest.json").read_bytes())


@pytest.mark.parametrize("damage", ["none", "manifest unreadable", "manifest missing"])
def test_a_run_begun_with_the_old_draw_resumes_with_it(legacy_reference, tmp_path, monkeypatch, damage):
    drawn = [r["variation"] for r in sorted(iter_records(legacy_reference), key=lambda r: r["episode_index"])]
    assert drawn == variations(USED_CAR, n=N, legacy_draw=True)
    assert sum(a != b for a, b in zip(drawn, variations(USED_CAR, n=N))) > N // 2  # the draws do differ
    out = tmp_path / "run"
    legacy_run(out, FIRST, monkeypatch)
    assert manifest(out)["format"] == "simworld.run/1"
    if damage == "manifest unreadable":
        (out / "manifest.json").write_text("{not json")
    elif damage == "manifest missing":
        (out / "manifest.json").unlink()
    simworld_run(USED_CAR, "-n", N, "-o", out, "-q")
    assert stripped(out) == stripped(legacy_reference)
    assert manifest(out)["format"] == "simworld.run/1"  # and a later resume draws alike again
    simworld_run(USED_CAR, "-n", N + 4, "-o", out, "-q")
    assert [r["variation"] for r in sorted(iter_records(out), key=lambda r: r["episode_index"])] == \
        variations(USED_CAR, n=N + 4, legacy_draw=True)


def test_a_new_run_draws_per_path_and_says_so(tmp_path):
    out = tmp_path / "run"
    simworld_run(USED_CAR, "-n", 6, "-o", out, "-q")
    assert manifest(out)["format"] == simworld.runner.MANIFEST_FORMAT != "simworld.run/1"
    assert [r["variation"] for r in sorted(iter_records(out), key=lambda r: r["episode_index"])] == \
        variations(USED_CAR, n=6)
