"""A plugin that registers a name a built-in holds is refused, whatever its module and class are called.

The plugins are real modules written to a temporary folder and loaded as users load them
(``SIMWORLD_PLUGINS`` and ``PYTHONPATH``, through the ``simworld`` command). The clash that slipped
through was a fork: a copy of a built-in's file (``myco/oracle.py`` from ``agents/retail/oracle.py``)
keeps the module's last name and the class's name, which is all the registry used to compare.
What stays allowed is the same definition imported again: under another package name, reloaded.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _simworld(tmp_path: Path, plugins: str, *args: str, path: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "SIMWORLD_PLUGINS": plugins,
           "PYTHONPATH": os.pathsep.join(map(str, (tmp_path, *path)))}
    return subprocess.run([sys.executable, "-m", "simworld", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def _write(root: Path, module: str, text: str) -> None:
    *packages, name = module.split(".")
    folder = root
    for package in packages:
        folder = folder / package
        folder.mkdir(exist_ok=True)
        (folder / "__init__.py").touch()
    (folder / f"{name}.py").write_text(text)


def test_a_fork_of_the_builtin_oracles_file_is_refused(tmp_path):
    """The way a team starts its own support agent: copy the oracle's file, make its imports
    absolute, change what it says; `@register_agent("oracle")` and `class SupportOracle` stay."""
    source = (ROOT / "agents" / "retail" / "oracle.py").read_text()
    fork = re.sub(r"^from \.(\w*) import", lambda m: f"from simworld.agents.retail{'.' + m[1] if m[1] else ''} import",
                  source, flags=re.M)
    assert fork != source and '@registry.register_agent("oracle")\nclass SupportOracle(' in fork
    _write(tmp_path, "myco.oracle", fork.replace('"""', '"""Our own oracle. ', 1))
    out = _simworld(tmp_path, "myco.oracle", "list", "agents")
    assert (out.returncode, out.stdout) == (2, ""), out.stdout + out.stderr
    assert out.stderr == ("error: SIMWORLD_PLUGINS: cannot import plugin module 'myco.oracle': SimworldError: "
                          "agent 'oracle' is registered twice: by simworld.agents.retail.oracle.SupportOracle and "
                          "by myco.oracle.SupportOracle; give one of them another name\n")


BUILTIN_LOOKALIKES = {
    # kind: (plugin module, whose last name is the built-in's module's, and its code, the built-in's qualname)
    "world": ("qa_fork.world", "from simworld.registry import register_world\n\n\n"
              "@register_world('retail')\nclass RetailWorld:\n    pass\n",
              "world 'retail' is registered twice: by simworld.environments.retail.world.RetailWorld and by "
              "qa_fork.world.RetailWorld"),
    "task": ("qa_fork.tasks", "from simworld.registry import register_task\n\n\n"
             "@register_task('retail', 'cancel_pending_order')\nclass CancelPendingOrderTask:\n    pass\n",
             "task of world 'retail' 'cancel_pending_order' is registered twice: by "
             "simworld.environments.retail.tasks.CancelPendingOrderTask and by qa_fork.tasks.CancelPendingOrderTask"),
    "scorer": ("qa_fake.builtin", "from simworld.registry import register_scorer\n\n\n"
               "@register_scorer('state_match')\ndef state_match(traj):\n    '''Always passes.'''\n",
               "scorer 'state_match' is registered twice: by simworld.scoring.builtin.state_match and by "
               "qa_fake.builtin.state_match"),
}


@pytest.mark.parametrize("kind", sorted(BUILTIN_LOOKALIKES))
def test_a_lookalike_of_a_builtin_by_module_and_qualname_is_refused(tmp_path, kind):
    module, code, clash = BUILTIN_LOOKALIKES[kind]
    _write(tmp_path, module, code)
    out = _simworld(tmp_path, module, "validate", "scenarios/retail/mixed.yaml")
    assert (out.returncode, out.stdout) == (2, ""), out.stdout + out.stderr
    assert out.stderr == (f"error: SIMWORLD_PLUGINS: cannot import plugin module {module!r}: SimworldError: "
                          f"{clash}; give one of them another name\n")


def test_the_same_definitions_imported_again_keep_their_names(tmp_path):
    """The built-in agents imported once more from the checkout's `agents` folder (a script run in
    the checkout), a built-in module reloaded, and a plugin named twice under two module names:
    each is the definition that holds the name, so nothing is refused."""
    _write(tmp_path, "pkg.again", "import importlib\n\n"
           "import agents.retail.oracle\nimport simworld.scoring.builtin\n"
           "from simworld.registry import register_scorer\n\n"
           "importlib.reload(simworld.scoring.builtin)\n\n\n"
           "@register_scorer('qa_again')\ndef qa_again(traj):\n    '''Registered by each name of its module.'''\n")
    out = _simworld(tmp_path, "pkg.again,again", "list", "agents", path=(tmp_path / "pkg", ROOT))
    assert out.returncode == 0, out.stderr
    assert re.search(r"^oracle ", out.stdout, re.M), out.stdout
    out = _simworld(tmp_path, "pkg.again,again", "list", "scorers", path=(tmp_path / "pkg", ROOT))
    assert out.returncode == 0, out.stderr
    assert re.search(r"^qa_again +Registered by each name of its module\.$", out.stdout, re.M), out.stdout
    assert re.search(r"^state_match ", out.stdout, re.M), out.stdout
