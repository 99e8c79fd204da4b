"""simworld's own packages failing to import is one clear line, not "unknown world" per name.

The failure is real: a subprocess whose import system refuses a built-in package (as it does when
the editable install points at a deleted checkout), installed by a ``sitecustomize`` module on
``PYTHONPATH`` before simworld is imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BLOCKER = '''
import sys

class BlockPackages:
    """Finds nothing for the blocked packages, as when their folder is gone."""

    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in {blocked!r}):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, BlockPackages())
'''


def _simworld(tmp_path: Path, blocked: list[str], *args: str, plugins: str = "") -> subprocess.CompletedProcess:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER.format(blocked=blocked))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), str(ROOT / "tests"),
                                                                     os.environ.get("PYTHONPATH")]))}
    env.pop("SIMWORLD_PLUGINS", None)
    if plugins:
        env["SIMWORLD_PLUGINS"] = plugins
    return subprocess.run([sys.executable, "-m", "simworld", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("blocked, missing, kind", [
    (["simworld.environments", "simworld.agents"], "simworld.environments", "worlds"),  # a deleted checkout
    (["simworld.environments"], "simworld.environments", "worlds"),  # (the agents import the worlds)
    (["simworld.agents"], "simworld.agents", "agents"),
    (["simworld.environments.negotiation"], "simworld.environments.negotiation", "worlds"),
])
def test_missing_builtin_package_is_one_line_with_the_fix(tmp_path, blocked, missing, kind):
    out = _simworld(tmp_path, blocked, "validate", "scenarios/retail/mixed.yaml")
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == ""
    assert out.stderr == (f"error: simworld's built-in {kind} could not be imported (No module named "
                          f"'{missing}'): reinstall simworld (pip install -e . in its checkout)\n")


def test_the_other_commands_that_load_the_registry_say_the_same(tmp_path):
    for args in (["list", "worlds"], ["schema"], ["run", "scenarios/retail/order_status.yaml", "--episodes", "1",
                                                  "--out", str(tmp_path / "run")]):
        out = _simworld(tmp_path, ["simworld.environments"], *args)
        assert out.returncode == 2, (args, out.stdout + out.stderr)
        assert "Traceback" not in out.stderr
        assert out.stderr.strip().endswith("reinstall simworld (pip install -e . in its checkout)"), (args, out.stderr)


def test_a_missing_plugin_module_keeps_its_own_message(tmp_path):
    out = _simworld(tmp_path, [], "validate", "scenarios/retail/mixed.yaml", plugins="no_such_plugin_module")
    assert out.returncode == 2
    assert out.stderr == ("error: SIMWORLD_PLUGINS: cannot import plugin module 'no_such_plugin_module': "
                          "ModuleNotFoundError: No module named 'no_such_plugin_module'\n")


def test_nothing_blocked_validates(tmp_path):
    # The blocker itself changes nothing else: the same command passes with an empty block list.
    out = _simworld(tmp_path, [], "validate", "scenarios/retail/mixed.yaml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK" in out.stdout


def test_every_later_lookup_says_it_too(tmp_path):
    # A caller that catches the first error must not go on with registries that lack every built-in.
    (tmp_path / "sitecustomize.py").write_text(BLOCKER.format(blocked=["simworld.environments"]))
    code = ("from simworld import registry\n"
            "from simworld.errors import SimworldError, UnknownName\n"
            "for lookup in (registry.load_builtins, lambda: registry.get_world('retail')):\n"
            "    try:\n"
            "        lookup()\n"
            "    except UnknownName:\n"
            "        raise\n"
            "    except SimworldError as exc:\n"
            "        print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["simworld's built-in worlds could not be imported (No module named "
                                       "'simworld.environments'): reinstall simworld (pip install -e . in its "
                                       "checkout)"] * 2


def test_a_plugin_taking_a_registered_name_is_one_line_naming_both(tmp_path):
    """A plugin that registers a name a built-in (or another plugin) holds would replace it by load
    order, silently: every scenario naming 'oracle' would run the plugin's agent."""
    (tmp_path / "shadowing_plugin.py").write_text(
        "from simworld.agent import Agent\n"
        "from simworld.registry import register_agent\n\n\n"
        "@register_agent('oracle')\n"
        "class MyOracle(Agent):\n"
        "    pass\n")
    out = _simworld(tmp_path, [], "validate", "scenarios/retail/mixed.yaml", plugins="shadowing_plugin")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr == ("error: SIMWORLD_PLUGINS: cannot import plugin module 'shadowing_plugin': SimworldError: "
                          "agent 'oracle' is registered twice: by simworld.agents.retail.oracle.SupportOracle and "
                          "by shadowing_plugin.MyOracle; give one of them another name\n")


def test_the_same_definition_registered_again_keeps_its_name():
    from simworld import registry
    from simworld.errors import SimworldError

    registry.load_builtins()
    oracle = registry.get_agent("oracle")
    registry.register_agent("oracle")(oracle)  # (a module imported once more)
    assert registry.get_agent("oracle") is oracle
    try:
        registry.register_scorer("state_match")(lambda traj, task: None)
    except SimworldError as exc:
        assert "scorer 'state_match' is registered twice" in str(exc)
    else:
        raise AssertionError("a second state_match scorer was taken")
    assert registry.get_scorer("state_match").__name__ == "state_match"
