"""Persisted data types: messages, tool calls, tool specs and trajectories.

Everything that is written to disk is a pydantic model. One trajectory is one JSON line
(`Trajectory.to_jsonl()`), written with orjson. The event log is *global*: every message of every
role, and every tool result, in order. Per-role views (what role R saw, what R is trained on) are
derived from it by :mod:`simworld.perspective`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Role = Literal["system", "user", "assistant", "tool"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolCall(_Model):
    """One call of a tool: `arguments` is a dict (not a JSON string)."""

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolSpec(_Model):
    """A tool as a model sees it: name, description and JSON Schema of its parameters."""

    name: str
    description: str
    parameters: dict[str, Any]

    def openai(self) -> dict[str, Any]:
        """The OpenAI / litellm `tools=[...]` entry."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class Message(_Model):
    """One event of an episode.

    `speaker` is the scenario role whose turn this belongs to (for a tool result: the role that
    called the tool; for a world notice: `"world"`). `role` is the chat role in the *global* log:
    a role of kind `user` speaks as `user`, a role of kind `assistant` as `assistant`, tool results
    are `tool`. `audience`, when set, limits who sees the event (tool results: the caller only).
    """

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    speaker: str = ""
    tool_call_id: str | None = None
    name: str | None = None
    error: bool = False
    invalid: str | None = None
    audience: str | None = None


class TaskRecord(_Model):
    """What the episode's task was: enough to re-score it without re-sampling."""

    type: str
    instance_id: str
    goal: dict[str, Any] = Field(default_factory=dict)
    private: dict[str, dict[str, Any]] = Field(default_factory=dict)
    gold_plan: list[ToolCall] = Field(default_factory=list)
    required_outputs: list[str] = Field(default_factory=list)
    expected_state_hash: str = ""
    should_refuse: bool = False


class FieldDiff(_Model):
    """One field where the final state differs from the expected one."""

    table: str
    row: str
    field: str
    expected: Any = None
    actual: Any = None


class Outcome(_Model):
    success: bool = False
    termination: str = ""
    state_match: bool | None = None
    diff: list[FieldDiff] = Field(default_factory=list)
    outputs_stated: bool | None = None
    missing_outputs: list[str] = Field(default_factory=list)
    error: str | None = None
    invalid_moves: int = 0
    tool_errors: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict)


class Provenance(_Model):
    simworld_version: str
    agent_ids: dict[str, str] = Field(default_factory=dict)
    models: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    synthetic: bool = True
    parent: str | None = None
    fork_at: int | None = None


class Trajectory(_Model):
    """One recorded episode.

    `seed` seeded the episode (agents, tools, and the task unless `task_seed` is set). `task_seed`
    is set only for a scenario with ``repeats`` > 1: the seed of the task group whose task this
    episode retried. Dumps leave it out when None, so runs without repeats are unchanged byte for
    byte (and records from before the field read as None).
    """

    schema_version: int = SCHEMA_VERSION
    episode_id: str
    scenario: str
    scenario_hash: str
    seed: int = Field(ge=0)
    task_seed: int | None = Field(default=None, ge=0, exclude_if=lambda seed: seed is None)
    episode_index: int = Field(default=0, ge=0)
    variation: dict[str, Any] = Field(default_factory=dict)
    agents: dict[str, dict[str, Any]] = Field(default_factory=dict)
    world: dict[str, Any] = Field(default_factory=dict)
    task: TaskRecord
    system: dict[str, str] = Field(default_factory=dict)
    tools: dict[str, list[str]] = Field(default_factory=dict)
    events: list[Message] = Field(default_factory=list)
    final_state_hash: str = ""
    outcome: Outcome = Field(default_factory=Outcome)
    provenance: Provenance

    def to_jsonl(self) -> bytes:
        """One JSON line (with the trailing newline)."""
        # Python-mode dump: orjson serialises dates and enums itself, a little faster than
        # pydantic's JSON mode, with the same bytes.
        return orjson.dumps(self.model_dump(), option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"

    @classmethod
    def from_json(cls, line: bytes | str) -> Trajectory:
        return cls.model_validate(orjson.loads(line))


TIMING_FIELDS = ("timings",)


def strip_timings(record: dict[str, Any]) -> dict[str, Any]:
    """A trajectory dict without its wall-clock fields, for determinism comparisons."""
    out = dict(record)
    prov = dict(out.get("provenance", {}))
    prov.pop("timings", None)
    models = prov.get("models")
    if isinstance(models, dict):
        prov["models"] = {k: {kk: vv for kk, vv in v.items() if kk not in ("latency_s", "latencies_s")}
                          if isinstance(v, dict) else v for k, v in models.items()}
    out["provenance"] = prov
    return out


# ----------------------------------------------------------------------------------------------
# What a trajectory line can hold

INT_RANGE = (-(1 << 63), (1 << 64) - 1)
"""Integers a JSON line written by orjson holds exactly."""
MAX_ARGUMENT_DEPTH = 200
"""Deepest container nesting of a call's arguments (the arguments object is level 1). orjson writes
254 nested containers at most; a trajectory line holds arguments inside 5 containers and an export
line inside 6 or 7, so 200 leaves room for any wrapper."""


def text_problem(text: str, what: str) -> str | None:
    """Why `text` cannot be written as UTF-8 (a lone surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} is not valid Unicode (a lone surrogate)"
    return None


def argument_problem(value: Any, where: str, level: int = 1) -> str | None:
    """Why a tool call's argument `value` (the arguments object is level 1) cannot be stored exactly
    in a trajectory line, or None: an integer beyond 64 bits, NaN or infinity, nesting deeper than
    MAX_ARGUMENT_DEPTH, text that is not valid Unicode, a key that is not a string or a value that is
    not JSON. The Llama 3 parser refuses such calls and the engine records them as invalid moves."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return text_problem(value, f"an argument of {where}")
    if isinstance(value, int):
        return None if INT_RANGE[0] <= value <= INT_RANGE[1] else f"an argument of {where} is an integer beyond 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"an argument of {where} is {value} (JSON has no such number)"
    if not isinstance(value, (dict, list, tuple)):
        return f"an argument of {where} is a {type(value).__name__}, not a JSON value"
    if level > MAX_ARGUMENT_DEPTH:
        return f"the arguments of {where} are nested deeper than {MAX_ARGUMENT_DEPTH} levels"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"an argument name of {where} is not a string"
            problem = text_problem(key, f"an argument name of {where}") or argument_problem(item, where, level + 1)
            if problem is not None:
                return problem
        return None
    for item in value:
        problem = argument_problem(item, where, level + 1)
        if problem is not None:
            return problem
    return None


def _text_part(part: Any) -> bool:
    return isinstance(part, str) or (isinstance(part, dict) and part.get("type", "text") == "text"
                                     and isinstance(part.get("text"), str))


def content_text(content: Any) -> str | None:
    """An OpenAI-style message `content` as text: a string, None (""), or text parts
    (``[{"type": "text", "text": ...}, ...]``, joined). None for anything else (images, numbers):
    what a model's reply or an external conversation may hold."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(_text_part(p) for p in content):
        return "".join(p if isinstance(p, str) else p["text"] for p in content)
    return None
