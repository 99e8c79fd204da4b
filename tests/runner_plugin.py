"""Test plugin for the runner and CLI tests: the ledger world plus agents that are slow, flaky, async
or broken. Subprocess tests load it with ``PYTHONPATH=tests SIMWORLD_PLUGINS=runner_plugin``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import yaml

import ledger_world
from simworld.agent import Agent, AgentParams
from simworld.episode import AgentFailure
from simworld.registry import register_agent

TESTS = Path(__file__).resolve().parent
FAIL_ENV = "RUNNER_PLUGIN_FAIL"  # comma-separated episode indices whose clerk fails (AgentFailure)


class SleepyParams(AgentParams):
    delay: float = 0.0


@register_agent("sleepy_user")
class SleepyUser(ledger_world.LedgerUser):
    """The ledger user, sleeping `delay` seconds per turn (so a run can be killed mid-way)."""

    Params = SleepyParams

    async def act(self, view):
        time.sleep(self.params.delay)
        return await super().act(view)


@register_agent("flaky_clerk")
class FlakyClerk(ledger_world.LedgerClerk):
    """The ledger clerk, failing like a model that keeps erroring for the episodes named in $RUNNER_PLUGIN_FAIL."""

    async def act(self, view):
        failing = {int(i) for i in os.environ.get(FAIL_ENV, "").split(",") if i.strip()}
        if view.episode.spec.index in failing:
            raise AgentFailure("model unavailable after 2 retries (HTTP 503)")
        return await super().act(view)


class AwaitingParams(AgentParams):
    model: str = "fake/model"
    max_retries: int = 3
    latency: float = 0.002


@register_agent("awaiting_clerk")
class AwaitingClerk(ledger_world.LedgerClerk):
    """A clerk that awaits like a model call; records how many of its kind are in flight at once."""

    Params = AwaitingParams
    in_flight = 0
    max_in_flight = 0

    async def act(self, view):
        cls = type(self)
        cls.in_flight += 1
        cls.max_in_flight = max(cls.max_in_flight, cls.in_flight)
        try:
            await asyncio.sleep(self.params.latency)
        finally:
            cls.in_flight -= 1
        return await super().act(view)


@register_agent("broken_clerk")
class BrokenClerk(ledger_world.LedgerClerk):
    """A clerk with a bug: raises an unexpected exception in episode 3."""

    async def act(self, view):
        if view.episode.spec.index == 3:
            raise KeyError("bug in the agent")
        return await super().act(view)


def scenario_data(user: dict | None = None, clerk: str = "ledger_clerk", **overrides) -> dict:
    """The ledger scenario with the given user agent spec and clerk agent type."""
    data = ledger_world.scenario_data(**overrides)
    if user is not None:
        data["roles"]["user"]["agent"] = user
    data["roles"]["clerk"]["agent"] = {"type": clerk}
    return data


def write_scenario(path: Path, **kwargs) -> Path:
    path.write_text(yaml.safe_dump(scenario_data(**kwargs), sort_keys=False))
    return path


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a `simworld` subprocess that loads this plugin."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p)
    env["SIMWORLD_PLUGINS"] = "runner_plugin"
    env.update(extra)
    return env
