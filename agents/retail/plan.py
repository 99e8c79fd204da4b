"""Planning tool calls from a world's tool graph.

Tools declare the entity types they consume and produce (``World.tool_graph``). To call a target
tool, every entity it consumes (plus any precondition, e.g. the order's status) must be known; an
entity is produced by the cheapest tools whose own inputs can be obtained, recursively, down to
*customer facts*: entities no tool produces (an e-mail, a zip code), which only the customer can
tell. The result is an ordered list of steps, each a set of alternative tools (e.g. find the user by
e-mail *or* by name and zip). Plans are cached per (world, tools, target, needs).
"""

from __future__ import annotations

import math
from functools import lru_cache

from simworld.world import World

Step = tuple[str, ...]


class ToolPlanner:
    """Dependency-ordered read steps before a target tool, for one role's tool set."""

    def __init__(self, world_cls: type[World], tools: tuple[str, ...]) -> None:
        self.world_cls = world_cls
        self.tools = tuple(t for t in tools if t in world_cls.tools)
        specs = world_cls.tools
        self.consumes = {t: specs[t].consumes for t in self.tools}
        self.produces = {t: specs[t].produces for t in self.tools}
        self.writes = {t: specs[t].writes for t in self.tools}
        self.entity_cost, self.tool_cost = self._costs()

    def _costs(self) -> tuple[dict[str, float], dict[str, float]]:
        """Fewest tool calls to obtain each entity (0 for customer facts) and to call each tool."""
        produced = {e for t in self.tools if not self.writes[t] for e in self.produces[t]}
        consumed = {e for t in self.tools for e in self.consumes[t]}
        entity = {e: (math.inf if e in produced else 0.0) for e in produced | consumed}
        tool = {t: math.inf for t in self.tools}
        changed = True
        while changed:  # Bellman-Ford on a graph of a few dozen nodes
            changed = False
            for t in self.tools:
                c = 1.0 + max((entity[e] for e in self.consumes[t]), default=0.0)
                if c < tool[t]:
                    tool[t], changed = c, True
                if self.writes[t]:
                    continue
                for e in self.produces[t]:
                    if c < entity[e]:
                        entity[e], changed = c, True
        return entity, tool

    def customer_facts(self) -> frozenset[str]:
        """Entities only the customer can tell (no read tool produces them)."""
        return frozenset(e for e, c in self.entity_cost.items() if c == 0.0)

    def producers(self, entity: str) -> list[str]:
        """Read tools that produce `entity`, cheapest first."""
        cands = [t for t in self.tools if not self.writes[t] and entity in self.produces[t]
                 and math.isfinite(self.tool_cost[t])]
        return sorted(cands, key=lambda t: (self.tool_cost[t], t))

    def steps(self, target: str, needs: tuple[str, ...] = ()) -> tuple[Step, ...]:
        """Ordered steps (alternative tools each) that make `target` callable.

        `needs` adds entities beyond what `target` consumes; ``"item_id@get_product_details"`` asks
        for an entity from one given tool (a new item comes from the catalog, not the order).
        """
        return _steps(self, target, needs)


@lru_cache(maxsize=256)
def _steps(planner: ToolPlanner, target: str, needs: tuple[str, ...]) -> tuple[Step, ...]:
    out: list[Step] = []
    placed: set[str] = set()
    wanted = list(needs) + list(planner.consumes.get(target, ()))  # explicit needs first: they pin the route
    # entities still to obtain, so a producer that covers several of them wins a tie
    pending = {w.split("@", 1)[0] for w in wanted}

    def obtain(entity: str, via: str | None, visiting: frozenset[str]) -> None:
        if via is not None:
            options = [via] if via in planner.produces else []
        else:
            if planner.entity_cost.get(entity, 0.0) == 0.0:
                return  # a customer fact
            options = planner.producers(entity)
        if not options or any(t in placed for t in options):
            return
        best = min(planner.tool_cost[t] for t in options)
        step = [t for t in options if planner.tool_cost[t] == best and t not in visiting]
        if not step:
            return
        # several equally cheap producers: keep the ones covering most pending entities
        # (then the more informative one): a tie between distinct routes is a choice, not alternatives
        rank = {t: (len(pending & set(planner.produces[t])), len(planner.produces[t])) for t in step}
        top = max(rank.values())
        step = [t for t in step if rank[t] == top]
        for tool in step:
            for e in planner.consumes[tool]:
                obtain(e, None, visiting | {tool})
        for tool in step:
            placed.add(tool)
        out.append(tuple(step))

    for w in wanted:
        entity, _, via = w.partition("@")
        obtain(entity, via or None, frozenset({target}))
    return tuple(out)


@lru_cache(maxsize=64)
def planner_for(world_cls: type[World], tools: tuple[str, ...]) -> ToolPlanner:
    """The (cached) planner of a role's tool set."""
    return ToolPlanner(world_cls, tools)
