"""User-facing errors (each becomes one clear line and exit code 2 at the CLI) and the helpers that
word messages: `suggest`, `one_line`, `counted`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from pydantic import ValidationError


class SimworldError(Exception):
    """An error caused by the user's input (scenario, arguments, files). Printed as one line."""

    exit_code = 2


class ScenarioError(SimworldError):
    """A scenario failed validation. `problems` holds every problem, one line each.

    ``str(exc)`` is every problem, one per line, each prefixed with `source` as ``simworld validate``
    and the CLI print them (``FILE: path (line N): message``).
    """

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__("\n".join(head + problem for problem in problems) or f"{head}invalid scenario")


class UnknownName(SimworldError):
    """An unknown world, task, tool, agent or scorer name."""

    def __init__(self, kind: str, name: str, known: Iterable[str], where: str = "") -> None:
        self.kind, self.name = kind, name
        super().__init__(f"unknown {kind} {name!r}{f' {where}' if where else ''}{suggest(name, known)}")


class DamagedRecord(ValueError):
    """A record that validates as a trajectory but names what its run cannot build (a task or world
    of no run of this scenario, a tool its world does not have): altered by hand or on disk. Readers skip or report it like a
    record of the wrong shape (it is a ValueError for that reason)."""


def suggest(name: str, known: Iterable[str]) -> str:
    """`"; did you mean 'x'?"` for the closest known name, or `""`."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def one_line(exc: BaseException) -> str:
    """What `exc` says went wrong, on one line: a pydantic ValidationError's first error as
    ``loc: msg``; otherwise the first line of its message (its type when the message is empty)."""
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(x) for x in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    lines = text.splitlines()
    more = len(lines) - 1
    return lines[0] + (f" (and {counted(more, 'more problem')})" if more and isinstance(exc, ScenarioError) else "")


def rounded(share: float, places: int, scale: float = 1.0) -> str:
    """`share` x `scale` to `places` decimals, with as many more as it takes for a share strictly
    between 0 and 1 not to read as exactly 0 or 1: 24,999 of 25,000 is ``rounded(0.99996, 1, 100)`` =
    ``"99.996"``, not ``"100.0"``, and a mean score of 0.99996 is not ``"1.000"``."""
    text = f"{share * scale:.{places}f}"
    while 0 < share < 1 and float(text) in (0.0, scale) and places < 17:  # (17: all a float holds)
        places += 1
        text = f"{share * scale:.{places}f}"
    return text


def counted(n: int, noun: str, plural: str = "") -> str:
    """`n` with the noun in the number it takes: ``counted(1, "task")`` is ``"1 task"``,
    ``counted(3141, "turn")`` ``"3,141 turns"``; `plural` where adding "s" is wrong
    (``counted(2, "mismatch", "mismatches")``)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


DEBUG_ENV = "SIMWORLD_DEBUG"
"""Set (to anything) for the traceback of a bug that a command reports in one line."""


class EpisodeCrash(SimworldError):
    """An episode raised an unexpected exception (a bug in a world, task or agent): run, replayed,
    forked or scored. One line naming the episode (and a crashing tool with its call); exit status 1."""

    exit_code = 1


def exception_text(exc: BaseException) -> str:
    """``Type: message`` of `exc` on one line (its type alone when the message is empty)."""
    return f"{type(exc).__name__}: {one_line(exc)}" if str(exc).strip() else type(exc).__name__


def bug_text(exc: BaseException, text: str | None = None) -> str:
    """`text` (by default :func:`exception_text`) for a one-line error of an exception that is a bug
    (a plugin's or simworld's). With ``$SIMWORLD_DEBUG`` set the traceback is printed to stderr
    first; otherwise the text ends by saying how to get it."""
    import os

    if text is None:
        text = exception_text(exc)
    if os.environ.get(DEBUG_ENV):
        import traceback

        traceback.print_exception(exc)
        return text
    return f"{text} (set {DEBUG_ENV}=1 for the traceback)"
