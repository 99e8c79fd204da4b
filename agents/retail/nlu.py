"""Reading retail conversations: ids, identities, intents, items, addresses, yes and no.

Shared by the scripted support oracle (which reads the customer) and the customer simulator (which
reads the support side). Facts (ids, e-mails, names, option values) are matched exactly; the few
keywords that carry meaning in free text (intents, cancellation reasons, yes/no) also match with
one typo, because the customer simulator makes typos in everything but facts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

ORDER_ID = re.compile(r"(?<![\w])#?W(\d{7})(?!\d)")
ITEM_ID = re.compile(r"(?<![\d#W])\d{10}(?!\d)")
PAYMENT_ID = re.compile(r"\b(?:credit_card|paypal|gift_card)_\d{7}\b")
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
ZIP = re.compile(r"(?<![\d.,$])\d{5}(?!\d|[.,]\d)")
_NAME_LEAD = re.compile(r"(?i:\bname(?:'s| is)?|\bi'?m|\bi am|\bthis is|\bit's|\bits)[:,]?\s+"
                        r"([A-Z][a-z'-]+)\s+([A-Z][a-z'-]+)")
_NAME_PAIR = re.compile(r"\b([A-Z][a-z'-]+)\s+([A-Z][a-z'-]+)\b")
LAST_FOUR = re.compile(r"(?<!\d)(\d{4})(?!\d)")
_ADDRESS = re.compile(r"(?<![\w#.$])(\d+(?: [A-Za-z][A-Za-z.'-]*)+),\s*(?:([^,\n]+?),\s*)?([A-Za-z][^,\n]*?),\s*([A-Z]{2})\s+"
                      r"(\d{5})(?:,\s*(USA|United States))?(?![\w])")
_WORD = re.compile(r"[A-Za-z']+")


def order_ids(text: str) -> list[str]:
    """Order ids in `text`, normalised to '#W1234567', in order of appearance, without repeats."""
    out: list[str] = []
    for m in ORDER_ID.finditer(text):
        oid = "#W" + m.group(1)
        if oid not in out:
            out.append(oid)
    return out


def email(text: str) -> str | None:
    m = EMAIL.search(text)
    return m.group().rstrip(".") if m else None


def name_and_zip(text: str) -> tuple[str, str, str] | None:
    """(first, last, zip) when the text gives a capitalised full name and a five-digit zip."""
    z = ZIP.search(text)
    if z is None:
        return None
    m = _NAME_LEAD.search(text)
    if m is None:
        for cand in _NAME_PAIR.finditer(text):
            if cand.group(1).lower() not in _NOT_NAMES and cand.group(2).lower() not in _NOT_NAMES:
                m = cand
                break
    if m is None:
        return None
    return m.group(1), m.group(2), z.group()


_NOT_NAMES = frozenset("hi hello hey my name the i sure yes it's its this of and zip code sorry thanks please "
                       "okay ok well".split())


def address(text: str) -> dict[str, str] | None:
    """A postal address written '1 Main Street, Suite 2, Austin, TX 78701, USA' (second line optional)."""
    m = _ADDRESS.search(text)
    if m is None:
        return None
    return {"address1": m.group(1).strip(), "address2": (m.group(2) or "").strip(), "city": m.group(3).strip(),
            "state": m.group(4), "country": "USA", "zip": m.group(5)}


def format_address(addr: dict[str, str]) -> str:
    parts = [addr["address1"]]
    if addr.get("address2"):
        parts.append(addr["address2"])
    parts += [addr["city"], f"{addr['state']} {addr['zip']}", addr.get("country") or "USA"]
    return ", ".join(parts)


# ----------------------------------------------------------------------------------------------
# Phrase cues: plain substring search with word boundaries (several times faster than a regex
# alternation whose branches all start with \b)

_ALTERNATIVES = re.compile(r"\(([^()]*\|[^()]*)\)")


def expand(pattern: str) -> list[str]:
    """'(swap|change) (it|them) for' -> ['swap it for', 'swap them for', 'change it for', ...]."""
    m = _ALTERNATIVES.search(pattern)
    if m is None:
        return [" ".join(pattern.split())]
    head, tail = pattern[:m.start()], pattern[m.end():]
    return [p for alt in m.group(1).split("|") for p in expand(head + alt + tail)]


_TOKEN = re.compile(r"[\w'/()-]+")


def words(low: str) -> set[str]:
    """The word tokens of a lower-case text."""
    return set(_TOKEN.findall(low))


class Cues:
    """Named sets of phrases, found as whole words in a lower-case text in one pass.

    ``Cues({"confirm": ["shall i", "is that (correct|right)"], ...}).find(text)`` gives the names
    whose phrases occur. Phrases are indexed by their first word, so a search only tries phrases
    whose first word the text has; a phrase ending in '*' matches as a prefix ('authenticat*').
    """

    __slots__ = ("by_first", "prefixes")

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.by_first: dict[str, list[tuple[str, str]]] = {}
        self.prefixes: list[tuple[str, str]] = []
        for name, patterns in table.items():
            for pattern in patterns:
                for phrase in expand(pattern):
                    if phrase.endswith("*"):
                        self.prefixes.append((name, phrase[:-1]))
                    else:
                        self.by_first.setdefault(phrase.split(" ", 1)[0], []).append((name, phrase))

    def find(self, low: str) -> set[str]:
        found: set[str] = set()
        for first in self.by_first.keys() & words(low):
            for name, phrase in self.by_first[first]:
                if name not in found and _find_whole(low, phrase, False):
                    found.add(name)
        for name, phrase in self.prefixes:
            if name not in found and _find_whole(low, phrase, True):
                found.add(name)
        return found


def _find_whole(low: str, phrase: str, prefix: bool) -> bool:
    n = len(low)
    i = low.find(phrase)
    while i >= 0:
        end = i + len(phrase)
        if (i == 0 or not low[i - 1].isalnum()) and (prefix or end == n or not low[end].isalnum()):
            return True
        i = low.find(phrase, i + 1)
    return False


# ----------------------------------------------------------------------------------------------
# Keywords with typos


KEYWORDS = """
cancel cancelled canceled cancelling canceling cancellation return returning returned refund refunded exchange
exchanging swap
change changed modify update switch address shipping default moved payment method status track tracking
total items where mistake accident accidentally accidental longer anymore needed need wrong correct right
proceed ahead sure yeah nope please thanks everything nothing instead profile account order orders
delivered pending happened options different another received item option size color
""".split()


@lru_cache(maxsize=1)
def _typo_map() -> dict[str, str]:
    """Every one-edit misspelling of a keyword (4+ letters) -> the keyword."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    known = set(KEYWORDS)
    out: dict[str, str] = {}
    for word in KEYWORDS:
        if len(word) < 4:
            continue
        splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
        variants = {a + b[1:] for a, b in splits if b}
        variants |= {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
        variants |= {a + c + b[1:] for a, b in splits if b for c in letters}
        variants |= {a + c + b for a, b in splits for c in letters}
        for v in variants:
            if v not in known and v not in out:
                out[v] = word
    return out


def normalize(text: str) -> str:
    """Lower-cased text with misspelt keywords restored ('cancle my ordr' -> 'cancel my order')."""
    fixes = _typo_map()
    low = text.lower()
    if fixes.keys().isdisjoint(_WORD.findall(low)):
        return low  # the common case: nothing misspelt
    return _WORD.sub(lambda m: fixes.get(m.group(), m.group()), low)


def search_fuzzy(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """`pattern` (lower-case) on the text, then on its typo-normalised form."""
    low = text.lower()
    return pattern.search(low) or pattern.search(normalize(text))


# ----------------------------------------------------------------------------------------------
# Intents, reasons, yes/no

_INTENTS: list[tuple[str, re.Pattern[str]]] = [
    ("cancel", re.compile(r"\bcancel")),
    ("exchange", re.compile(r"\bexchang|\bswap\b.*\b(?:received|delivered|got)\b")),
    ("return", re.compile(r"\breturn|\bsend (?:it|them|some \w+) back\b")),
    ("modify_user_address", re.compile(r"\b(?:default|profile|account)(?: \w+)? address\b|\baddress (?:on|in) "
                                       r"(?:my )?(?:file|profile|account)\b|\bi (?:have )?moved\b")),
    ("modify_address", re.compile(r"\baddress\b")),
    ("modify_payment", re.compile(r"\bpayment\b|\bpay (?:for it )?with\b|\bcharge (?:it|the order) to\b|"
                                  r"\bhow i pay\b")),
    ("modify_items", re.compile(r"\b(?:change|modify|switch|swap|update)\b.*\b(?:items?|options?|size|color|"
                                r"colou?r|variant|version)\b|\bdifferent (?:options?|size|color|variant)\b")),
    ("order_status", re.compile(r"\bstatus\b|\bwhere(?:'s| is)\b|\btrack|\btotal\b|\bwhat(?:'s| is| was)? in\b|"
                                r"\bwhat items\b|\bcheck (?:on )?(?:an|my|one)\b|\b(?:the|its) items\b|\blook up\b")),
]


def intent(text: str) -> str | None:
    """The retail intent a customer message asks for (the first that matches), or None."""
    low = normalize(text)  # typo-tolerant from the start: a misspelt keyword must not let another intent win
    for name, pattern in _INTENTS:
        if pattern.search(low):
            return name
    return None


_STATUS_TOPICS = [("status", re.compile(r"\bstatus\b|\bwhere(?:'s| is)\b|\bcheck (?:on )?\b")),
                  ("total", re.compile(r"\btotal\b|\bhow much\b|\bcost\b")),
                  ("items", re.compile(r"\bitems\b|\bwhat(?:'s| is| was)? in\b")),
                  ("tracking", re.compile(r"\btrack"))]


def status_topics(text: str) -> list[str]:
    """What an order-status question asks about: subset of status/total/items/tracking."""
    low = text.lower()
    found = [name for name, p in _STATUS_TOPICS if p.search(low)]
    if not found:
        norm = normalize(text)
        found = [name for name, p in _STATUS_TOPICS if p.search(norm)]
    return found


_REASONS = [("ordered by mistake", re.compile(r"\bmistake|\baccident|\bby error\b|\bwrong (?:order|item|thing)\b|"
                                              r"\bdidn't mean to\b")),
            ("no longer needed", re.compile(r"\bno longer need|\bneed (?:it|them|this|that) any ?more|\bnot need|"
                                            r"\bdon't need|\bdont need|\bchanged my mind\b|\bdo not need\b|"
                                            r"\bnot needed\b|\bno need\b"))]


def cancel_reason(text: str) -> str | None:
    """'no longer needed' or 'ordered by mistake' from a customer's words, or None."""
    low = normalize(text)
    for reason, p in _REASONS:
        if p.search(low):
            return reason
    return None


_YES = re.compile(r"^\W*(?:yes|yeah|yep|yup|sure|correct|right|confirm(?:ed)?|ok(?:ay)?|go ahead|please do|"
                  r"please proceed|proceed|that's (?:right|correct)|absolutely|definitely|do it)\b")
_NO = re.compile(r"^\W*(?:no|nope|nah|not (?:quite|right|correct)|wrong|that's (?:not|wrong)|wait|incorrect)\b")


def yes_no(text: str) -> bool | None:
    """True for a confirmation, False for a refusal, None when the reply is neither."""
    low = normalize(text)
    if _NO.search(low):
        return False
    if _YES.search(low):
        return True
    return None


# ----------------------------------------------------------------------------------------------
# Products and options in free text


@lru_cache(maxsize=8192)
def phrase_pattern(phrase: str) -> re.Pattern[str]:
    """Whole-phrase, case-insensitive match ('M' does not match inside 'I'm' or 'XL')."""
    return re.compile(r"(?<![\w'.\-])" + re.escape(phrase.lower()) + r"(?:s|es)?(?![\w'\-])")


@lru_cache(maxsize=8192)
def _whole_name_pattern(name: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w'\-])(?i:" + re.escape(name) + r")(?![\w'\-])(?!\s+[A-Z0-9])")


def names_product(text: str, name: str) -> bool:
    """Does `text` name the product `name` itself ('Laptop' is not named by 'the Laptop Series 2')?"""
    return _whole_name_pattern(name).search(text) is not None


def has_phrase(text_lower: str, phrase: str) -> bool:
    return phrase_pattern(phrase).search(text_lower) is not None


def mentions(text: str, names: Iterable[str]) -> list[tuple[str, int, int]]:
    """Non-overlapping mentions of `names` in `text` as (name, start, end), longest names first, in order."""
    low = text.lower()
    taken: list[tuple[int, int]] = []
    found: list[tuple[str, int, int]] = []
    for name in sorted(set(names), key=len, reverse=True):
        for m in phrase_pattern(name).finditer(low):
            s, e = m.span()
            if any(s < te and ts < e for ts, te in taken):
                continue
            taken.append((s, e))
            found.append((name, s, e))
    found.sort(key=lambda x: x[1])
    return found


def segments(text: str, names: Iterable[str]) -> list[tuple[str, str]]:
    """(name, the lower-case text after that mention up to the next one) for each product mention.

    The name itself is left out: 'Bluetooth Speaker' must not read as the option 'bluetooth'.
    """
    low = text.lower()
    found = mentions(text, names)
    return [(name, low[e:found[i + 1][1] if i + 1 < len(found) else len(low)]) for i, (name, _, e) in enumerate(found)]


def best_options_match(segment_lower: str, candidates: Sequence[dict[str, str]]) -> int | None:
    """Index of the candidate option set fully stated in the segment (the longest when several are)."""
    best, best_len = None, -1
    for i, options in enumerate(candidates):
        values = options.values()
        if all(has_phrase(segment_lower, v) for v in values):
            size = sum(len(v) for v in values)
            if size > best_len:
                best, best_len = i, size
    return best
