"""Tasks are blueprints sampled from a generated world.

A :class:`TaskGenerator` (registered per world with ``@register_task(world, name)``) samples one
:class:`TaskInstance` with the episode's RNG: the goal, what each role privately knows, the gold
plan, the expected final state (the gold plan applied to a snapshot, which proves the task is
solvable) and the outputs the assistant must state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from simworld.types import TaskRecord, ToolCall
from simworld.world import NoParams, State, World


@dataclass
class TaskInstance:
    type: str
    instance_id: str
    goal: dict[str, Any]
    private: dict[str, dict[str, Any]]
    """What each role starts with, keyed by scenario role name or by role kind (`user`/`assistant`)."""
    gold_plan: list[ToolCall]
    expected_state: State | None
    """The state the gold plan leads to, or None when no single end state is expected (negotiation)."""
    required_outputs: list[str] = field(default_factory=list)
    should_refuse: bool = False
    instructions: str = ""
    """Natural-language instructions for the user side (what an LLM user simulator is told)."""

    def private_for(self, role: str, kind: str) -> dict[str, Any]:
        if role in self.private:
            return self.private[role]
        return self.private.get(kind, {})

    def record(self) -> TaskRecord:
        return TaskRecord(
            type=self.type,
            instance_id=self.instance_id,
            goal=self.goal,
            private=self.private,
            gold_plan=self.gold_plan,
            required_outputs=self.required_outputs,
            expected_state_hash=self.expected_state.state_hash() if self.expected_state is not None else "",
            should_refuse=self.should_refuse,
        )


class TaskGenerator:
    """Base class of task generators. `Params` validates the scenario's `task.params`."""

    name: ClassVar[str] = ""
    world: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, params: BaseModel) -> None:
        self.params = params

    def sample(self, world: World, state: State, rng: np.random.Generator) -> TaskInstance:
        raise NotImplementedError
