"""Natural-language wording of negotiation moves, varied by the agent's seeded RNG.

A sentence is an opener, the move's core (with ``{terms}``) and sometimes a closer; each part is
drawn from a bank, so the same move reads differently across episodes but identically for the
same seed.
"""

from __future__ import annotations

import numpy as np

BANKS: dict[str, list[str]] = {
    "open": [
        "Thanks for meeting with me. I'd propose {terms}.",
        "Let's get started. My proposal is {terms}.",
        "Here's where I'd like to begin: {terms}.",
        "I've thought about this, and I'd suggest {terms}.",
        "To open, how about {terms}?",
        "I'd like to put a first offer on the table: {terms}.",
        "Let me start with {terms}.",
        "My opening offer is {terms}.",
    ],
    "concede": [
        "I can move a little: {terms}.",
        "Let me meet you partway. How about {terms}?",
        "I've reconsidered, and I can offer {terms}.",
        "In the spirit of getting this done, I can do {terms}.",
        "Okay, I'll come your way a bit: {terms}.",
        "That's not quite there for me, but I can improve my offer to {terms}.",
        "I hear you. Here's a better offer: {terms}.",
        "I can stretch to {terms}.",
    ],
    "hold": [
        "I'm afraid I can't move much. My offer is {terms}.",
        "That doesn't work for me. I'll stay with {terms}.",
        "I think my offer is fair as it is: {terms}.",
        "I need to hold firm here: {terms}.",
        "Sorry, that's too far from what I need. I'm still at {terms}.",
        "I can't go further than this: {terms}.",
    ],
    "counter": [
        "What about {terms} instead?",
        "How would {terms} work for you?",
        "Let me suggest an alternative: {terms}.",
        "Here's a different package: {terms}.",
        "Could you live with {terms}?",
        "Try this one: {terms}.",
    ],
    "final": [
        "This is my final offer: {terms}.",
        "We're out of time, so here's my last offer: {terms}.",
        "Last offer from my side: {terms}. Take it or leave it.",
        "I can't go back and forth any more. Final terms: {terms}.",
    ],
    "repeat": [
        "My offer still stands: {terms}.",
        "Just to be clear, I'm proposing {terms}.",
        "I'm still waiting on your answer to {terms}.",
        "Let me restate my offer: {terms}.",
    ],
    "accept": [
        "That works for me. Deal!",
        "Alright, I accept. Pleasure doing business.",
        "You've got a deal.",
        "I can accept that. Thank you!",
        "Agreed. Let's go with those terms.",
        "Okay, that's acceptable. We have a deal.",
        "Fine by me. I accept your offer.",
    ],
    "walk_away": [
        "I'm sorry, but we're too far apart. I'm going to walk away.",
        "This isn't going to work for me. I'll have to pass.",
        "Thanks for your time, but I can't agree to these terms.",
        "I don't think we can make a deal here. Goodbye.",
        "We couldn't find terms that work for me, so I'm stepping away.",
    ],
    "research": [
        "Before we go on, let me check a few numbers.",
        "Give me a moment to look something up.",
        "Let me check the facts first.",
        "One second, I want to look at the details.",
    ],
    "reject_reason": [
        "That offer is below what I can accept.",
        "Those terms don't work for me.",
        "That's too far from what I need.",
        "I can't agree to that package.",
        "That doesn't meet my requirements.",
    ],
    "walk_reason": [
        "No offer met my minimum.",
        "We could not reach acceptable terms.",
        "The terms on offer are worse than no deal for me.",
        "We ran out of rounds without acceptable terms.",
    ],
}

CLOSERS = [
    "",
    "",
    "",
    " Let me know what you think.",
    " I think that's a fair split.",
    " I'm hoping we can close this soon.",
    " That reflects what this is worth to me.",
    " Your move.",
]


MARKET_REMARKS: dict[bool, list[str]] = {
    # A party that wants a low value (a buyer) cites the bottom of the market, one that wants a high value the top.
    True: [
        "I've looked at the market: comparable listings start at {low}.",
        "Similar ones are listed from {low} to {high}, with a median of {median}.",
        "I checked recent listings, and the cheapest comparable one is at {low}.",
        "The market data I found runs from {low} to {high}.",
        "From what I see, comparable ones go for as little as {low}.",
    ],
    False: [
        "I've looked at the market: comparable listings go up to {high}.",
        "Similar ones are listed from {low} to {high}, with a median of {median}.",
        "I checked recent listings, and the median is already {median}.",
        "The market data I found runs from {low} to {high}.",
        "From what I see, comparable ones fetch as much as {high}.",
    ],
}


STOCK_REMARKS: dict[tuple[bool, bool], list[str]] = {
    # (the speaker owns the stock, the stock is plentiful)
    (True, True): [
        "We have plenty of these in stock, so I can be flexible.",
        "I'll be honest, we have more of these than we'd like.",
        "Stock isn't a problem on our side, so let's find terms that work.",
    ],
    (True, False): [
        "Stock is tight at the moment, so there isn't much room.",
        "We don't have many of these left.",
        "Supply is limited right now, and these go quickly.",
    ],
    (False, True): [
        "I know you have plenty of these on hand.",
        "From what I understand, you're not short of stock.",
        "You've got a good number of these sitting in stock.",
    ],
    (False, False): [
        "I understand stock is short, so I'm making a serious offer.",
        "I know there aren't many of these left, so let's be realistic.",
        "Since supply is tight, I'm coming in with a fair offer.",
    ],
}

POLICY_REMARKS = [
    "I've checked the {topics} policy, and this stays within it.",
    "Going by the {topics} policy, this is what I'm able to do.",
    "The {topics} policy sets the limits here.",
    "I have to stay within the {topics} policy.",
]


def stock_remark(rng: np.random.Generator, owner: bool, plentiful: bool) -> str:
    """A sentence about the stock level, from the side of its owner or of the counterpart."""
    options = STOCK_REMARKS[(owner, plentiful)]
    return options[int(rng.integers(len(options)))]


def policy_remark(rng: np.random.Generator, topics: list[str]) -> str:
    """A sentence saying the offer keeps within the policies looked up (by topic)."""
    named = " and ".join(t for t in topics if t) or "store"
    return POLICY_REMARKS[int(rng.integers(len(POLICY_REMARKS)))].format(topics=named)


def market_remark(rng: np.random.Generator, wants_low: bool, low: str, median: str, high: str) -> str:
    """A sentence citing looked-up market prices (already written as values), from the side of the speaker."""
    options = MARKET_REMARKS[wants_low]
    return options[int(rng.integers(len(options)))].format(low=low, median=median, high=high)


def choose(rng: np.random.Generator, bank: str) -> str:
    """One template of `bank`."""
    options = BANKS[bank]
    return options[int(rng.integers(len(options)))]


def phrase(rng: np.random.Generator, bank: str, terms: str = "", closer: bool = True) -> str:
    """A sentence for a move: a template of `bank` with `terms`, sometimes with a closing remark."""
    text = choose(rng, bank).format(terms=terms)
    if closer and "{terms}" in BANKS[bank][0]:
        text += CLOSERS[int(rng.integers(len(CLOSERS)))]
    return text
