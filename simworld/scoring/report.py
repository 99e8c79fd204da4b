"""Scoring a whole run: per-episode score lines under ``RUN/scores/``, a table, and pass^k.

``simworld score RUN`` streams the run's latest records, scores each with the scenario's scorers
(or those asked for), and writes, atomically (temp file + rename; the shards are never touched):

* ``RUN/scores/scores.jsonl`` (``scores-<names>.jsonl`` for a ``--scorer`` subset): one line per
  episode, in the order :func:`~simworld.runio.iter_records` yields them;
* ``RUN/scores/summary.json``: the table by task type and agent, and pass^k, of the lines of
  ``scores.jsonl`` (a ``--scorer`` subset writes no summary and leaves this one as it was).

pass^k (tau-bench): for a task instance tried n times by one agent, c of them successful, the
chance that k tries drawn without replacement all succeed, C(c, k) / C(n, k), averaged over the
(instance, agent) pairs with n >= k. As in tau-bench it counts *task success*
(``outcome.success``: the final state and the required outputs right), not ``passed`` (success and
every scorer passed; that is ``pass_rate``). The tries of one task are the episodes of one repeat
group (same ``task_seed``): a scenario with ``repeats: K`` runs every task K times. Two episodes
that drew alike tasks by chance are not tries of one task (their ``instance_id`` names the order
or user a task is about, not all of what it asks), so without repeats there is only pass^1.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from simworld import registry
from simworld.errors import DamagedRecord, SimworldError
from simworld.replay import load_run_scenario, parse_record, record_problem
from simworld.runio import (discard, install_together, iter_records, remove_stale_temporaries, temp_name,
                            write_synced)
from simworld.scenario import Scenario
from simworld.scoring.base import ScoringContext, all_passed, check_scorers, role_kinds, score_trajectory, summary_value
from simworld.summary import pass_k_tasks, pass_k_values
from simworld.types import Trajectory

SCORES_DIR = "scores"
SCORES_FILE = "scores.jsonl"
SUMMARY_FILE = "summary.json"
PASS_K_OF = "task success (outcome.success) over the tries of each task (repeat group) by each agent"


def scorer_names(scenario: Scenario | None, requested: Iterable[str] = ()) -> list[str]:
    """The scorers to run: those requested, else the scenario's `scoring`, else every registered one.
    An unknown name, or a scorer whose parameters cannot be injected, is an error before any work."""
    registry.load_builtins()
    names = list(dict.fromkeys(requested)) or (list(scenario.scoring) if scenario is not None else [])
    if not names:
        names = sorted(registry.SCORERS)
    check_scorers(names)
    return names


def agent_label(traj: Trajectory, kinds: dict[str, str]) -> str:
    """The assistant side's agents, e.g. ``oracle`` or ``buyer=llm(model=x),seller=tough``."""
    ids = traj.provenance.agent_ids or {r: str(a.get("type", "?")) for r, a in traj.agents.items()}
    side = [r for r in ids if kinds.get(r) == "assistant"] or list(ids)
    if len(side) == 1:
        return ids[side[0]]
    return ",".join(f"{r}={ids[r]}" for r in side)


def score_line(traj: Trajectory, names: list[str], ctx: ScoringContext) -> dict[str, Any]:
    """The stored score record of one trajectory."""
    scores = score_trajectory(traj, names, ctx)
    kinds = role_kinds(traj, ctx.scenario)
    return {
        "episode_id": traj.episode_id,
        "scenario": traj.scenario,
        "task_type": traj.task.type,
        "instance_id": traj.task.instance_id,
        "seed": traj.seed,
        **({"task_seed": traj.task_seed} if traj.task_seed is not None else {}),
        "agent": agent_label(traj, kinds),
        "success": traj.outcome.success,
        "passed": all_passed(scores, traj.outcome.success),
        "value": summary_value(scores),
        "scores": {n: s.model_dump() for n, s in scores.items()},
    }


@dataclass
class _Row:
    episodes: int = 0
    success: int = 0
    passed: int = 0
    value: float = 0.0
    per_scorer: dict[str, list[float]] = field(default_factory=dict)

    def add(self, line: dict[str, Any]) -> None:
        self.episodes += 1
        self.success += bool(line["success"])
        self.passed += bool(line["passed"])
        self.value += line["value"]
        for name, s in line["scores"].items():
            acc = self.per_scorer.setdefault(name, [0.0, 0])
            acc[0] += s["value"]
            acc[1] += 1

    def as_dict(self) -> dict[str, Any]:
        n = max(self.episodes, 1)
        return {"episodes": self.episodes, "success_rate": self.success / n, "pass_rate": self.passed / n,
                "mean_value": self.value / n,
                "scorers": {k: v[0] / v[1] for k, v in sorted(self.per_scorer.items()) if v[1]}}


class ScoreSummary:
    """Streaming aggregate of score lines: rows by (task type, agent), totals, pass^k."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.rows: dict[tuple[str, str], _Row] = {}
        self.total = _Row()
        self.tries: dict[tuple[str, str, str], list[int]] = {}  # (scenario, agent, task) -> [tries, successes]
        self.bad_records: list[str] = []

    def add(self, line: dict[str, Any]) -> None:
        self.rows.setdefault((line["task_type"], line["agent"]), _Row()).add(line)
        self.total.add(line)
        task_seed = line.get("task_seed")
        key = (line["scenario"], line["agent"], f"group {task_seed}" if task_seed is not None else line["episode_id"])
        t = self.tries.setdefault(key, [0, 0])
        t[0] += 1
        t[1] += bool(line["success"])

    def pass_k(self) -> dict[str, float]:
        """pass^1..pass^8 over task success (as many k as the most-tried task allows)."""
        return pass_k_values((n, c) for n, c in self.tries.values())

    def pass_k_tasks(self) -> dict[str, int]:
        """How many tasks each pass^k is over: those tried at least k times."""
        return pass_k_tasks((n, c) for n, c in self.tries.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "scorers": self.names,
            "rows": [{"task_type": t, "agent": a, **row.as_dict()} for (t, a), row in sorted(self.rows.items())],
            "total": self.total.as_dict(),
            "pass_k": self.pass_k(),
            "pass_k_tasks": self.pass_k_tasks(),
            "pass_k_of": PASS_K_OF,
            "tasks": len(self.tries),
            "bad_records": self.bad_records[:20],
        }


def iter_score_lines(run_dir: str | Path, names: list[str], scenario: Scenario,
                     summary: ScoreSummary | None = None) -> Iterator[dict[str, Any]]:
    ctx = ScoringContext(scenario)
    unreadable: list[tuple[str, str]] = []
    for record in iter_records(run_dir, problems=unreadable):
        traj = parse_record(record)
        if isinstance(traj, str):
            if summary is not None:
                summary.bad_records.append(f"{record.get('episode_id', '?')}: {traj}")
            continue
        try:
            line = score_line(traj, names, ctx)
        except DamagedRecord as exc:
            if summary is not None:
                summary.bad_records.append(f"{traj.episode_id}: {record_problem(record, exc)}")
            continue
        if summary is not None:
            summary.add(line)
        yield line
    if summary is not None:  # lines that hold no record are skipped too, and said so
        summary.bad_records.extend(where for _, where in unreadable)


def scores_path(run_dir: str | Path, names: list[str], scenario: Scenario | None) -> Path:
    default = scorer_names(scenario)
    fname = SCORES_FILE if names == default else "scores-" + "+".join(names) + ".jsonl"
    return Path(run_dir) / SCORES_DIR / fname


def score_run(run_dir: str | Path, requested: Iterable[str] = ()) -> tuple[ScoreSummary, Path]:
    """Score every episode of a run; write the score lines and summary under ``RUN/scores/``."""
    scenario = load_run_scenario(run_dir)
    names = scorer_names(scenario, requested)
    summary = ScoreSummary(names)
    out = scores_path(run_dir, names, scenario)
    if out.parent.exists() and not out.parent.is_dir():
        raise SimworldError(f"cannot write scores under {out.parent}: it is not a directory")
    # What a killed `simworld score` left (SIGKILL, SIGTERM: no clean-up ran) goes before we add ours.
    remove_stale_temporaries([out, out.parent / SUMMARY_FILE])
    moves = [(temp_name(out), out)]
    if out.name == SCORES_FILE:  # the summary always describes the score lines beside it
        moves.append((temp_name(out.parent / SUMMARY_FILE), out.parent / SUMMARY_FILE))
    try:
        out.parent.mkdir(exist_ok=True)
        with open(moves[0][0], "wb") as fh:
            for line in iter_score_lines(run_dir, names, scenario, summary):
                fh.write(orjson.dumps(line) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        if len(moves) == 2:
            write_synced(moves[1][0], orjson.dumps(summary.as_dict(), option=orjson.OPT_INDENT_2) + b"\n")
        install_together(moves)  # both or neither replace their old versions
    except BaseException as exc:  # Ctrl-C included: never leave a temporary file behind
        discard(tmp for tmp, _ in moves)
        if isinstance(exc, OSError):
            raise SimworldError(f"cannot write scores under {out.parent}: {exc.strerror or exc}") from None
        raise
    return summary, out
