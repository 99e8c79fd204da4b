"""Ctrl-C and SIGTERM as KeyboardInterrupt, never in the middle of an import and never dropped.

Python raises KeyboardInterrupt wherever the main thread happens to be. In the first second of a
command that is usually an import (commands load numpy, numba, pydantic and orjson lazily), and an
import interrupted half-way can crash the process (orjson's initialisation segfaults), leave a
half-made module behind, or have the interrupt swallowed by a library's bare ``except:`` so that the
command runs to the end. A KeyboardInterrupt raised inside ``__del__`` is likewise printed as
"Exception ignored" and dropped.

`interrupt` is the handler the command line installs for SIGINT and SIGTERM: a signal that arrives
during an import is raised once the import is done, and one that Python dropped is raised again in
the main code. This module imports nothing heavy, so it can be installed before anything else loads.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

RETRY_S = 0.005  # how soon an interrupt held back by an import is tried again
_IMPORT_MACHINERY = "<frozen importlib._bootstrap"  # both _bootstrap and _bootstrap_external
_previous_unraisablehook: Any = None


def _importing(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith(_IMPORT_MACHINERY):
            return True
        frame = frame.f_back
    return False


def interrupt(signum: int, frame: FrameType | None) -> None:
    """A signal handler that stops the program as Ctrl-C does (SIGTERM: kill, timeout, a CI job's
    end), so that the clean-up Ctrl-C gets runs for it too; an import under way finishes first."""
    if _importing(frame):
        _later(signum)
        return
    raise KeyboardInterrupt


def _later(signum: int) -> None:
    """Send `signum` to the main thread again in a moment, from a timer thread (a handler called from
    here would run, and be lost, right where we are). A real signal, so a sleep or wait is woken."""
    retry = threading.Timer(RETRY_S, _send, args=(threading.main_thread().ident, signum))
    retry.daemon = True
    retry.start()


def _send(thread: int | None, signum: int) -> None:
    try:
        signal.pthread_kill(thread, signum)  # type: ignore[arg-type]
    except (OSError, TypeError):  # the program has ended meanwhile
        pass


def _unraisable(unraisable: Any) -> None:
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        # Raised where Python cannot propagate it (a __del__, a weakref callback): raise it again
        # in the main thread instead of printing "Exception ignored" and running on.
        _later(signal.SIGINT)
        return
    (_previous_unraisablehook or sys.__unraisablehook__)(unraisable)


def install() -> None:
    """Make SIGINT and SIGTERM raise KeyboardInterrupt through `interrupt` (main thread only)."""
    global _previous_unraisablehook
    try:
        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: signals are not ours to set
        return
    if sys.unraisablehook is not _unraisable:
        _previous_unraisablehook = sys.unraisablehook
        sys.unraisablehook = _unraisable


def uninstall() -> None:
    """The work is done: a signal from now on ends the process the default way (no handler runs
    while the interpreter shuts down)."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:
        return
    if sys.unraisablehook is _unraisable:
        sys.unraisablehook = _previous_unraisablehook or sys.__unraisablehook__
