"""The support oracle reads every request the customer simulator can phrase, with any one keyboard
slip the simulator can make in any of its words: a slip must never hide or change the intent."""

from __future__ import annotations

import re

import pytest

from simworld.agents.retail import customer, nlu, text

TOPICS = ("status", "total", "items", "tracking")


def slips(word: str) -> set[str]:
    """Every result of `text.typo` on `word`: swap, drop, double or a neighbouring key, never at
    the first or last letter."""
    out = set()
    for i in range(1, len(word) - 1):
        out |= {word[:i] + word[i + 1] + word[i] + word[i + 2:], word[:i] + word[i + 1:], word[:i] + word[i] + word[i:]}
        out |= {word[:i] + ch + word[i + 1:] for ch in text._NEIGHBOURS.get(word[i].lower(), "")}
    out.discard(word)
    return out


def openings() -> list[tuple[str, str]]:
    found = []
    for key, forms in customer._BANK.items():
        if key.startswith("open."):
            for template in forms["short"] + forms["long"]:
                found += [(key[5:], template.replace("{topics}", t)) for t in TOPICS] if "{topics}" in template \
                    else [(key[5:], template)]
    return found


@pytest.mark.parametrize(("want", "request_text"), openings())
def test_one_slip_in_any_word_keeps_the_request_intent(want, request_text):
    base = nlu.intent(request_text)
    assert base in (want, None if want == "order_status" else want)  # a status question may name no keyword
    lost = []
    for m in re.finditer(r"[A-Za-z]{4,}", request_text):
        for slip in slips(m.group()):
            got = nlu.intent(request_text[:m.start()] + slip + request_text[m.end():])
            if got != base:
                lost.append(f"{slip!r} -> {got}")
    assert not lost, f"{request_text!r}: {len(lost)} slips change the intent, e.g. {lost[:3]}"
