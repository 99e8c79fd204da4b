"""Which way money goes: the retail world's check of a stated output and the customer simulator's
check of a proposed change read the same sentences the same way.

One table of support-side sentences, each with the one direction it says an amount goes (or none,
or both at once), is run through both readers: ``RetailWorld.output_stated('refund 5.00', ...)`` (is
the required output stated?) and the customer's ``money_matches`` (does a proposal agree with what
the customer expects?). A word list that one reader has and the other lacks fails here.
"""

from __future__ import annotations

import pytest

from simworld.agents.retail.customer import money_matches
from simworld.registry import get_world, load_builtins

load_builtins()

# (support-side sentence, the amount in it, which way it says that amount goes: "charge", "refund",
# None (no direction: a total, a question, a word that is no money moving) or "both")
TABLE = [
    ("The price difference of $171.00 will be charged to Visa credit card ending in 1612.", 171.00, "charge"),
    ("Return the Portable Charger with a refund of $1,122.98 to Amex credit card ending in 4547.", 1122.98, "refund"),
    ("The difference is $5.00. It will be refunded to your PayPal.", 5.00, "refund"),
    ("You won't be charged anything: $5.00 will be refunded.", 5.00, "refund"),
    ("There is no charge for cancelling; $5.00 will be refunded to your card.", 5.00, "refund"),
    ("$5.00 will be billed to your Visa.", 5.00, "charge"),
    ("$5.00 will be debited from your PayPal account.", 5.00, "charge"),
    ("You'll pay $5.00 more for the new one.", 5.00, "charge"),
    ("We'll reimburse $5.00 to your PayPal.", 5.00, "refund"),
    ("You'll get $5.00 back on your card.", 5.00, "refund"),
    ("We will credit $5.00 to your gift card.", 5.00, "refund"),
    ("$5.00 goes back to your original payment method.", 5.00, "refund"),
    ("You will receive $5.00 within 5 business days.", 5.00, "refund"),
    ("Your gift card (balance $50.00) will be charged $5.00.", 5.00, "charge"),
    ("The Water Bottle (1.5L, red) will be refunded at $5.00.", 5.00, "refund"),
    ("A credit card payment of $5.00 will be charged.", 5.00, "charge"),
    ("The difference of 5.00 dollars will be charged to your card.", 5.00, "charge"),
    # no direction: a total, a way to pay, a policy, a promise to call back, an alternative
    ("The total is $5.00.", 5.00, None),
    ("Your order total is $5.00; you can pay with PayPal or a card.", 5.00, None),
    ("The order total is $5.00, and you can pay with any card on file.", 5.00, None),
    ("Our refund policy allows returns within 30 days; the new item costs $5.00.", 5.00, None),
    ("Do you have questions about our refund policy? The Backpack costs $5.00.", 5.00, None),
    ("I'll get back to you about the $5.00 item.", 5.00, None),
    ("Nothing will be charged or refunded; each item costs $5.00.", 5.00, None),
    ("Any difference from the $5.00 will be charged or refunded to your card.", 5.00, None),
    ("The Portable Charger costs $5.00.", 5.00, None),
    # both ways for the one amount: contradictory for a return or a swap
    ("$5.00 will be charged to your Visa and refunded to your PayPal.", 5.00, "both"),
]
# two amounts in one sentence, each with its own direction
PAIRS = [("$5.00 will be refunded and $3.00 charged to your card.", {5.00: "refund", 3.00: "charge"}),
         ("$5.00 will be refunded. $3.00 will be charged.", {5.00: "refund", 3.00: "charge"}),
         ("We'll charge $3.00 to your Visa and refund $5.00 to your PayPal.", {5.00: "refund", 3.00: "charge"})]


def _item(price: float, item_id: str = "1000000001") -> dict:
    return {"item_id": item_id, "product_id": "2000000001", "name": "Backpack", "options": {"color": "red"},
            "price": f"{price:.2f}"}


def _expecting(way: str, amount: float) -> dict:
    """A request of the customer's brief that expects `amount` to go `way` (from the items' prices)."""
    if way == "refund":
        return {"intent": "return", "items": [_item(amount)]}
    return {"intent": "modify_items", "items": [_item(10.00)], "new_items": [_item(10.00 + amount, "1000000002")]}


@pytest.mark.parametrize("text,amount,said", TABLE)
def test_world_and_customer_read_the_same_direction(text, amount, said):
    world = get_world("retail")
    for way in ("charge", "refund"):
        stated = world.output_stated(f"{way} {amount:.2f}", text)
        accepted = money_matches(_expecting(way, amount), text)
        assert stated is (said == way), (way, text)
        # the customer turns down what says the money goes otherwise; silence is no objection
        assert accepted is (said in (way, None)), (way, text)


@pytest.mark.parametrize("text,ways", PAIRS)
def test_each_amount_of_a_sentence_keeps_its_own_direction(text, ways):
    world = get_world("retail")
    for amount, way in ways.items():
        other = "charge" if way == "refund" else "refund"
        assert world.output_stated(f"{way} {amount:.2f}", text)
        assert not world.output_stated(f"{other} {amount:.2f}", text)
        assert money_matches(_expecting(way, amount), text)
        assert not money_matches(_expecting(other, amount), text)


def test_the_customer_reads_money_with_the_worlds_reading():
    """One function, not two copies of a word list."""
    from simworld.agents.retail import customer
    from simworld.environments.retail import vocab

    assert customer.money_claims is vocab.money_claims
    assert vocab.money_claims("$120.00 will be charged to PayPal and the original payment refunded") == [
        (120.0, frozenset({"charge", "refund"}))]
    assert vocab.money_claims("It will be refunded.") == [(None, frozenset({"refund"}))]
    assert vocab.money_claims("It will be charged or refunded.") == []


@pytest.mark.parametrize("text", ["Hi! How can I help you today?", "Which payment method should we use?",
                                  "Order #W0001234 of sara.doe496@example.com, item 1234567890, zip 78701."])
def test_text_without_money_claims_nothing(text):
    from simworld.environments.retail.vocab import money_claims

    assert money_claims(text) == []
