"""Seeded phrasing for scripted retail agents: templates, speaking styles, typos.

Templates are plain strings with ``{slot}`` placeholders, compiled once at import. A slot holds a
fact (an id, an e-mail, a name, an option value, an amount): styles and typos touch only the
literal text around slots, so facts reach the other side verbatim.

Randomness comes from :class:`Dice`, a buffered view of the agent's seeded ``np.random.Generator``
(one NumPy call per 256 draws instead of one per draw).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

STYLES = ("short", "long", "sloppy")


class Dice:
    """Buffered uniform draws from a seeded generator; deterministic for a given seed."""

    __slots__ = ("_rng", "_buf", "_i")

    def __init__(self, rng: np.random.Generator, block: int = 256) -> None:
        self._rng = rng
        self._buf: list[float] = rng.random(block).tolist()
        self._i = 0

    def random(self) -> float:
        if self._i == len(self._buf):
            self._buf = self._rng.random(len(self._buf)).tolist()
            self._i = 0
        x = self._buf[self._i]
        self._i += 1
        return x

    def below(self, n: int) -> int:
        return int(self.random() * n)

    def pick(self, seq: Sequence):
        return seq[int(self.random() * len(seq))]

    def chance(self, p: float) -> bool:
        return p > 0.0 and self.random() < p


# ----------------------------------------------------------------------------------------------
# Sloppy writing: lower case, chat abbreviations, little punctuation (literal text only)

_ABBREVIATIONS = [
    (re.compile(r"\bthank you\b"), "thx"), (re.compile(r"\bthanks\b"), "thx"), (re.compile(r"\bplease\b"), "pls"),
    (re.compile(r"\byou\b"), "u"), (re.compile(r"\byour\b"), "ur"), (re.compile(r"\bi'm\b"), "im"),
    (re.compile(r"\bdon't\b"), "dont"), (re.compile(r"\bdoesn't\b"), "doesnt"), (re.compile(r"\bcan't\b"), "cant"),
    (re.compile(r"\bi'd\b"), "id"), (re.compile(r"\bthat's\b"), "thats"), (re.compile(r"\bit's\b"), "its"),
    (re.compile(r"\bbecause\b"), "bc"), (re.compile(r"\bokay\b"), "ok"), (re.compile(r"\bi've\b"), "ive"),
]
_SLOPPY_PUNCT = re.compile(r"[.!]+(?=\s|$)|,(?=\s)")


def sloppify(text: str) -> str:
    """The sloppy rendering of a literal template piece (deterministic; typos come separately)."""
    out = text.lower()
    for pattern, repl in _ABBREVIATIONS:
        out = pattern.sub(repl, out)
    return _SLOPPY_PUNCT.sub("", out)


# ----------------------------------------------------------------------------------------------
# Typos

_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_KEYBOARD_ROWS):
    for _c, _ch in enumerate(_row):
        near = [_row[j] for j in (_c - 1, _c + 1) if 0 <= j < len(_row)]
        for _dr in (-1, 1):
            if 0 <= _r + _dr < len(_KEYBOARD_ROWS):
                other = _KEYBOARD_ROWS[_r + _dr]
                near += [other[j] for j in (_c - 1, _c) if 0 <= j < len(other)]
        _NEIGHBOURS[_ch] = "".join(near)

_TYPO_WORD = re.compile(r"[A-Za-z]{4,}")


def typo(word: str, dice: Dice) -> str:
    """One keyboard slip inside `word`: swap, drop, double or hit a neighbouring key."""
    n = len(word)
    i = 1 + dice.below(n - 2)  # keep first and last letters: words stay readable
    kind = dice.below(4)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    if kind == 2:
        return word[:i] + word[i] + word[i:]
    near = _NEIGHBOURS.get(word[i].lower())
    if not near:
        return word[:i] + word[i + 1:]
    ch = near[dice.below(len(near))]
    return word[:i] + (ch.upper() if word[i].isupper() else ch) + word[i + 1:]


def add_typos(text: str, rate: float, dice: Dice) -> str:
    """Each word of four letters or more gets a typo with probability `rate`.

    Draws how many words get one (binomial, by inverting its CDF with one uniform draw) and then
    which: the same distribution as a coin per word, at one draw for the common typo-free piece.
    """
    if rate <= 0.0 or not text:
        return text
    n = len(_TYPO_WORD.findall(text))
    if n == 0:
        return text
    if rate >= 1.0:
        k = n
    else:
        u = dice.random()
        k, p_k = 0, (1.0 - rate) ** n
        cdf = p_k
        while u > cdf and k < n:
            p_k *= (n - k) / (k + 1) * rate / (1.0 - rate)
            k += 1
            cdf += p_k
    if k == 0:
        return text
    chosen: set[int] = set()
    while len(chosen) < k:
        chosen.add(dice.below(n))
    count = iter(range(n))
    return _TYPO_WORD.sub(lambda m: typo(m.group(), dice) if next(count) in chosen else m.group(), text)


# ----------------------------------------------------------------------------------------------
# Templates

_SLOT = re.compile(r"\{(\w+)\}")


class Template:
    """A compiled phrase: literal pieces (styled, typo-prone) around verbatim slots."""

    __slots__ = ("pieces", "sloppy", "slots")

    def __init__(self, text: str) -> None:
        self.pieces = tuple(_SLOT.split(text))  # literal, slot, literal, slot, ..., literal
        self.sloppy = tuple(sloppify(p) if i % 2 == 0 else p for i, p in enumerate(self.pieces))
        self.slots = frozenset(self.pieces[1::2])

    def render(self, values: Mapping[str, str] | None = None, dice: Dice | None = None, sloppy: bool = False,
               typo_rate: float = 0.0) -> str:
        pieces = self.sloppy if sloppy else self.pieces
        if len(pieces) == 1 and typo_rate <= 0.0:
            return pieces[0]
        out = []
        for i, piece in enumerate(pieces):
            if i % 2:
                out.append(str(values[piece]))  # type: ignore[index]
            elif typo_rate > 0.0 and dice is not None:
                out.append(add_typos(piece, typo_rate, dice))
            else:
                out.append(piece)
        return "".join(out)


def compile_bank(bank: Mapping[str, Sequence[str]]) -> dict[str, tuple[Template, ...]]:
    """Compile ``{key: [template text, ...]}`` into ``{key: (Template, ...)}``."""
    return {key: tuple(Template(t) for t in texts) for key, texts in bank.items()}


def join_list(parts: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def money(value: float) -> str:
    """Dollars with two decimals and thousands separators: 1234.5 -> '$1,234.50'."""
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.2f}"
