"""Ctrl-C and SIGTERM never land inside an import and are never dropped (simworld.interrupts)."""

import _thread
import importlib
import signal
import subprocess
import sys
import time

import pytest

import runner_plugin
from simworld import interrupts

SPIN = "t = time.monotonic()\nwhile time.monotonic() - t < 0.2:\n    pass\n"  # bytecodes run: a handler is called here


@pytest.fixture()
def installed():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    hook = sys.unraisablehook
    interrupts.install()
    yield
    interrupts.uninstall()
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    sys.unraisablehook = hook


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_during_an_import_waits_for_the_import_to_finish(installed, tmp_path, monkeypatch, sig):
    name = f"half_made_{sig}"
    (tmp_path / f"{name}.py").write_text(f"import _thread, time\n_thread.interrupt_main({int(sig)})\n{SPIN}done = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        importlib.import_module(name)
        time.sleep(5)  # the interrupt held back by the import is raised here
    assert sys.modules[name].done  # the module was imported whole, not torn half-way


def test_an_interrupt_python_would_drop_in_del_is_raised_again(installed, capsys):
    class Interrupted:
        def __del__(self):
            _thread.interrupt_main(signal.SIGINT)
            t = time.monotonic()
            while time.monotonic() - t < 0.2:
                pass

    with pytest.raises(KeyboardInterrupt):
        thing = Interrupted()
        del thing  # KeyboardInterrupt inside __del__: Python prints "Exception ignored" and goes on
        time.sleep(5)
    assert "Exception ignored" not in capsys.readouterr().err


def test_no_handler_is_left_behind_after_the_command(installed):
    interrupts.uninstall()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert sys.unraisablehook is not interrupts._unraisable


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_while_a_command_imports_stops_it_cleanly(tmp_path, sig):
    """The command line imports numpy, numba, orjson and plugins lazily; a Ctrl-C among them used to
    tear a module, crash orjson's initialisation or be swallowed. Here it comes while a plugin imports."""
    marker = tmp_path / "imported"
    (tmp_path / "interrupting_plugin.py").write_text(
        f"import os, time\nos.kill(os.getpid(), {int(sig)})\n{SPIN}open({str(marker)!r}, 'w').write('whole')\n")
    scen = runner_plugin.write_scenario(tmp_path / "slow.yaml", user={"type": "sleepy_user", "delay": 0.003})
    env = runner_plugin.subprocess_env(PYTHONPATH=f"{tmp_path}:{runner_plugin.TESTS}",
                                       SIMWORLD_PLUGINS="runner_plugin,interrupting_plugin")
    proc = subprocess.run([sys.executable, "-m", "simworld", "run", str(scen), "-n", "2000", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 130, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("Interrupted") and "Traceback" not in proc.stderr
    assert marker.read_text() == "whole"
    assert "2,000 of 2,000" not in proc.stderr  # stopped soon after the import (the run takes 6 s or more)
