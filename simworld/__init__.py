"""simworld: simulated multi-agent tool-use and negotiation episodes as verified training data.

Entry points::

    import simworld
    env = simworld.make_env("scenarios/retail/cancel_pending_order.yaml", role="support")
    aec = simworld.make_aec("scenarios/retail/cancel_pending_order.yaml")
    par = simworld.make_parallel("scenarios/retail/cancel_pending_order.yaml")
"""

from __future__ import annotations

import sys
from typing import Any

__version__ = "0.1.0"

__all__ = ["GYMNASIUM_ENV_ID", "__version__", "make_aec", "make_env", "make_parallel", "register_gymnasium_envs"]

GYMNASIUM_ENV_ID = "simworld/ToolUse-v0"


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


def register_gymnasium_envs() -> None:
    """Register ``simworld/ToolUse-v0`` with gymnasium (idempotent).

    Gymnasium 1.x has no plugin discovery, so ``gymnasium.make("simworld/ToolUse-v0")`` needs the
    id registered first. Importing gymnasium costs ~75 ms, far more than ``import simworld``, so
    the registration runs when gymnasium is imported (or now, if it already is).
    """
    from gymnasium.envs.registration import register, registry

    if GYMNASIUM_ENV_ID not in registry:
        register(id=GYMNASIUM_ENV_ID, entry_point="simworld.envs:ToolUseEnv")


class _RegisterOnGymnasiumImport:
    """Meta path finder that lets gymnasium load normally, then registers simworld's envs."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "gymnasium":
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec

        def exec_then_register(module: Any) -> None:
            exec_module(module)
            register_gymnasium_envs()

        loader.exec_module = exec_then_register  # this loader instance serves only this import
        return spec


if "gymnasium" in sys.modules:
    register_gymnasium_envs()
elif not any(isinstance(f, _RegisterOnGymnasiumImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterOnGymnasiumImport())
