"""simworld: simulated multi-agent tool-use and negotiation episodes as verified training data.

Entry points::

    import simworld
    env = simworld.make_env("scenarios/retail/cancel_pending_order.yaml", role="support")
    aec = simworld.make_aec("scenarios/retail/cancel_pending_order.yaml")
    par = simworld.make_parallel("scenarios/retail/cancel_pending_order.yaml")
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "make_aec", "make_env", "make_parallel"]


def make_env(scenario: Any, role: str | None = None, **kwargs: Any) -> Any:
    """Gymnasium environment in which `role` is played by the caller and other roles by their agents."""
    from simworld.envs import ToolUseEnv

    return ToolUseEnv(scenario=scenario, role=role, **kwargs)


def make_aec(scenario: Any, **kwargs: Any) -> Any:
    """PettingZoo AEC environment whose agents are the scenario's roles."""
    from simworld.envs import SimworldAEC

    return SimworldAEC(scenario=scenario, **kwargs)


def make_parallel(scenario: Any, **kwargs: Any) -> Any:
    """PettingZoo Parallel form of `make_aec`."""
    from simworld.envs import make_parallel_env

    return make_parallel_env(scenario, **kwargs)
