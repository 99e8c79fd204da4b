"""Fixed vocabularies of the retail world: what the generator draws from (names, places, products,
options), and how a conversation is read for which way money goes (:func:`money_claims`: one
reading for the world's check of the outputs an agent states and for the customer simulator's check
of a proposed change, so the two can never disagree about a sentence), and what an amount said
without a direction is (:func:`bare_amounts`: a balance, an order's total, a price, or the money of
the change).
"""

from __future__ import annotations

import re
from typing import Literal

FIRST_NAMES = """
aarav ada aisha alex amelia anya arjun ava ben bianca carlos chen chloe daniel diego dmitri elena eli
emma ethan fatima felix fiona gabriel grace hana harper hassan ines isabella ivan jack james jin
juan julia kai kenji lara layla leo liam lucas luna maria mason mei mia mohamed nadia noah nora
olivia omar oscar priya rafael raj rosa ruby sam sara sofia sophia tara theo tomas uma victor yara
yusuf zoe anna bruno clara david emily finn hugo iris jonas kira lena marco nina owen paula quinn
rhea simon tess vera will xena yosef zara
""".split()

LAST_NAMES = """
adams ahmed ali anderson brown chen clark cohen davis diaz evans fischer garcia gonzalez gray green
hall harris hernandez hill ito jackson johnson jones kim king kowalski lee lewis lopez martin
martinez miller moore morales muller nakamura nguyen novak oconnor olsen patel perez petrov
phillips ramirez reyes roberts robinson rossi sanchez santos schmidt scott silva singh smith
sullivan suzuki taylor thomas thompson torres walker white williams wilson wong wright yamamoto
young zhang baker bell campbell carter collins cook cooper edwards foster hughes kelly mitchell
murphy nelson parker powell price reed rivera russell stewart ward watson wood
""".split()

# (city, state, first three zip digits): a zip is the prefix followed by two random digits.
CITIES = [
    ("Austin", "TX", 787), ("Houston", "TX", 770), ("Dallas", "TX", 752), ("Denver", "CO", 802),
    ("Seattle", "WA", 981), ("Portland", "OR", 972), ("San Francisco", "CA", 941), ("Los Angeles", "CA", 900),
    ("San Diego", "CA", 921), ("Phoenix", "AZ", 850), ("Chicago", "IL", 606), ("New York", "NY", 100),
    ("Brooklyn", "NY", 112), ("Boston", "MA", 21), ("Philadelphia", "PA", 191), ("Pittsburgh", "PA", 152),
    ("Atlanta", "GA", 303), ("Miami", "FL", 331), ("Orlando", "FL", 328), ("Charlotte", "NC", 282),
    ("Nashville", "TN", 372), ("Columbus", "OH", 432), ("Detroit", "MI", 482), ("Minneapolis", "MN", 554),
    ("Milwaukee", "WI", 532), ("Kansas City", "MO", 641), ("Las Vegas", "NV", 891), ("Salt Lake City", "UT", 841),
    ("Albuquerque", "NM", 871), ("Baltimore", "MD", 212), ("Richmond", "VA", 232), ("Raleigh", "NC", 276),
    ("Indianapolis", "IN", 462), ("Louisville", "KY", 402), ("New Orleans", "LA", 701), ("Omaha", "NE", 681),
    ("Tucson", "AZ", 857), ("Sacramento", "CA", 958), ("Boise", "ID", 837), ("Madison", "WI", 537),
]

STREETS = """
Maple Oak Pine Cedar Elm Willow Birch Spruce Chestnut Walnut Hickory Magnolia Laurel Aspen Sycamore
Lake Hill River Park Forest Meadow Sunset Highland Valley Ridge Spring Main Market Church Mill Union
Washington Lincoln Jefferson Franklin Madison Adams Jackson Monroe
""".split()
STREET_SUFFIXES = ["Street", "Avenue", "Drive", "Lane", "Road", "Court", "Place", "Boulevard"]

CARD_BRANDS = ["visa", "mastercard", "amex", "discover"]

# option name -> values
OPTIONS: dict[str, list[str]] = {
    "color": ["black", "white", "red", "blue", "green", "gray", "silver", "gold", "pink", "purple", "brown",
              "navy", "beige", "orange", "yellow"],
    "size": ["XS", "S", "M", "L", "XL", "XXL"],
    "shoe size": ["6", "7", "8", "9", "10", "11", "12"],
    "material": ["cotton", "polyester", "leather", "mesh", "wood", "metal", "plastic", "glass", "bamboo",
                 "stainless steel", "fabric", "nylon"],
    "capacity": ["250ml", "500ml", "750ml", "1L", "1.5L", "2L"],
    "storage": ["32GB", "64GB", "128GB", "256GB", "512GB", "1TB"],
    "screen size": ["7-inch", "8-inch", "10-inch", "11-inch", "13-inch", "15-inch", "17-inch"],
    "style": ["classic", "modern", "sport", "vintage", "minimalist", "rugged"],
    "power": ["battery", "AC adapter", "USB", "solar", "rechargeable"],
    "connectivity": ["wired", "bluetooth", "wireless", "Wi-Fi", "Wi-Fi + cellular"],
    "weight": ["5 lbs", "10 lbs", "15 lbs", "20 lbs", "25 lbs", "30 lbs"],
    "pieces": ["300", "500", "1000", "1500", "2000"],
    "resolution": ["720p", "1080p", "2K", "4K", "5K"],
    "scent": ["citrus", "lavender", "rose", "vanilla", "sandalwood", "ocean"],
    "pattern": ["solid", "striped", "checkered", "floral", "geometric"],
    "compatibility": ["Apple", "Android", "universal", "Google", "Amazon"],
    "length": ["25ft", "50ft", "75ft", "100ft"],
    "type": ["standard", "pro", "deluxe", "compact", "travel"],
}

# product name -> option names, the price band of its variants in dollars, and for some options
# the values that make sense for this product (others: every value of the option). A kettle is
# glass or steel, not leather; a smartphone costs hundreds, a water bottle tens. (Where the values
# allow fewer than `variants_per_product` combinations, the product has them all.)
PRODUCTS: list[tuple[str, list[str], tuple[int, int], dict[str, list[str]]]] = [
    ("Action Camera", ["resolution", "color", "storage"], (150, 450), {"storage": ["32GB", "64GB", "128GB", "256GB"]}),
    ("Air Purifier", ["type", "color", "power"], (80, 400), {"color": ["white", "black", "gray", "silver"],
                                                             "power": ["AC adapter", "USB"]}),
    ("Backpack", ["color", "size", "material"], (25, 150), {"material": ["polyester", "nylon", "leather", "fabric",
                                                                        "cotton"]}),
    ("Bicycle", ["size", "color", "type"], (250, 1500), {"size": ["S", "M", "L", "XL"]}),
    ("Bluetooth Speaker", ["color", "connectivity", "power"], (30, 250),
     {"connectivity": ["bluetooth", "wireless", "Wi-Fi"], "power": ["battery", "rechargeable", "AC adapter"]}),
    ("Bookshelf", ["material", "color", "size"], (60, 400),
     {"material": ["wood", "metal", "bamboo", "glass"], "color": ["black", "white", "brown", "gray", "beige", "navy"],
      "size": ["S", "M", "L", "XL"]}),
    ("Coffee Maker", ["color", "capacity", "type"], (30, 250), {"capacity": ["750ml", "1L", "1.5L", "2L"]}),
    ("Cycling Helmet", ["size", "color", "style"], (40, 200), {"size": ["S", "M", "L", "XL"]}),
    ("Desk Lamp", ["color", "power", "style"], (20, 120), {"power": ["AC adapter", "USB", "battery", "rechargeable"]}),
    ("Digital Camera", ["resolution", "color", "storage"], (300, 1500),
     {"color": ["black", "silver", "gray", "white", "red", "blue"], "storage": ["32GB", "64GB", "128GB", "256GB"]}),
    ("Dumbbell Set", ["weight", "material", "type"], (30, 300), {"material": ["metal", "plastic", "stainless steel"]}),
    ("E-Reader", ["screen size", "storage", "connectivity"], (90, 300),
     {"screen size": ["7-inch", "8-inch", "10-inch", "11-inch"], "storage": ["32GB", "64GB", "128GB"],
      "connectivity": ["Wi-Fi", "Wi-Fi + cellular"]}),
    ("Electric Kettle", ["capacity", "color", "material"], (25, 120),
     {"capacity": ["1L", "1.5L", "2L"], "material": ["stainless steel", "glass", "plastic"]}),
    ("Electric Toothbrush", ["color", "power", "type"], (25, 200), {"power": ["battery", "rechargeable", "USB"]}),
    ("Espresso Machine", ["color", "capacity", "type"], (150, 900), {"capacity": ["250ml", "500ml", "1L", "1.5L",
                                                                                  "2L"]}),
    ("Fleece Jacket", ["size", "color", "pattern"], (40, 150), {}),
    ("Gaming Mouse", ["color", "connectivity", "style"], (20, 150), {"connectivity": ["wired", "wireless",
                                                                                      "bluetooth"]}),
    ("Garden Hose", ["length", "material", "color"], (20, 90),
     {"material": ["plastic", "metal", "fabric", "nylon"], "color": ["green", "black", "blue", "gray", "orange",
                                                                     "yellow"]}),
    ("Grill", ["type", "color", "style"], (150, 900), {"color": ["black", "silver", "red", "gray", "blue"]}),
    ("Headphones", ["color", "connectivity", "type"], (30, 450), {"connectivity": ["wired", "bluetooth",
                                                                                   "wireless"]}),
    ("Hiking Boots", ["shoe size", "material", "color"], (70, 250),
     {"material": ["leather", "fabric", "nylon", "mesh"], "color": ["black", "brown", "gray", "green", "navy",
                                                                    "beige", "orange"]}),
    ("Indoor Security Camera", ["resolution", "connectivity", "power"], (30, 200),
     {"resolution": ["720p", "1080p", "2K", "4K"], "connectivity": ["wired", "Wi-Fi", "wireless"],
      "power": ["AC adapter", "battery", "USB"]}),
    ("Jigsaw Puzzle", ["pieces", "pattern", "style"], (10, 40), {}),
    ("LED Light Bulb", ["type", "color", "connectivity"], (5, 40),
     {"color": ["white", "yellow", "blue", "red", "green", "purple"], "connectivity": ["bluetooth", "Wi-Fi",
                                                                                       "wireless"]}),
    ("Laptop", ["screen size", "storage", "color"], (450, 2500),
     {"screen size": ["13-inch", "15-inch", "17-inch"], "storage": ["256GB", "512GB", "1TB"],
      "color": ["black", "silver", "gray", "white", "gold", "navy"]}),
    ("Luggage Set", ["size", "color", "material"], (80, 500),
     {"size": ["S", "M", "L", "XL"], "material": ["polyester", "nylon", "leather", "plastic"]}),
    ("Makeup Kit", ["type", "scent", "color"], (20, 120), {}),
    ("Mechanical Keyboard", ["connectivity", "color", "style"], (50, 250), {"connectivity": ["wired", "bluetooth",
                                                                                             "wireless"]}),
    ("Notebook", ["size", "pattern", "material"], (5, 30), {"size": ["XS", "S", "M", "L"],
                                                            "material": ["leather", "fabric", "plastic", "bamboo"]}),
    ("Office Chair", ["material", "color", "style"], (100, 700), {"material": ["leather", "mesh", "fabric",
                                                                              "plastic"]}),
    ("Patio Umbrella", ["size", "color", "pattern"], (50, 300), {"size": ["S", "M", "L", "XL"]}),
    ("Perfume", ["scent", "type", "style"], (30, 200), {}),
    ("Pet Bed", ["size", "color", "material"], (25, 150), {"material": ["cotton", "polyester", "fabric", "nylon"]}),
    ("Portable Charger", ["power", "color", "compatibility"], (20, 100), {"power": ["USB", "solar", "rechargeable"]}),
    ("Running Shoes", ["shoe size", "color", "material"], (60, 200), {"material": ["mesh", "fabric", "nylon",
                                                                                  "leather"]}),
    ("Skateboard", ["material", "pattern", "size"], (40, 250), {"material": ["wood", "bamboo", "plastic"],
                                                                "size": ["S", "M", "L"]}),
    ("Smart Thermostat", ["compatibility", "color", "power"], (100, 300),
     {"color": ["white", "black", "silver", "gray"], "power": ["battery", "AC adapter"]}),
    ("Smart Watch", ["color", "connectivity", "style"], (150, 800), {"connectivity": ["bluetooth", "Wi-Fi",
                                                                                      "Wi-Fi + cellular"]}),
    ("Smartphone", ["color", "storage", "type"], (300, 1500), {"storage": ["64GB", "128GB", "256GB", "512GB", "1TB"],
                                                               "type": ["standard", "pro", "compact"]}),
    ("Sneakers", ["shoe size", "color", "style"], (50, 180), {}),
    ("Sunglasses", ["color", "style", "material"], (20, 250), {"material": ["plastic", "metal", "wood", "bamboo"]}),
    ("Tablet", ["screen size", "storage", "color"], (200, 1300),
     {"screen size": ["8-inch", "10-inch", "11-inch", "13-inch"], "storage": ["64GB", "128GB", "256GB", "512GB",
                                                                              "1TB"]}),
    ("Tea Kettle", ["material", "capacity", "color"], (20, 100), {"material": ["stainless steel", "glass", "metal"],
                                                                 "capacity": ["1L", "1.5L", "2L"]}),
    ("Vacuum Cleaner", ["type", "power", "color"], (80, 600), {"power": ["battery", "AC adapter", "rechargeable"]}),
    ("Wall Clock", ["style", "color", "material"], (15, 120), {"material": ["wood", "metal", "plastic", "glass",
                                                                           "bamboo"]}),
    ("Water Bottle", ["capacity", "color", "material"], (10, 50),
     {"capacity": ["250ml", "500ml", "750ml", "1L"], "material": ["stainless steel", "plastic", "glass"]}),
    ("Wireless Earbuds", ["color", "compatibility", "power"], (30, 300), {"power": ["rechargeable", "battery"]}),
    ("Wristwatch", ["style", "material", "color"], (50, 600), {"material": ["leather", "metal", "stainless steel",
                                                                           "plastic"]}),
    ("Yoga Mat", ["material", "color", "pattern"], (15, 90), {"material": ["cotton", "fabric", "plastic"]}),
    ("T-Shirt", ["size", "color", "material"], (10, 50), {"material": ["cotton", "polyester"]}),
]

STATUSES = ["pending", "processed", "delivered", "cancelled", "pending (item modified)", "return requested",
            "exchange requested"]
CANCEL_REASONS = ["", "no longer needed", "ordered by mistake"]
PAYMENT_KINDS = ["credit_card", "paypal", "gift_card"]
TRANSACTION_TYPES = ["payment", "refund"]


# ----------------------------------------------------------------------------------------------
# Reading money in what a support agent says

Way = Literal["charge", "refund"]

# The verbs that move money one way, each read in every form ('deduct', 'deducts', 'deducted',
# 'deducting'), and the nouns that name such a movement ('a charge of', 'the refund', 'a deduction').
# Whole words only, so an adjective states nothing ('refundable', 'deductible', 'non-refundable'), nor
# a 'Portable Charger'; nor a form that names a thing rather than money moving ('credit card', 'debit
# card', 'billing address', 'refund policy', 'charging cable') or a bill that is an invoice ('your
# bill'). Where 'pay' says money goes depends on who pays: 'you'll pay $5.00' does, 'you can pay
# with PayPal' and 'what you paid' state nothing moving now.
_DIRECTION_VERBS: dict[Way, tuple[str, ...]] = {
    "charge": ("charge", "bill", "debit", "deduct"),
    "refund": ("refund", "credit", "reimburse"),
}
_DIRECTION_NOUNS: dict[Way, tuple[str, ...]] = {"charge": ("deduction",), "refund": ("reimbursement",)}
_INVOICE = "bill"  # the one verb whose noun is no movement: 'your bill is $5.00'
_THING_AFTER = (r"(?![\s-]*(?:cards?|polic(?:y|ies)|address(?:es)?|cables?|ports?|cases?|stations?|pads?|cycles?"
                r"|statements?|limits?|scores?)\b)")
_NOT_AN_INVOICE = r"(?<!\byour )(?<!\bthe )(?<!\ba )(?<!\bthis )(?<!\bmy )(?<!\bour )"
# 'get', 'receive' in every form ('you're getting $5.00 back', 'you'll be receiving $5.00')
_GET = r"(?:get|gets|getting|got|gotten|receive|receives|receiving|received)"


def _verb_forms(verb: str) -> tuple[str, ...]:
    """The forms of a regular verb (one with a final silent e, or none, and no doubled consonant):
    'charge' -> ('charge', 'charges', 'charged', 'charging')."""
    stem = verb[:-1] if verb.endswith("e") else verb
    return verb, verb + "s", stem + "ed", stem + "ing"


def _direction_words(way: Way) -> str:
    words = []
    for verb in _DIRECTION_VERBS[way]:
        forms = "|".join(_verb_forms(verb))
        words.append(f"{_NOT_AN_INVOICE}(?:{forms})" if verb == _INVOICE else f"(?:{forms})")
    words += [f"{noun}s?" for noun in _DIRECTION_NOUNS[way]]
    return f"(?:{'|'.join(words)})\\b{_THING_AFTER}"


_WAY_WORDS: dict[Way, str] = {
    "charge": _direction_words("charge")
              + r"|you(?:'ll| will| would|'d|'re| are| won't| will not| wouldn't| don't| do not)?"
                r"(?: need to| have to| be)? (?:pay|paying|owe|owing)\b"
              + r"|(?:need|needs|have|has) to pay\b"
              + r"|nothing (?:more |extra |else |further |additional )?(?:to pay|owed|due)\b"
              + r"|(?:extra|additional) (?:payment|cost)\b|no cost\b",
    "refund": _direction_words("refund")
              + r"|back (?:to|on|onto|into) (?:your|the original)\b"
              + rf"|(?:{_GET}|have|has) (?:\w+ ){{0,2}}back\b(?! to you| in stock)"
              + rf"|you(?:'ll| will| would|'d|'re| are)?(?: be)? {_GET} "
                r"(?=\$|\d|(?:an? |the |your )?(?:refund|credit|money|amount))",
}
# the letters the words above start with: a scan tries the words only there (2.5 times as fast)
WAY_WORD_LETTERS = "abcdeghnry"
_WAY = re.compile(rf"\b(?=[{WAY_WORD_LETTERS}])(?:"
                  + "|".join(f"(?P<{way}>{words})" for way, words in _WAY_WORDS.items()) + ")")  # on lower case
# 'charged or refunded' says neither (a correct 'charged to X and the original refunded' says both)
_EITHER = re.compile(r"\W*(?:or|nor|and/or|/)\W*")
_NEGATORS = frozenset({"not", "no", "never", "nothing", "without"})
_NEGATOR_IN = re.compile(r"\b(?:not|no|never|nothing|without)\b|n't\b")
_WORD = re.compile(r"[\w']+")
# '$1,234.50', '12.50', '12 dollars'; a gift card's balance is no money moving, an option such as
# '1.5L' no amount
_AMOUNT = re.compile(r"(?<!balance )(?<!balance of )(?<!balance: )"
                     r"(?:\$\s?(\d[\d,]*(?:\.\d+)?)|(?<![\w.,$#])(\d[\d,]*\.\d{1,2})(?!\d|\.\d|[A-Za-z])"
                     r"|(?<![\w.,$#])(\d[\d,]*(?:\.\d+)?) ?(?:dollars|usd)\b)")  # on lower case
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_CLAUSE_END = re.compile(_SENTENCE_END.pattern + r"|;\s*")


def sentences(text: str) -> list[str]:
    """The non-blank sentences of `text` (a dot ends one only before white space: '$5.00' is one word)."""
    return [s for s in _SENTENCE_END.split(text) if s.strip()]


def clauses(text: str) -> list[str]:
    """The sentences of `text`, also split at semicolons."""
    return [c for c in _CLAUSE_END.split(text) if c.strip()]


def negated(text: str, start: int) -> bool:
    """Does a 'not' ('n't'), 'no', 'never', 'nothing', 'without' or 'free of' at most two words before
    `start`, with no comma, colon, semicolon or bracket between, negate what is there ('won't be
    charged', 'no charge', 'free of charge'; not 'No, you'll be charged')?"""
    window = text[max(0, start - 40):start]
    window = window[max(window.rfind(c) for c in ",:;()") + 1:]
    before = [w.lower() for w in _WORD.findall(window)[-4:]]
    last = before[-3:]
    return any(w in _NEGATORS or w.endswith("n't") for w in last) \
        or any(before[i - 1:i + 1] == ["free", "of"] for i in range(max(1, len(before) - 3), len(before)))


def _direction_words_of(clause: str) -> tuple[list[tuple[Way, int, int]], list[tuple[Way, int, int]]]:
    """(said, denied): the direction words of `clause` that say money goes their way, and those negated
    ('won't be charged', 'no charge', 'nothing to pay'); neither holds one half of an alternative
    ('charged or refunded')."""
    low = clause.lower()
    found = [(m.lastgroup, m.start(), m.end()) for m in _WAY.finditer(low)]
    either = set()
    for (a, _, a_end), (b, b_start, _) in zip(found, found[1:]):
        if a != b and _EITHER.fullmatch(low, a_end, b_start):
            either |= {a_end, b_start}
    said: list[tuple[Way, int, int]] = []
    denied: list[tuple[Way, int, int]] = []
    for way, s, e in found:
        if e not in either and s not in either:  # a negator inside the words denies too: 'nothing to pay'
            denies = negated(low, s) or _NEGATOR_IN.search(low, s, e)
            (denied if denies else said).append((way, s, e))  # type: ignore[arg-type]
    return said, denied


def ways_said(clause: str) -> list[tuple[Way, int, int]]:
    """(way, start, end) of each direction word in `clause` that is neither negated ('won't be charged',
    'no charge') nor one half of an alternative ('charged or refunded')."""
    return _direction_words_of(clause)[0]


def amounts_said(clause: str) -> list[tuple[float, int, int]]:
    """(dollars, start, end) of each amount of money in `clause`."""
    return [(float(next(g for g in m.groups() if g).replace(",", "")), m.start(), m.end())
            for m in _AMOUNT.finditer(clause.lower())]


Claim = tuple[float | None, frozenset[str]]


def money_claims(text: str) -> list[Claim]:
    """What `text` says about money moving: (amount, ways) for each amount it states, (None, ways)
    for a clause that gives a direction without an amount ('the difference will be refunded'), and
    (0.0, ways) for a clause that denies money goes some way ('there's no charge', 'free of charge',
    'nothing to pay', 'you won't be refunded'): a zero amount that way.

    An amount's ways are those its clause says ('$5.00 will be charged' -> {'charge'}; 'charged to
    PayPal and the original refunded' -> both); in a clause with several amounts each takes its
    nearest ('$5.00 refunded and $3.00 charged'); a clause with amounts but no direction borrows the
    direction of the next clause when that one states no amount ('The difference is $5.00. It will
    be refunded.'). An amount without any direction has no ways. A denied direction binds no amount
    ('You won't be charged $5.00' states a zero charge and a bare $5.00).
    """
    parts = clauses(text)
    out: list[Claim] = []
    for i, clause in enumerate(parts):
        said, denied = _direction_words_of(clause)
        amounts = amounts_said(clause)
        if amounts:
            out += _amount_claims(parts, i, amounts, said)
        elif said:
            out.append((None, frozenset(w for w, _, _ in said)))
        if denied:
            out.append((0.0, frozenset(w for w, _, _ in denied)))
    return out


AmountKind = Literal["balance", "order total", "price", ""]

# What an amount said without a direction is, by the words just around it (lower case): a gift
# card's balance ('balance is $80.00', '$80.00 left on it', 'it has $80.00'), an order's total
# ('order total: $120.00', 'order #W1234567 (total $120.00)'), an item's price ('costs $35.50',
# '$12.00 each', 'the Mug ($9.99)'); else the money of the change itself ('The total is $54.20',
# 'the difference is $5.50'). Only the customer simulator reads these: the world's check of a
# required output wants a direction beside the amount.
_BALANCE_BEFORE = re.compile(r"(?:\bbalance(?: (?:is|was|of|remaining|left|available|now|will be|would be"
                             r"|stands at))*:?|\b(?:has|have|holds) (?:only |just |still |currently |now )?)\s*$")
_BALANCE_AFTER = re.compile(r"\)?\s*(?:(?:in )?(?:gift card )?balance\b|(?:left|remaining|available)\b"
                            r"|on (?:it|the card|the gift card|your gift card)\b)")
_ORDER = r"\border(?:'s)?(?: #?w\d{7})?"
_ORDER_TOTAL_BEFORE = re.compile(
    rf"(?:{_ORDER} (?:(?:full |original |grand )?(?:total|subtotal|value)(?: (?:is|was|of|comes to|came to|will be))?"
    r"|totals|totaled|totalled|totaling|totalling|came to|comes to|costs|cost)"
    r"|\b(?:total|subtotal|value) (?:of|for) (?:the |your |this |that )?(?:whole |entire |original |full )?order"
    r"(?: #?w\d{7})?(?: (?:is|was|comes to|came to|will be))?"
    rf"|{_ORDER} \((?:total|order total)?)(?: ?:)?\s*$")
_PRICE_BEFORE = re.compile(r"\b(?:costs?|costing|priced at|price(?: is|:)?|sells for|at)\s*$")
_PRICE_AFTER = re.compile(r"\s*(?:each|apiece|per (?:item|unit|piece))\b")
# '$5.50 more', '$45.20 in total' are the change's money, whatever stands before them
_DIFFERENCE_AFTER = re.compile(r"\s*(?:more|less|extra|cheaper|more expensive|in total|total)\b")
# what makes a bracketed amount a sum rather than a price: '(total: $54.20)', '(difference $5.50)'
_SUM_WORDS = re.compile(r"\b(?:total|sum|difference|amount|refund|charge|owed|due)\b")


def amount_kind(clause: str, start: int, end: int) -> AmountKind:
    """What the amount at start:end of a lower-case `clause` is, by the words around it: 'balance',
    'order total', 'price' (an item's, or an amount in brackets beside a name), or '' (the money the
    change moves)."""
    before, after = clause[max(0, start - 80):start], clause[end:end + 30]
    if _BALANCE_BEFORE.search(before) or _BALANCE_AFTER.match(after):
        return "balance"
    if _DIFFERENCE_AFTER.match(after):
        return ""
    if _ORDER_TOTAL_BEFORE.search(before):
        return "order total"
    if _PRICE_BEFORE.search(before) or _PRICE_AFTER.match(after):
        return "price"
    opened = clause.rfind("(", 0, start)
    if opened > clause.rfind(")", 0, start) and not _SUM_WORDS.search(clause, opened, start):
        return "price"
    return ""


def bare_amounts(text: str) -> list[tuple[float, AmountKind]]:
    """(dollars, what it is) of each amount `text` states with no direction (those :func:`money_claims`
    reads with no ways): 'The total is $54.20.' -> [(54.2, '')]."""
    parts = clauses(text)
    out: list[tuple[float, AmountKind]] = []
    for i, clause in enumerate(parts):
        amounts = amounts_said(clause)
        if not amounts:
            continue
        low = clause.lower()
        out += [(amount, amount_kind(low, start, end))
                for (amount, start, end), (_, ways) in zip(amounts, _amount_claims(parts, i, amounts)) if not ways]
    return out


def _amount_claims(parts: list[str], i: int, amounts: list[tuple[float, int, int]],
                   ways: list[tuple[Way, int, int]] | None = None) -> list[Claim]:
    """The claims of clause `i` of `parts`, which states `amounts` and says `ways` (:func:`ways_said`,
    read here when not given; see :func:`money_claims`)."""
    if ways is None:
        ways = ways_said(parts[i])
    if not ways:
        after = parts[i + 1] if i + 1 < len(parts) else ""
        borrowed = frozenset() if amounts_said(after) else frozenset(w for w, _, _ in ways_said(after))
        return [(amount, borrowed) for amount, _, _ in amounts]
    if len(amounts) == 1:
        return [(amounts[0][0], frozenset(w for w, _, _ in ways))]
    return [(amount, frozenset({nearest_way(ways, start, end)})) for amount, start, end in amounts]


def money_stated(way: Way, amount: float, text: str) -> bool:
    """Does `text` say that `amount` dollars go `way` (and not also the other way)? (What
    :func:`money_claims` reads, looking for directions only beside that amount.)"""
    digits = f"{amount:.2f}"[-6:-3]  # the last digits of the dollars: '1,234.50' and '1234.5' hold '234'
    if digits not in text:  # the common case in a long conversation: one scan, no clauses
        return False
    parts = clauses(text)
    for i, clause in enumerate(parts):
        if digits not in clause:
            continue
        amounts = amounts_said(clause)
        if any(abs(said - amount) < 0.005 for said, _, _ in amounts) and any(
                said is not None and abs(said - amount) < 0.005 and ways == {way}
                for said, ways in _amount_claims(parts, i, amounts)):
            return True
    return False


def nearest_way(ways: list[tuple[Way, int, int]], start: int, end: int) -> Way:
    """The way of the direction word (from :func:`ways_said`) nearest the text at start:end."""
    return min(ways, key=lambda w: max(w[1] - end, start - w[2], 0))[0]
