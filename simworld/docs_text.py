"""One-line summaries of docstrings and descriptions: the entries of `simworld list` and the
descriptions of names in `simworld schema`."""

from __future__ import annotations

import inspect
import re
from typing import Any

_POINTER = re.compile(r"\s*\(see the module docstring\)")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def own_docstring(obj: Any) -> str:
    """The docstring a class declares itself (a base class's would describe another name), or an
    object's docstring; cleaned of indentation, "" when there is none."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def summary(text: str, width: int | None = None) -> str:
    """The first paragraph of `text` on one line, without a pointer to the rest of it ("(see the
    module docstring)"); with `width`, at most that many characters, cut at a word and ending in "…"."""
    first = _POINTER.sub("", " ".join(_PARAGRAPH_BREAK.split(text.strip(), 1)[0].split()))
    return first if width is None else clip(first, width)


def doc_summary(obj: Any, width: int | None = None) -> str:
    """`summary` of the object's own docstring."""
    return summary(own_docstring(obj), width)


def clip(text: str, width: int) -> str:
    """`text`, or its first words that fit in `width` characters with "…" after them (a word longer
    than that is cut inside)."""
    if len(text) <= width:
        return text
    head = text[: width - 1]
    cut = head.rsplit(" ", 1)[0] if " " in head and text[width - 1] != " " else head
    return cut.rstrip(" ,;:-(") + "…"
