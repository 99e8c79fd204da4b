"""Registries for worlds, tasks, agents and scorers, filled by decorators.

A new world is one module plus one decorator::

    @register_world("retail")
    class RetailWorld(World): ...

    @register_task("retail", "cancel_pending_order")
    class CancelPendingOrder(TaskGenerator): ...

    @register_agent("oracle")
    class SupportOracle(Agent): ...

    @register_scorer("state_match")
    def state_match(traj, task) -> Score: ...

Built-in modules are imported on first lookup (`load_builtins`), so `simworld --help` stays fast.
Third-party worlds, tasks, agents and scorers register the same way from their own modules, named
in the ``SIMWORLD_PLUGINS`` environment variable (comma-separated module names) or declared as
``simworld.plugins`` entry points by an installed package; `load_builtins` imports them too.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from simworld.errors import SimworldError, UnknownName

T = TypeVar("T")

WORLDS: dict[str, Any] = {}
TASKS: dict[str, dict[str, Any]] = {}
AGENTS: dict[str, Any] = {}
SCORERS: dict[str, Any] = {}

# Modules that register built-in components. Importing each is cheap except for Numba kernels,
# which are compiled lazily (cache=True) on first call.
BUILTIN_MODULES = [
    "simworld.environments.retail",
    "simworld.environments.negotiation",
    "simworld.agents",
    "simworld.scoring",
]

PLUGINS_ENV = "SIMWORLD_PLUGINS"
PLUGINS_ENTRY_POINTS = "simworld.plugins"

_loaded = False


# What a missing package of simworld's own holds, for the one line that says it is missing.
_BUILTIN_KINDS = {"simworld.environments": "worlds", "simworld.agents": "agents", "simworld.scoring": "scorers"}


def load_builtins() -> None:
    """Import the built-in worlds, tasks, agents and scorers, then the plugins (once per process).

    simworld's own packages are all shipped: one that cannot be found (an editable install whose
    checkout moved or was deleted) is a :class:`SimworldError` naming it, not a registry that
    silently lacks every built-in name. A missing third-party dependency stays an ImportError.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in BUILTIN_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing != "simworld" and not missing.startswith("simworld."):
                raise
            _loaded = False  # every later lookup says so too, instead of finding empty registries
            kind = next((k for package, k in _BUILTIN_KINDS.items()
                         if missing == package or missing.startswith(package + ".")), "components")
            raise SimworldError(f"simworld's built-in {kind} could not be imported ({exc}): reinstall simworld "
                                "(pip install -e . in its checkout)") from exc
    load_plugins()


def plugin_modules() -> list[str]:
    """Module names from ``$SIMWORLD_PLUGINS`` (comma-separated), in order."""
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def load_plugins() -> None:
    """Import third-party registration modules: ``$SIMWORLD_PLUGINS`` and ``simworld.plugins`` entry points."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGINS_ENTRY_POINTS):
        try:
            ep.load()
        except Exception as exc:  # a broken plugin is one clear line, not a traceback
            raise SimworldError(f"plugin entry point {ep.name!r} ({ep.value}) failed to load: "
                                f"{type(exc).__name__}: {exc}") from exc
    for name in plugin_modules():
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise SimworldError(f"{PLUGINS_ENV}: cannot import plugin module {name!r}: "
                                f"{type(exc).__name__}: {exc}") from exc


def _claim(table: dict[str, Any], kind: str, name: str, obj: Any) -> None:
    """Put `obj` in `table` under `name`; a name another definition holds already is an error (a
    plugin would silently replace a built-in, or two plugins each other, by load order). The same
    definition again (its module reloaded, or imported once more under another name, as
    ``agents.retail.oracle`` beside ``simworld.agents.retail.oracle``) takes its place."""
    old = table.get(name)
    if old is not None and old is not obj and (_definition(old) is None or _definition(old) != _definition(obj)):
        first, second = _where(old), _where(obj)
        if first == second:  # one module name, two files (a module replaced by another of its name)
            first, second = f"{first} ({_source(old)})", f"{second} ({_source(obj)})"
        raise SimworldError(f"{kind} {name!r} is registered twice: by {first} and by {second}; "
                            "give one of them another name")
    table[name] = obj


def _definition(obj: Any) -> tuple[str, str] | None:
    """What identifies where `obj` was defined: its module's source file (whatever name the module
    was imported under) and its qualified name; None for an object without a name to know it by.
    The file, not the module's name, since a copy of a module (``myco/oracle.py`` made from
    ``agents/retail/oracle.py``) can share its last name component and every qualified name."""
    qualname = getattr(obj, "__qualname__", None)
    return None if not isinstance(qualname, str) else (_source(obj), qualname)


def _source(obj: Any) -> str:
    """`obj`'s module's file, resolved; the module's name when it has none (code run with exec)."""
    module = str(getattr(obj, "__module__", "") or "")
    file = getattr(sys.modules.get(module), "__file__", None)
    return os.path.realpath(file) if isinstance(file, str) and file else module


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"


def register_world(name: str) -> Callable[[T], T]:
    def deco(cls: T) -> T:
        _claim(WORLDS, "world", name, cls)
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return deco


def register_task(world: str, name: str) -> Callable[[T], T]:
    def deco(cls: T) -> T:
        _claim(TASKS.setdefault(world, {}), f"task of world {world!r}", name, cls)
        cls.name = name  # type: ignore[attr-defined]
        cls.world = world  # type: ignore[attr-defined]
        return cls

    return deco


def register_agent(name: str) -> Callable[[T], T]:
    def deco(cls: T) -> T:
        _claim(AGENTS, "agent", name, cls)
        cls.type_name = name  # type: ignore[attr-defined]
        return cls

    return deco


def register_scorer(name: str) -> Callable[[T], T]:
    def deco(fn: T) -> T:
        _claim(SCORERS, "scorer", name, fn)
        return fn

    return deco


def _lookup(table: dict[str, Any], kind: str, name: str, where: str = "") -> Any:
    load_builtins()
    if name not in table:
        raise UnknownName(kind, name, table, where)
    return table[name]


def get_world(name: str) -> Any:
    return _lookup(WORLDS, "world", name)


def get_task(world: str, name: str) -> Any:
    load_builtins()
    return _lookup(TASKS.get(world, {}), "task", name, f"for world {world!r}")


def get_agent(name: str) -> Any:
    return _lookup(AGENTS, "agent", name)


def get_scorer(name: str) -> Any:
    return _lookup(SCORERS, "scorer", name)
