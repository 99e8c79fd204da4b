"""The agent protocol: ``async def act(view) -> Message``.

An agent plays one role of one episode. It is built per episode from the scenario's agent spec
(`roles.<role>.agent`), validated by the agent class's `Params` model, with its own seeded RNG.
Scripted agents return at once; LLM agents await a model. An agent may return a
:class:`~simworld.types.Message` or plain text (parsed as a Llama 3 assistant turn).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from simworld.perspective import visible_to
from simworld.types import Message, ToolSpec

if TYPE_CHECKING:
    from simworld.episode import Episode
    from simworld.task import TaskInstance


class AgentParams(BaseModel):
    """Base of agent parameter models: `type` is the registry name; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    type: str = Field(description="Registered agent name (simworld list agents).")


def same_move(a: Message, b: Message) -> bool:
    """Do two actions say the same and make the same calls (call ids aside: the engine assigns them)?"""
    return a.content == b.content and \
        [(c.name, c.arguments) for c in a.tool_calls] == [(c.name, c.arguments) for c in b.tool_calls]


@dataclass
class View:
    """What one role sees when it is its turn to act."""

    role: str
    kind: str
    system: str
    tools: list[ToolSpec]
    private: dict[str, Any]
    persona: str
    turn: int
    max_turns: int
    episode: Episode = field(repr=False)
    task: TaskInstance = field(repr=False)

    @property
    def messages(self) -> list[Message]:
        """The conversation from this role's perspective (own turns `assistant`, others `user`)."""
        return self.episode.perspective(self.role)

    @property
    def events(self) -> list[Message]:
        """The global event log (for scripted agents that track state by event index)."""
        return self.episode.events

    def visible_since(self, index: int) -> list[Message]:
        """Events visible to this role from global index `index` on (not another role's rejected
        move: :func:`simworld.perspective.visible_to`)."""
        return [e for e in self.episode.events[index:] if visible_to(e, self.role)]


def config_id(type_name: str, params: BaseModel) -> str:
    """``TYPE`` or ``TYPE(k=v,...)``: an agent's type and the parameters that differ from their
    defaults (what :attr:`Agent.agent_id` records, and what a replay without agents labels it)."""
    extra = params.model_dump(exclude={"type"}, exclude_defaults=True)
    if not extra:
        return type_name
    return type_name + "(" + ",".join(f"{k}={extra[k]}" for k in sorted(extra)) + ")"


class Agent:
    """Base class of agents. Subclasses set `Params` and implement `act`."""

    type_name: ClassVar[str] = ""
    Params: ClassVar[type[AgentParams]] = AgentParams

    def __init__(self, params: AgentParams, role: str, rng: np.random.Generator) -> None:
        self.params = params
        self.role = role
        self.rng = rng

    @property
    def agent_id(self) -> str:
        """A stable id of this agent's configuration, recorded in provenance."""
        return config_id(self.type_name, self.params)

    def provenance(self) -> dict[str, Any]:
        """Anything worth recording about how this agent produced its turns (models, usage)."""
        return {}

    async def act(self, view: View) -> Message | str:
        raise NotImplementedError

    async def observe(self, view: View, taken: Message) -> None:
        """Catch up on a turn this agent did not play: a fork replays its parent's prefix, then its
        agents take over, and each is first brought through the prefix's turns of its role.

        `view` is what the role saw at that turn and `taken` what the record says the role did. The
        default suits scripted agents, which carry state from turn to turn (what they have read,
        where their script is): act on the view as in a run, then :meth:`adopt` the recorded action
        in place of the reply. An agent that reads everything it needs from each view (an LLM
        agent) overrides this to do nothing, so no model is called for the prefix.
        """
        reply = await self.act(view)
        self.adopt(reply, taken)

    def adopt(self, reply: Message | str, taken: Message) -> None:
        """While catching up (:meth:`observe`), `reply` was this agent's answer but `taken` is what
        happened. Agents whose state follows their own actions reconcile it here; the default
        keeps nothing of either."""
