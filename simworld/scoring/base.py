"""Scores, the scoring context, and running registered scorers with arguments injected by name.

A scorer is a plain function registered with ``@register_scorer(name)``. It declares the inputs
it wants by parameter name (like verifiers' ``Rubric`` reward functions) and returns a
:class:`Score`, or None when it does not apply to the trajectory (a negotiation metric on a
retail episode)::

    @register_scorer("state_match")
    def state_match(traj: Trajectory, outcome: Outcome) -> Score: ...

Injectable names:

* ``traj`` (:class:`~simworld.types.Trajectory`), ``task`` (its TaskRecord), ``outcome``,
  ``events`` (the global event log);
* ``kinds``: ``{role: "user" | "assistant"}``;
* ``world``: the trajectory's World (loaded from its type, parameters and seed: per-world tools,
  such as a negotiation's issue-specific ``make_offer``, are the ones the episode had);
* ``ctx``: the :class:`ScoringContext` (scenario, replayed states).

A scorer that raises, returns anything but a valid :class:`Score` or None, or names a parameter
that is not injectable is a bug in the scorer, not in the data: :func:`score_trajectory` raises
:class:`ScorerFailure`, one line naming the scorer and the episode, and ``simworld score``,
``export`` and ``show`` stop on it (exit 1, files already written left as they were). A tool of the
world that crashes while a scorer replays the episode (``ctx.replayed()``) is the world's bug:
:class:`~simworld.errors.EpisodeCrash` naming the episode, the tool and the call, and the commands
stop on it alike. Only a record whose world cannot be built (:func:`world_of`) is a damaged record,
skipped and reported as such.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from simworld import registry
from simworld.errors import DamagedRecord, SimworldError, UnknownName, bug_text, one_line
from simworld.scenario import Scenario
from simworld.types import Trajectory
from simworld.world import ToolCrash, episode_crash


class Score(BaseModel):
    """One scorer's verdict: `value` in [0, 1], `passed`, and whatever explains it in `details`."""

    model_config = ConfigDict(extra="forbid")
    value: float = Field(ge=0.0, le=1.0)
    passed: bool
    details: dict[str, Any] = Field(default_factory=dict)

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float) -> float:
        return round(float(v), 6)


def role_kinds(traj: Trajectory, scenario: Scenario | None = None) -> dict[str, str]:
    """Kind of every role: from the scenario when given, else from how the role spoke in the log."""
    if scenario is not None:
        kinds = {role: spec.kind for role, spec in scenario.roles.items()}
        if set(traj.agents) <= set(kinds):
            return kinds
    kinds = {}
    for ev in traj.events:
        if ev.role in ("user", "assistant") and ev.speaker in traj.agents:
            kinds.setdefault(ev.speaker, ev.role)
    for role in traj.agents:
        # A role that never spoke: assume the tool-using side when it has tools.
        kinds.setdefault(role, "assistant" if traj.tools.get(role) else "user")
    return kinds


def world_of(world: dict[str, Any]) -> Any:
    """The World instance a trajectory's ``world`` field names (generated once per process).

    A world no run can have (unknown type, parameters its model refuses, a seed that is no number
    of 0 or more, or one the world says it cannot be built with) is a
    :class:`~simworld.errors.DamagedRecord`; any other exception of the world's build is its bug."""
    try:
        cls = registry.get_world(str(world.get("type", "")))
        params = cls.Params.model_validate(world.get("params") or {})
        seed = int(world.get("seed") or 0)
        if seed < 0:
            raise ValueError(f"seed {seed} is negative")
    except (UnknownName, ValueError, TypeError) as exc:  # (pydantic's ValidationError is a ValueError)
        raise DamagedRecord(f"its world cannot be built: {one_line(exc)}") from None
    try:
        return cls.load(params, seed)
    except SimworldError as exc:  # parameters the world says it cannot be built with
        raise DamagedRecord(f"its world cannot be built: {one_line(exc)}") from None


class ScoringContext:
    """What scorers share across trajectories: the scenario (if known) and replayed states."""

    def __init__(self, scenario: Scenario | None = None) -> None:
        self.scenario = scenario
        self._replayed: tuple[str, Any] | None = None

    def world(self, traj: Trajectory) -> Any:
        return world_of(traj.world)

    def replayed(self, traj: Trajectory) -> Any:
        """The episode re-executed from the record (see :mod:`simworld.replay`), cached per trajectory."""
        if self._replayed is not None and self._replayed[0] == traj.episode_id:
            return self._replayed[1]
        from simworld.replay import replay_trajectory

        if self.scenario is None:
            raise SimworldError(f"{traj.episode_id}: scoring this needs the run's scenario.yaml")
        result = replay_trajectory(traj, self.scenario)
        self._replayed = (traj.episode_id, result)
        return result


class ScorerFailure(SimworldError):
    """A scorer raised, returned something that is not a valid :class:`Score` or None, or names a
    parameter that cannot be injected: a bug in the scorer (a plugin's, usually), not in the data.
    One line naming the scorer (and the episode); exit status 1, as for a crashing agent or tool."""

    exit_code = 1


_PARAMS: dict[Callable[..., Any], tuple[str, ...]] = {}
INJECTABLE = ("traj", "task", "outcome", "events", "kinds", "world", "ctx")


def scorer_problem(fn: Callable[..., Any]) -> str | None:
    """Why `fn` cannot be called as a scorer, from its signature alone (nothing is run), or None:
    a parameter that is not injectable, or one that cannot be passed by name."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError) as exc:
        return f"has no signature to inject arguments by ({one_line(exc)})"
    unnamed = [("*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else "") + p.name
               for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY)]
    unknown = [p.name for p in params if p.name not in INJECTABLE]
    if unnamed or unknown:
        return (f"asks for {', '.join(unnamed or unknown)}, which simworld cannot inject (a scorer names each "
                f"argument it wants, from: {', '.join(INJECTABLE)})")
    return None


def _params(name: str, fn: Callable[..., Any]) -> tuple[str, ...]:
    names = _PARAMS.get(fn)
    if names is None:
        problem = scorer_problem(fn)
        if problem is not None:
            raise ScorerFailure(f"scorer {name!r} {problem}")
        names = tuple(inspect.signature(fn).parameters)
        _PARAMS[fn] = names
    return names


def check_scorers(names: Iterable[str]) -> None:
    """Raise :class:`ScorerFailure` for the first named scorer that cannot be called (before any work)."""
    for name in names:
        _params(name, registry.get_scorer(name))


def score_trajectory(traj: Trajectory, names: Iterable[str], ctx: ScoringContext) -> dict[str, Score]:
    """Run the named scorers on one trajectory; scorers that do not apply are left out.

    Raises :class:`ScorerFailure` when a scorer fails (see the module docstring),
    :class:`~simworld.errors.DamagedRecord` when the record names a world that cannot be built, and
    :class:`~simworld.errors.EpisodeCrash` when a tool of the world crashes on the scorer's replay."""
    out: dict[str, Score] = {}
    kinds: dict[str, str] | None = None
    for name in names:
        fn = registry.get_scorer(name)
        params = _params(name, fn)
        kwargs: dict[str, Any] = {}
        for p in params:
            if p == "traj":
                kwargs[p] = traj
            elif p == "task":
                kwargs[p] = traj.task
            elif p == "outcome":
                kwargs[p] = traj.outcome
            elif p == "events":
                kwargs[p] = traj.events
            elif p == "kinds":
                kinds = kinds if kinds is not None else role_kinds(traj, ctx.scenario)
                kwargs[p] = kinds
            elif p == "world":
                kwargs[p] = ctx.world(traj)
            elif p == "ctx":
                kwargs[p] = ctx
        try:
            score = fn(**kwargs)
        except DamagedRecord:  # (from the world or the replay it asked ctx for: the record's fault)
            raise
        except ToolCrash as exc:  # (in the replay it asked ctx for, or a tool it called: the world's bug, not its own)
            raise episode_crash(traj.episode_id, exc, f" on replay for scorer {name!r}") from exc
        except Exception as exc:
            raise ScorerFailure(f"scorer {name!r} failed on episode {traj.episode_id}: {bug_text(exc)}") from exc
        if score is not None:
            out[name] = _checked(name, traj.episode_id, score)
    return out


def _checked(name: str, episode_id: str, score: Any) -> Score:
    """`score` validated again (``model_construct`` or a changed attribute skip pydantic's checks),
    with JSON details, as a score line must hold them."""
    if not isinstance(score, Score):
        raise ScorerFailure(f"scorer {name!r} returned {type(score).__name__} on episode {episode_id}, "
                            "not a Score (or None where it does not apply)")
    try:
        valid = Score.model_validate({"value": score.value, "passed": score.passed, "details": score.details})
        orjson.dumps(valid.details)
    except (ValidationError, TypeError) as exc:  # (NaN and infinity are out of [0, 1] too)
        raise ScorerFailure(f"scorer {name!r} returned an invalid Score on episode {episode_id}: "
                            f"{one_line(exc)}") from None
    return valid


def summary_value(scores: dict[str, Score]) -> float:
    """One number per trajectory: the mean of its scorers' values (1.0 when nothing was scored)."""
    if not scores:
        return 1.0
    return round(sum(s.value for s in scores.values()) / len(scores), 6)


def all_passed(scores: dict[str, Score], success: bool) -> bool:
    """A trajectory passes when the episode succeeded and every scorer passed."""
    return success and all(s.passed for s in scores.values())
