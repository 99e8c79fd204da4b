"""A plugin scorer's bug stops `score`, `export` and `show` with one line naming the scorer and the
episode (exit 1), and leaves what they wrote before as it was; `validate` refuses a scorer whose
parameters cannot be injected.

The scorers are a real plugin module written to a temporary folder and loaded the way users load
one (``SIMWORLD_PLUGINS`` and ``PYTHONPATH``), over a real run of the ledger test world, through
the ``simworld`` command. ``SCORER_BUG`` picks the mistake the scorer makes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

import ledger_world

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = '''
import math
import os

from simworld.registry import register_scorer
from simworld.scoring.base import Score


@register_scorer("fragile")
def fragile(traj, outcome):
    """1 for a successful episode, unless SCORER_BUG makes it fail as a plugin scorer can."""
    bug = os.environ.get("SCORER_BUG", "")
    if bug == "raise" and traj.episode_index == 1:
        raise ZeroDivisionError("division by zero in fragile")
    if bug == "value_error" and traj.episode_index % 2:
        int("x")
    if bug == "out_of_range":
        return Score(value=1.5, passed=True)
    if bug == "nan_constructed":  # (model_construct skips pydantic's checks)
        return Score.model_construct(value=math.nan, passed=True, details={})
    if bug == "float":
        return 0.5
    if bug == "set_details":
        return Score(value=1.0, passed=True, details={"seen": {1, 2}})
    return Score(value=float(outcome.success), passed=outcome.success)


@register_scorer("bad_inject")
def bad_inject(trajectory):
    return Score(value=1.0, passed=True)
'''
EPISODE = "ledger_deposit-s0-00000"
HINT = " (set SIMWORLD_DEBUG=1 for the traceback)"


def _simworld(where: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("SIMWORLD_DEBUG", "SCORER_BUG")}
    full.update(SIMWORLD_PLUGINS="ledger_world,qa_scorers",
                PYTHONPATH=os.pathsep.join([str(where), str(ROOT / "tests")]), **env)
    return subprocess.run([sys.executable, "-m", "simworld", *args], cwd=where, env=full, capture_output=True,
                          text=True, timeout=120)


def _scenario(path: Path, scoring: list[str]) -> Path:
    path.write_text(yaml.safe_dump(ledger_world.scenario_data(scoring=scoring), sort_keys=False))
    return path


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A run of 4 episodes whose scenario scores with state_match and the plugin's fragile, and
    what the commands made of it while the scorers worked: ``run/scores/`` and ``ex/data.jsonl``."""
    where = tmp_path_factory.mktemp("plugin_scorers")
    (where / "qa_scorers.py").write_text(PLUGIN)
    out = _simworld(where, "run", str(_scenario(where / "ledger.yaml", ["state_match", "fragile"])),
                    "--episodes", "4", "--out", "run", "-q")
    assert out.returncode == 0, out.stderr
    (where / "ex").mkdir()
    out = _simworld(where, "export", "run", "--format", "llama3", "--out", "ex/data.jsonl")
    assert out.returncode == 0 and "skipped" not in out.stderr, out.stderr
    assert len((where / "ex" / "data.jsonl").read_bytes().splitlines()) == 4
    out = _simworld(where, "score", "run")
    assert out.returncode == 0, out.stderr
    assert set(_digests(where / "run" / "scores")) == {"scores.jsonl", "summary.json"}
    return where


@pytest.fixture
def work(made, tmp_path) -> Path:
    """A copy of `made` for a test to change as it likes."""
    return Path(shutil.copytree(made, tmp_path / "work"))


SCORE_BUGS = {
    "raise": f"error: scorer 'fragile' failed on episode {EPISODE}1: ZeroDivisionError: division by zero in fragile"
             f"{HINT}",
    "value_error": f"error: scorer 'fragile' failed on episode {EPISODE}1: ValueError: invalid literal for int() "
                   f"with base 10: 'x'{HINT}",
    "out_of_range": f"error: scorer 'fragile' failed on episode {EPISODE}0: ValidationError: value: Input should be "
                    f"less than or equal to 1{HINT}",
    "nan_constructed": f"error: scorer 'fragile' returned an invalid Score on episode {EPISODE}0: value: Input "
                       "should be less than or equal to 1",
    "float": f"error: scorer 'fragile' returned float on episode {EPISODE}0, not a Score (or None where it does not "
             "apply)",
    "set_details": f"error: scorer 'fragile' returned an invalid Score on episode {EPISODE}0: Type is not JSON "
                   "serializable: set",
}


@pytest.mark.parametrize("bug", sorted(SCORE_BUGS))
def test_score_stops_on_a_scorer_bug_and_keeps_the_scores_it_wrote(work, bug):
    before = _digests(work / "run" / "scores")
    out = _simworld(work, "score", "run", SCORER_BUG=bug)
    assert (out.returncode, out.stdout) == (1, ""), out.stdout + out.stderr
    assert out.stderr == SCORE_BUGS[bug] + "\n"
    assert _digests(work / "run" / "scores") == before  # nothing half-written, no temporary left


def test_the_traceback_is_there_for_the_asking(work):
    out = _simworld(work, "score", "run", SCORER_BUG="raise", SIMWORLD_DEBUG="1")
    assert out.returncode == 1
    assert out.stderr.startswith("Traceback (most recent call last):\n"), out.stderr
    assert 'raise ZeroDivisionError("division by zero in fragile")' in out.stderr
    assert out.stderr.endswith(f"\nerror: scorer 'fragile' failed on episode {EPISODE}1: ZeroDivisionError: "
                               "division by zero in fragile\n")


@pytest.mark.parametrize("bug,args,line", [
    ("raise", (), SCORE_BUGS["raise"]),
    ("value_error", ("--scorer", "fragile"), SCORE_BUGS["value_error"]),  # (was: half the samples, exit 0)
    ("", ("--scorer", "bad_inject"), "error: scorer 'bad_inject' asks for trajectory, which simworld cannot inject "
                                     "(a scorer names each argument it wants, from: traj, task, outcome, events, "
                                     "kinds, world, ctx)"),
], ids=["raise", "value_error", "bad_inject"])
def test_export_stops_on_a_scorer_bug_and_keeps_the_export_it_made(work, bug, args, line):
    """Scores the export computes itself (no score file): a bug is the scorer's, not a damaged
    record to leave out, and the dataset made before stays whole."""
    shutil.rmtree(work / "run" / "scores")
    before = _digests(work / "ex")
    out = _simworld(work, "export", "run", "--format", "llama3", "--out", "ex/data.jsonl", *args, SCORER_BUG=bug)
    assert (out.returncode, out.stdout) == (1, ""), out.stdout + out.stderr
    assert out.stderr == line + "\n"
    assert _digests(work / "ex") == before


def test_show_stops_on_a_scorer_bug(work):
    shutil.rmtree(work / "run" / "scores")
    out = _simworld(work, "show", "run", SCORER_BUG="float")
    assert (out.returncode, out.stderr) == (1, SCORE_BUGS["float"] + "\n"), out.stdout + out.stderr


def test_validate_refuses_a_scorer_whose_parameters_cannot_be_injected(work):
    scenario = _scenario(work / "ledger.yaml", ["state_match", "bad_inject"])
    line = next(i for i, text in enumerate(scenario.read_text().splitlines(), 1) if text.startswith("- bad_inject"))
    out = _simworld(work, "validate", "ledger.yaml")
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout.splitlines()[0] == (
        f"ledger.yaml: scoring[1] (line {line}): scorer 'bad_inject' asks for trajectory, which simworld cannot "
        "inject (a scorer names each argument it wants, from: traj, task, outcome, events, kinds, world, ctx)")


def test_a_record_whose_world_cannot_be_built_is_still_a_skipped_damaged_record(work):
    """The one failure that is the data's: the record names a world no run has. It is skipped and
    named, the other episodes are scored, and the scorers are not blamed."""
    shard = next((work / "run").glob("trajectories-*.jsonl"))
    record = orjson.loads(shard.read_bytes().splitlines()[0])
    record["world"]["type"] = "atlantis"
    with open(shard, "ab") as fh:
        fh.write(orjson.dumps(record) + b"\n")
    out = _simworld(work, "score", "run", "--scorer", "tool_validity", "--scorer", "fragile")  # (needs the world)
    assert out.returncode == 0, out.stderr
    assert f"skipped record {record['episode_id']}: not a trajectory of this run: its world cannot be built: " \
           "unknown world 'atlantis'" in " ".join(out.stdout.split())  # (the line may wrap)
    assert len((work / "run" / "scores" / "scores-tool_validity+fragile.jsonl").read_bytes().splitlines()) == 3
