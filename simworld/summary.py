"""Run summaries: per-episode statistics folded into the one-screen table `simworld run` prints.

Statistics come from trajectory records (the dicts stored in a run's shards), so a summary of a
resumed run covers the episodes of earlier sessions too. When an episode's `outcome.metrics` has a
string ``group`` (a negotiation's strategy pairing, say), the summary adds a table of the means of
the numeric metrics per group.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Iterable
from typing import Any, NamedTuple

from simworld.errors import counted, rounded


class EpisodeStats(NamedTuple):
    """What the summary needs from one trajectory (small: sent between processes)."""

    index: int
    success: bool
    termination: str
    tool_calls: int
    turns: int
    invalid_moves: int
    tool_errors: int
    error: str | None
    group: str | None
    metrics: tuple[tuple[str, float], ...]
    task_seed: int | None = None
    """The repeat group (a scenario with ``repeats`` > 1): episodes sharing it retry one task."""


def episode_stats(record: dict[str, Any]) -> EpisodeStats:
    """Statistics of one trajectory record (a `Trajectory.model_dump(mode="json")` dict)."""
    events = ((e.get("role"), e.get("speaker"), len(e.get("tool_calls") or ())) for e in record.get("events") or ())
    task_seed = record.get("task_seed")
    return _stats(int(record.get("episode_index", 0)), record.get("outcome") or {}, events,
                  task_seed if isinstance(task_seed, int) else None)


def trajectory_stats(traj: Any) -> EpisodeStats:
    """Statistics of one :class:`~simworld.types.Trajectory` (no dict conversion of the events)."""
    o = traj.outcome
    outcome = {"success": o.success, "termination": o.termination, "invalid_moves": o.invalid_moves,
               "tool_errors": o.tool_errors, "error": o.error, "metrics": o.metrics}
    return _stats(traj.episode_index, outcome, ((e.role, e.speaker, len(e.tool_calls)) for e in traj.events),
                  traj.task_seed)


def _stats(index: int, outcome: dict[str, Any], events: Any, task_seed: int | None = None) -> EpisodeStats:
    tool_calls = turns = 0
    for role, speaker, calls in events:
        if speaker != "world" and role in ("user", "assistant"):
            turns += 1
            tool_calls += calls
    metrics = outcome.get("metrics") or {}
    group = metrics.get("group")
    numeric = tuple((k, float(v)) for k, v in metrics.items()
                    if isinstance(v, numbers.Real) and not math.isnan(v))
    return EpisodeStats(
        index=index,
        success=bool(outcome.get("success")),
        termination=str(outcome.get("termination") or ""),
        tool_calls=tool_calls,
        turns=turns,
        invalid_moves=int(outcome.get("invalid_moves") or 0),
        tool_errors=int(outcome.get("tool_errors") or 0),
        error=outcome.get("error"),
        group=group if isinstance(group, str) else None,
        metrics=numeric,
        task_seed=task_seed,
    )


def pass_hat_k(counts: Iterable[tuple[int, int]], k: int) -> float | None:
    """Mean over tasks (n tries, c successes) with n >= k of C(c, k) / C(n, k) (tau-bench's pass^k)."""
    vals = [math.comb(c, k) / math.comb(n, k) for n, c in counts if n >= k]
    return sum(vals) / len(vals) if vals else None


def pass_k_values(tries: Iterable[tuple[int, int]], max_k: int = 8) -> dict[str, float]:
    """pass^1..pass^max_k over (tries, successes) per task, as many k as the most-tried task allows."""
    counts = list(tries)
    top = max((n for n, _ in counts), default=0)
    out = {}
    for k in range(1, min(top, max_k) + 1):
        v = pass_hat_k(counts, k)
        if v is not None:
            out[f"pass^{k}"] = round(v, 6)
    return out


def pass_k_tasks(tries: Iterable[tuple[int, int]], max_k: int = 8) -> dict[str, int]:
    """How many tasks each pass^k of :func:`pass_k_values` averages over: those tried at least k times."""
    counts = [n for n, _ in tries]
    return {f"pass^{k}": sum(n >= k for n in counts) for k in range(1, min(max(counts, default=0), max_k) + 1)}


def pass_k_text(values: dict[str, float], tasks: dict[str, int], total: int) -> tuple[str, str]:
    """(values, scope) as the run and score summaries print pass^k: ``pass^1 0.651, pass^2 0.492``
    and ``21 tasks``. When some tasks have fewer tries than others (``--episodes`` not a multiple of
    ``repeats``, records skipped), each pass^k over fewer tasks says over how many, and the scope says
    that pass^k counts only the tasks tried at least k times."""
    text = ", ".join(f"{k} {rounded(v, 3)}"
                     + (f" over {counted(tasks[k], 'task')}" if tasks.get(k, total) != total else "")
                     for k, v in values.items())
    uneven = any(tasks.get(k, total) != total for k in values)
    return text, counted(total, "task") + ("; pass^k is over the tasks tried at least k times" if uneven else "")


def uneven_repeats_note(episodes: int, repeats: int) -> str | None:
    """The note `run` prints when `episodes` is not a multiple of `repeats`, or None."""
    short = episodes % repeats if repeats > 1 else 0
    if not short:
        return None
    tried = "once" if short == 1 else f"{short} times"
    return (f"{counted(episodes, 'episode')} {'is' if episodes == 1 else 'are'} not a multiple of repeats={repeats}: "
            f"the last task is tried {tried}, not {repeats} times, so pass^k for k > {short} leaves it out")


class _Means:
    __slots__ = ("n", "successes", "sums", "counts")

    def __init__(self) -> None:
        self.n = 0
        self.successes = 0
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, stats: EpisodeStats) -> None:
        self.n += 1
        self.successes += stats.success
        for name, value in stats.metrics:
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def mean(self, name: str) -> float | None:
        count = self.counts.get(name)
        return self.sums[name] / count if count else None


class RunSummary:
    """Totals over episodes; `add` one EpisodeStats at a time, then `render` or `to_dict`."""

    MAX_GROUP_ROWS = 20

    def __init__(self) -> None:
        self.episodes = 0
        self.successes = 0
        self.tool_calls = 0
        self.turns = 0
        self.invalid_moves = 0
        self.tool_errors = 0
        self.terminations: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.groups: dict[str, _Means] = {}
        self.repeats: dict[int, list[int]] = {}  # task_seed -> [tries, successes]

    def add(self, stats: EpisodeStats) -> None:
        self.episodes += 1
        self.successes += stats.success
        self.tool_calls += stats.tool_calls
        self.turns += stats.turns
        self.invalid_moves += stats.invalid_moves
        self.tool_errors += stats.tool_errors
        self.terminations[stats.termination or "?"] += 1
        if stats.termination == "error":
            self.errors[(stats.error or "unknown")[:160]] += 1
        if stats.group is not None:
            self.groups.setdefault(stats.group, _Means()).add(stats)
        if stats.task_seed is not None:
            t = self.repeats.setdefault(stats.task_seed, [0, 0])
            t[0] += 1
            t[1] += stats.success

    def pass_k(self) -> dict[str, float]:
        """pass^k over the repeats of each task (empty without ``repeats``)."""
        return pass_k_values((n, c) for n, c in self.repeats.values())

    def pass_k_tasks(self) -> dict[str, int]:
        """How many tasks each pass^k is over (fewer for a k some tasks were not tried as often)."""
        return pass_k_tasks((n, c) for n, c in self.repeats.values())

    @property
    def failed(self) -> int:
        """Episodes recorded as failed by their agent (retried by a resumed run)."""
        return self.terminations.get("error", 0)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    def metric_names(self) -> list[str]:
        """Numeric metric names of the groups, in the order episodes first reported them."""
        names: dict[str, None] = {}
        for means in self.groups.values():
            names.update(dict.fromkeys(means.counts))
        return list(names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able totals (stored in the run's manifest)."""
        return {
            "episodes": self.episodes,
            "successes": self.successes,
            "success_rate": round(self.success_rate, 6),
            "tool_calls": self.tool_calls,
            "turns": self.turns,
            "invalid_moves": self.invalid_moves,
            "tool_errors": self.tool_errors,
            "terminations": dict(sorted(self.terminations.items())),
            "failed": self.failed,
            **({"pass_k": self.pass_k(), "pass_k_tasks": self.pass_k_tasks()} if self.repeats else {}),
            "groups": {
                g: {"episodes": m.n, "success_rate": round(m.successes / m.n, 6) if m.n else 0.0,
                    **{k: round(v, 6) for k in sorted(m.counts) if (v := m.mean(k)) is not None}}
                for g, m in sorted(self.groups.items())
            },
        }

    def render(self, console: Any, title: str = "") -> None:
        """Print the summary on a rich Console (one screen)."""
        from rich.table import Table

        n = self.episodes
        per = (lambda x: f"{x / n:.2f} / episode") if n else (lambda x: "-")
        table = Table(title=title or None, show_header=False, box=None, pad_edge=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        table.add_row("episodes", f"{n:,}")
        table.add_row("success", f"{self.successes:,} / {n:,} ({rounded(self.success_rate, 1, 100)}%)")
        table.add_row("tool calls", f"{self.tool_calls:,} ({per(self.tool_calls)})")
        table.add_row("turns", f"{self.turns:,} ({per(self.turns)})")
        table.add_row("invalid moves", f"{self.invalid_moves:,} ({per(self.invalid_moves)})")
        table.add_row("tool errors", f"{self.tool_errors:,} ({per(self.tool_errors)})")
        table.add_row("terminations", ", ".join(f"{k} {v:,}" for k, v in self.terminations.most_common()) or "-")
        if self.errors:
            shown = "; ".join(f"{reason} ({count:,})" for reason, count in self.errors.most_common(3))
            more = len(self.errors) - 3
            table.add_row("agent failures", shown + (f"; and {counted(more, 'other reason')}" if more > 0 else ""))
        if self.repeats:
            values, scope = pass_k_text(self.pass_k(), self.pass_k_tasks(), len(self.repeats))
            table.add_row("pass^k", f"{values} (all k tries of a task succeed; {scope})")
        console.print(table)
        if self.groups:
            title, groups = self._group_table(console.width)
            console.print(title, highlight=False)
            console.print(groups)

    def _group_table(self, width: int) -> Any:
        """Means per group, as many metric columns as fit in `width` (all of them are in to_dict)."""
        from rich import box
        from rich.table import Table

        groups = sorted(self.groups.items(), key=lambda kv: (-kv[1].n, kv[0]))
        shown = groups[: self.MAX_GROUP_ROWS]
        group_w = min(40, max(len("group"), *(len(g) for g, _ in shown)))
        used = group_w + len(" episodes ") + len(" success ") + 4
        names = []
        for name in self.metric_names():
            col = max(5, *(len(word) for word in name.split("_"))) + 2  # header words wrap; values ≤ 5 chars
            if used + col > width:
                break
            names.append(name)
            used += col
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        table.add_column("group", no_wrap=True, max_width=group_w, overflow="ellipsis")
        table.add_column("episodes", justify="right")
        table.add_column("success", justify="right")
        for name in names:
            table.add_column(name.replace("_", " "), justify="right")
        for group, means in shown:
            row = [group, f"{means.n:,}", f"{rounded(means.successes / means.n, 0, 100)}%"]
            for name in names:
                value = means.mean(name)
                row.append("-" if value is None else rounded(value, 3) if f"{value:.3g}" == "1" and 0 < value < 1
                           else f"{value:.3g}")
            table.add_row(*row)
        notes = []
        if len(groups) > len(shown):
            notes.append(counted(len(groups) - len(shown), "more group"))
        hidden = len(self.metric_names()) - len(names)
        if hidden:
            notes.append(counted(hidden, "more metric"))
        title = "per group (means)" + (f"; {' and '.join(notes)} in manifest.json" if notes else "")
        return title, table
