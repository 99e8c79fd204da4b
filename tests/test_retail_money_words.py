"""Which way money goes: the retail world's check of a stated output and the customer simulator's
check of a proposed change read the same sentences the same way.

One table of support-side sentences, each with the one direction it says an amount goes (or none,
or both at once), is run through both readers: ``RetailWorld.output_stated('refund 5.00', ...)`` (is
the required output stated?) and the customer's ``money_matches`` (does a proposal agree with what
the customer expects?). A word list that one reader has and the other lacks fails here.

A second table holds whole proposals, worded as the scripted oracle and as a model would word them,
with the customer's verdict against what its brief owes (an amount with no direction included).
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
    # each direction verb in every form, and the nouns of a movement
    ("I'll deduct $5.00 from your gift card.", 5.00, "charge"),
    ("We will deduct $5.00 from your gift card.", 5.00, "charge"),
    ("Deducting $5.00 from the gift card now.", 5.00, "charge"),
    ("$5.00 is to be deducted from your gift card.", 5.00, "charge"),
    ("The gift card deducts $5.00 at once.", 5.00, "charge"),
    ("A deduction of $5.00 will show on your gift card.", 5.00, "charge"),
    ("We'll bill your Visa $5.00.", 5.00, "charge"),
    ("We're billing $5.00 to your Visa.", 5.00, "charge"),
    ("I'll debit $5.00 from your PayPal.", 5.00, "charge"),
    ("We are debiting your PayPal $5.00.", 5.00, "charge"),
    ("We'll charge $5.00 to your PayPal.", 5.00, "charge"),
    ("You'll be paying $5.00 more for the new one.", 5.00, "charge"),
    ("No, we'll charge $5.00 to your Visa.", 5.00, "charge"),  # a 'no' that answers negates nothing after it
    ("I'm refunding $5.00 to your card.", 5.00, "refund"),
    ("We are crediting $5.00 to your gift card.", 5.00, "refund"),
    ("The store credits $5.00 to your gift card.", 5.00, "refund"),
    ("We're reimbursing $5.00 to your PayPal.", 5.00, "refund"),
    ("A reimbursement of $5.00 goes to your PayPal.", 5.00, "refund"),
    ("You're getting $5.00 back on your card.", 5.00, "refund"),
    ("You'll be receiving $5.00 on your card.", 5.00, "refund"),
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
    # adjectives and things named after a direction word move no money
    ("This item is refundable; it costs $5.00.", 5.00, None),
    ("The Backpack is non-refundable and costs $5.00.", 5.00, None),
    ("Reimbursable items cost $5.00 or more.", 5.00, None),
    ("Deductible purchases start at $5.00.", 5.00, None),
    ("Your billing address stays the same; the item costs $5.00.", 5.00, None),
    ("Your bill is $5.00.", 5.00, None),
    ("Pay with your debit card; the item costs $5.00.", 5.00, None),
    ("The charging cable costs $5.00.", 5.00, None),
    ("The Portable Charger (wireless charging pad) costs $5.00.", 5.00, None),
    # both ways for the one amount: contradictory for a return or a swap
    ("$5.00 will be charged to your Visa and refunded to your PayPal.", 5.00, "both"),
]
# sentences that deny money goes a way: a zero amount that way ('both': each way denied)
DENIALS = [
    ("There is no charge.", "charge"),
    ("There's no charge for the exchange.", "charge"),
    ("The exchange is free of charge.", "charge"),
    ("It comes at no extra cost.", "charge"),
    ("It comes at no cost to you.", "charge"),
    ("You have nothing to pay.", "charge"),
    ("There's nothing more to pay.", "charge"),
    ("There's no need to pay anything.", "charge"),
    ("You won't have to pay anything.", "charge"),
    ("You don't need to pay anything.", "charge"),
    ("You won't be charged.", "charge"),
    ("We will not deduct anything from your gift card.", "charge"),
    ("Your card won't be billed.", "charge"),
    ("No refund will be issued.", "refund"),
    ("Nothing will be refunded to your card.", "refund"),
    ("You won't get anything back.", "refund"),
    ("There will be no charge and no refund.", "both"),
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


@pytest.mark.parametrize("text,denied", DENIALS)
def test_a_denied_direction_states_a_zero_amount_that_way(text, denied):
    """'There's no charge' is no silence: the customer owed a charge disputes it, one owed a refund (or
    nothing) takes it, as it takes silence; the world finds no amount stated either way."""
    from simworld.environments.retail.vocab import money_claims

    ways = {"charge", "refund"} if denied == "both" else {denied}
    assert money_claims(text) == [(0.0, frozenset(ways))], text
    world = get_world("retail")
    for way in ("charge", "refund"):
        assert not world.output_stated(f"{way} 5.00", text), (way, text)
        assert money_matches(_expecting(way, 5.00), text) is (way not in ways), (way, text)
        # said with its amount too, the money owed is agreed whatever else is denied
        moved = {"charge": "charged", "refund": "refunded"}[way]
        assert money_matches(_expecting(way, 5.00), f"{text} The difference of $5.00 will be {moved}.") is True
    assert money_matches({"intent": "modify_items", "items": [_item(10.00)],
                          "new_items": [_item(10.00, "1000000002")]}, text) is True  # nothing owed: agreed


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


def test_the_first_letter_shortcut_drops_no_direction_word():
    """The scan tries direction words only where one of WAY_WORD_LETTERS starts a word: each sentence of
    the tables reads the same without that shortcut, so no word of the list starts with another letter."""
    import re

    from simworld.environments.retail import vocab

    unfiltered = re.compile(vocab._WAY.pattern.replace(f"(?=[{vocab.WAY_WORD_LETTERS}])", ""))
    assert unfiltered.pattern != vocab._WAY.pattern
    texts = [t for t, _, _ in TABLE] + [t for t, _ in DENIALS + PAIRS] + [t for _, t, _ in PROPOSALS]
    for text in texts:
        low = text.lower()
        found = [(m.lastgroup, m.span()) for m in vocab._WAY.finditer(low)]
        assert found == [(m.lastgroup, m.span()) for m in unfiltered.finditer(low)], text


@pytest.mark.parametrize("text", ["Hi! How can I help you today?", "Which payment method should we use?",
                                  "Order #W0001234 of sara.doe496@example.com, item 1234567890, zip 78701."])
def test_text_without_money_claims_nothing(text):
    from simworld.environments.retail.vocab import money_claims

    assert money_claims(text) == []


# ----------------------------------------------------------------------------------------------
# Whole proposals as the scripted oracle and a model would word them, each read against what the
# customer's brief owes: an amount that is the owed money in some reading is fine, one that is
# none is disputed, with or without a direction beside it; prices, an order's total and a gift
# card's balance are not the money of the change (unless the change moves the order's total).

def _ref(item_id: str, name: str, price: float, **options: str) -> dict:
    return {"item_id": item_id, "product_id": "2000000001", "name": name, "options": options, "price": f"{price:.2f}"}


RED = _ref("1000000001", "Backpack", 30.00, color="red", material="nylon")
LAMP = _ref("1000000002", "Desk Lamp", 15.20, color="black", power="USB")
BLUE = _ref("1000000003", "Backpack", 35.50, color="blue", material="nylon")
GREEN = _ref("1000000004", "Backpack", 27.25, color="green", material="nylon")
GRAY = _ref("1000000005", "Backpack", 30.00, color="gray", material="nylon")
PAYPAL = {"id": "paypal_1234567", "kind": "paypal", "last_four": None, "description": "PayPal"}
VISA = {"id": "credit_card_7654321", "kind": "credit_card", "last_four": "4242",
        "description": "Visa credit card ending in 4242"}
GIFT = {"id": "gift_card_1234567", "kind": "gift_card", "last_four": None, "description": "gift card"}
# request -> (the customer's request, the required output the world checks where it reads money the same way)
REQUESTS = {
    "cancel": ({"intent": "cancel", "order_id": "#W1234567", "reason": "no longer needed",
                "money_owed": "refund 54.20"}, "refund 54.20"),
    "return": ({"intent": "return", "items": [RED, LAMP], "payment_method": PAYPAL}, "refund 45.20"),
    "exchange+": ({"intent": "exchange", "items": [RED], "new_items": [BLUE], "payment_method": PAYPAL}, "charge 5.50"),
    "exchange-": ({"intent": "exchange", "items": [RED], "new_items": [GREEN], "payment_method": PAYPAL},
                  "refund 2.75"),
    "even": ({"intent": "modify_items", "items": [RED], "new_items": [GRAY], "payment_method": GIFT}, None),
    "pay to PayPal": ({"intent": "modify_payment", "payment_method": PAYPAL, "money_owed": "charge 54.20"}, None),
    "pay to Visa": ({"intent": "modify_payment", "payment_method": VISA, "money_owed": "charge 54.20"}, None),
    "pay to gift card": ({"intent": "modify_payment", "payment_method": GIFT, "money_owed": "charge 54.20"}, None),
}
_ORDER = "order #W1234567"
# (request, proposal, does the customer accept it)
PROPOSALS = [
    # a cancellation refunds the $54.20 paid
    ("cancel", f"To confirm, I'll cancel {_ORDER} (reason: no longer needed); the amount paid, $54.20, will be "
               "refunded to the original payment method. Shall I proceed? (yes/no)", True),
    ("cancel", f"To confirm, I'll cancel {_ORDER} (reason: no longer needed); the amount paid, $45.20, will be "
               "refunded to the original payment method. Shall I proceed? (yes/no)", False),
    ("cancel", f"The total is $54.20. Shall I go ahead and cancel {_ORDER}?", True),
    ("cancel", f"The total is $45.20. Shall I go ahead and cancel {_ORDER}?", False),
    ("cancel", f"I can cancel {_ORDER} (reason: ordered by mistake). The order total is $45.20. Do you want me to "
               "proceed?", False),
    ("cancel", "Order #W1234567 (total $60.00) will be cancelled for the reason 'no longer needed'. Confirm?", False),
    ("cancel", f"{_ORDER.capitalize()} contains the Backpack ($30.00) and the Desk Lamp ($24.20). I'll cancel it for "
               "the reason 'no longer needed'. Shall I proceed?", True),
    ("cancel", f"Cancelling {_ORDER} will refund $54.20 to your original payment method. Shall I proceed?", True),
    ("cancel", f"To confirm: cancel {_ORDER}, reason 'no longer needed'. Amount: $45.20. Proceed?", False),
    ("cancel", f"To confirm: cancel {_ORDER}, reason 'no longer needed'.\nRefund: $54.20 to your Visa ending in 4242."
               "\nProceed?", True),
    ("cancel", "You paid $54.20 with your gift card (balance $12.00); it will be refunded at once. Shall I cancel "
               f"{_ORDER} (reason: no longer needed)?", True),
    ("cancel", f"I'll cancel {_ORDER} (reason: no longer needed). Your gift card balance is $80.00, and the $54.20 "
               "will go back onto it. Shall I proceed?", True),
    ("cancel", f"Shall I cancel {_ORDER}? You won't be charged anything; the $54.20 you paid comes back to your card.",
     True),
    ("cancel", f"Shall I cancel {_ORDER}? That comes to $45.20 back to you.", False),
    # a return of the Backpack ($30.00) and the Desk Lamp ($15.20) refunds $45.20
    ("return", "To confirm, I'll return the Backpack (red, nylon; item 1000000001) and the Desk Lamp (black, USB; "
               f"item 1000000002) from {_ORDER}, with a refund of $45.20 to PayPal (paypal_1234567). Shall I proceed? "
               "(yes/no)", True),
    ("return", f"I'll return the Backpack ($30.00) and the Desk Lamp ($15.20) from {_ORDER}. The total refund is "
               "$45.20 to your PayPal. Shall I proceed?", True),
    ("return", f"I'll return the Backpack ($30.00) and the Desk Lamp ($15.20) from {_ORDER} to your PayPal. The total "
               "is $54.20. Shall I go ahead?", False),
    ("return", f"I'll return the Backpack ($30.00) and the Desk Lamp ($15.20) from {_ORDER} to your PayPal. Shall I "
               "go ahead?", True),
    ("return", f"Returning the Backpack and the Desk Lamp from {_ORDER}: that's $45.20 in total, sent to your PayPal. "
               "Confirm?", True),
    ("return", f"Returning the Backpack and the Desk Lamp from {_ORDER}: that's $54.20 in total, sent to your PayPal. "
               "Confirm?", False),
    ("return", "Your order #W1234567 totals $120.00. I'll return the Backpack and the Desk Lamp, and $45.20 will be "
               "refunded to PayPal. Proceed?", True),
    ("return", "Your order #W1234567 totals $120.00. I'll return the Backpack and the Desk Lamp to your PayPal. "
               "Proceed?", True),
    ("return", "Order #W1234567 (total $120.00) has the Backpack ($30.00), the Desk Lamp ($15.20) and a Mug ($9.99). "
               "I'll return the Backpack and the Desk Lamp to your PayPal. Do you want me to proceed?", True),
    ("return", "The Backpack was $30.00 and the Desk Lamp was $15.20; I'll return both to your PayPal. OK to proceed?",
     True),
    ("return", f"I'll return the Backpack and the Desk Lamp from {_ORDER}; you'll receive $54.20 on your PayPal. "
               "Proceed?", False),
    ("return", f"I'll return both items from {_ORDER} for $45.20. Shall I?", True),
    ("return", f"I'll return both items from {_ORDER} for $54.20. Shall I?", False),
    ("return", "Here is the summary:\n- Items: Backpack ($30.00), Desk Lamp ($15.20)\n- Refund: $45.20 to PayPal\n"
               "Shall I proceed?", True),
    ("return", "Here is the summary:\n- Items: Backpack ($30.00), Desk Lamp ($15.20)\n- Total: $54.20 to PayPal\n"
               "Shall I proceed?", False),
    ("return", "Refund amount: $45.20 (Backpack $30.00 + Desk Lamp $15.20). Proceed with the return?", True),
    ("return", "I'll return the Backpack and the Desk Lamp; $45.20 will be charged to your PayPal. Proceed?", False),
    # an exchange of the Backpack ($30.00) for the blue one ($35.50) charges $5.50
    ("exchange+", f"To confirm, I'll exchange, in {_ORDER}, the Backpack (red, nylon; item 1000000001) to the Backpack "
                  "(blue, nylon; item 1000000003); the price difference of $5.50 will be charged to PayPal "
                  "(paypal_1234567). Shall I proceed? (yes/no)", True),
    ("exchange+", f"I'll exchange the red Backpack ($30.00) for the blue one ($35.50) in {_ORDER}. Shall I proceed?",
     True),
    ("exchange+", f"I'll exchange the red Backpack for the blue one in {_ORDER}. The price difference is $5.50. Shall "
                  "I proceed?", True),
    ("exchange+", f"I'll exchange the red Backpack for the blue one in {_ORDER}. The price difference is $6.50. Shall "
                  "I proceed?", False),
    ("exchange+", "The blue Backpack costs $35.50, so the difference is $5.50, which will be charged to your PayPal. "
                  "Proceed with the exchange?", True),
    ("exchange+", "The blue Backpack is $5.50 more; shall I go ahead with the exchange?", True),
    ("exchange+", "The blue Backpack is $6.50 more; shall I go ahead with the exchange?", False),
    ("exchange+", "Exchanging the red Backpack for the blue one: the new total for order #W1234567 is $125.50. "
                  "Proceed?", True),
    ("exchange+", "Exchanging the red Backpack for the blue one; your total is $125.50. Shall I proceed with the "
                  "exchange?", False),
    ("exchange+", "Shall I exchange the red Backpack for the blue one? You'll get $5.50 back.", False),
    # an exchange for the green one ($27.25) refunds $2.75
    ("exchange-", "You'll get $2.75 back for the exchange of the red Backpack to the green one. Proceed?", True),
    ("exchange-", "The green Backpack is $27.25, the red one was $30.00. Shall I exchange them?", True),
    ("exchange-", "The difference is $2.75. Shall I exchange the red Backpack for the green one?", True),
    ("exchange-", "The difference is $3.75. Shall I exchange the red Backpack for the green one?", False),
    ("exchange-", "The difference of $2.75 will be charged to PayPal. Shall I exchange the red Backpack for the green "
                  "one?", False),
    # a swap for the gray one ($30.00) moves no money
    ("even", f"To confirm, I'll modify, in {_ORDER}, the Backpack (red, nylon; item 1000000001) to the Backpack (gray, "
             "nylon; item 1000000005); there is no price difference (payment method: gift card (gift_card_1234567, "
             "balance $80.00)). Shall I proceed? (yes/no)", True),
    ("even", "Both Backpacks cost $30.00, so there's no price difference. Shall I modify the item?", True),
    ("even", "The price difference is $4.00. Shall I change the red Backpack to the gray one?", False),
    ("even", "The difference is $0.00, so nothing is charged. Shall I change the Backpack to gray?", True),
    ("even", "Changing the Backpack to gray costs $4.00 more. Shall I modify the item?", False),
    # a payment change charges the $54.20 total to the new method and refunds the old one as much
    ("pay to PayPal", f"To confirm, I'll change the payment method of {_ORDER} to PayPal (paypal_1234567); $54.20 will "
                      "be charged to it and the original payment refunded. Shall I proceed? (yes/no)", True),
    ("pay to PayPal", f"To confirm, I'll change the payment method of {_ORDER} to PayPal (paypal_1234567); $55.20 will "
                      "be charged to it and the original payment refunded. Shall I proceed? (yes/no)", False),
    ("pay to PayPal", f"I'll change the payment method of {_ORDER} to PayPal. We'll charge your PayPal $54.20 and "
                      "refund $54.20 to your original payment method. Shall I proceed?", True),
    ("pay to PayPal", "$54.20 will be refunded to your original payment method and charged to PayPal. Shall I switch "
                      f"the payment of {_ORDER}?", True),
    ("pay to PayPal", "$54.20 will be charged to your PayPal and refunded to your original card. Shall I switch the "
                      f"payment of {_ORDER}?", True),
    ("pay to PayPal", f"Shall I switch the payment of {_ORDER} to PayPal? You'll be refunded $54.20 on your current "
                      "card once your PayPal is charged.", True),
    ("pay to PayPal", f"Shall I switch the payment of {_ORDER} to PayPal? The original payment of $54.20 will be "
                      "refunded, and PayPal will be charged the same amount.", True),
    ("pay to PayPal", f"I'll switch {_ORDER} to PayPal: your PayPal account will be charged $54.20, and your Visa "
                      "ending in 1111 refunded the same amount. Proceed?", True),
    ("pay to PayPal", "Your original card was charged $54.20 when you ordered; I'll refund it and charge PayPal "
                      f"instead. Shall I change the payment of {_ORDER}?", True),
    ("pay to PayPal", f"Switching the payment of {_ORDER} from your original card to PayPal, $54.20 will be charged "
                      "and the old card refunded. Proceed?", True),
    ("pay to PayPal", f"I'll change the payment method of {_ORDER} to PayPal (paypal_1234567). The order total is "
                      "$54.20. Shall I proceed?", True),
    ("pay to PayPal", f"I'll change the payment method of {_ORDER} to PayPal (paypal_1234567). The order total is "
                      "$60.00. Shall I proceed?", False),
    ("pay to PayPal", "$54.20 will be charged to your original payment method and refunded to PayPal. Shall I switch "
                      f"the payment of {_ORDER}?", False),
    ("pay to PayPal", f"Shall I change the payment of {_ORDER}? We'll refund your PayPal $54.20 and charge your "
                      "original card.", False),
    ("pay to PayPal", f"Shall I change the payment of {_ORDER}? PayPal will be charged $60.00 and the original payment "
                      "refunded.", False),
    ("pay to PayPal", f"Shall I change the payment of {_ORDER}? The refund of $54.20 goes to your PayPal.", False),
    ("pay to Visa", f"I'll change the payment method of {_ORDER}: we'll charge your new card $54.20 and refund $54.20 "
                    "to your original payment method. Shall I proceed?", True),
    ("pay to Visa", f"I'll change the payment method of {_ORDER}: $54.20 will be refunded to your original payment "
                    "method and charged to the new card. Shall I proceed?", True),
    ("pay to Visa", f"I'll change the payment method of {_ORDER}: you'll be refunded $54.20 after we charge your new "
                    "card. Shall I proceed?", True),
    ("pay to Visa", f"I'll change the payment method of {_ORDER}: you'll be refunded the difference of $12.00 after we "
                    "charge your new card. Shall I proceed?", False),
    ("pay to Visa", f"Shall I change the payment of {_ORDER}? Once we charge your new card $54.20, the original "
                    "payment will be refunded.", True),
    ("pay to Visa", f"Shall I change the payment of {_ORDER}? Your Visa credit card ending in 4242 will be charged "
                    "$54.20 and your PayPal refunded.", True),
    ("pay to Visa", f"Shall I change the payment of {_ORDER}? $54.20 will be refunded to your Visa credit card ending "
                    "in 4242.", False),
    ("pay to Visa", f"Shall I change the payment of {_ORDER}? We'll charge your old card $54.20 and refund the new "
                    "card.",
     False),
    ("pay to gift card", f"To confirm, I'll change the payment method of {_ORDER} to gift card (gift_card_1234567, "
                         "balance $100.00); $54.20 will be charged to it and the original payment refunded. Shall I "
                         "proceed? (yes/no)", True),
    ("pay to gift card", "Your gift card balance is $100.00, which covers the order. Shall I switch the payment of "
                         f"{_ORDER} to your gift card (gift_card_1234567)?", True),
    ("pay to gift card", "Your gift card has $100.00 left on it. I'll deduct $54.20 from the gift card and refund your "
                         f"original card. Shall I switch the payment of {_ORDER}?", True),
    ("pay to gift card", "Your gift card has $100.00 left on it. I'll deduct $45.20 from the gift card and refund your "
                         f"original card. Shall I switch the payment of {_ORDER}?", False),
]

# summaries as a model lays them out before asking for a yes
_SUMMARY = "Before I proceed, here are the details:\n- Order ID: #W1234567\n"
PROPOSALS += [
    ("cancel", _SUMMARY + "- Items: Backpack, Desk Lamp\n- Total amount: $54.20\n- Reason: no longer needed\n- Refund: "
                          "the total amount will be refunded to your original payment method within 5-7 business "
                          "days.\nDo you confirm you want to cancel this order? (yes/no)", True),
    ("cancel", _SUMMARY + "- Backpack: $30.00\n- Desk Lamp: $24.20\n- Reason: no longer needed\nThe full amount will "
                          "be refunded to your original payment method. Do you confirm the cancellation? "
                          "(yes/no)", True),
    ("cancel", _SUMMARY + "- Backpack: $30.00\n- Desk Lamp: $14.20\n- Reason: no longer needed\nThe full amount will "
                          "be refunded to your original payment method. Do you confirm the cancellation? (yes/no)",
     False),
    ("return", _SUMMARY + "- Items to return: Backpack (Item ID: 1000000001) - $30.00; Desk Lamp (Item ID: 1000000002) "
                          "- $15.20\n- Refund method: PayPal (paypal_1234567)\n- Total refund amount: $45.20\n\nDo you "
                          "confirm that you would like to proceed with this return? (yes/no)", True),
    ("return", _SUMMARY + "- Items to return: Backpack (Item ID: 1000000001), Desk Lamp (Item ID: 1000000002)\n- "
                          "Refund method: PayPal (paypal_1234567)\n- Total: $54.20\n\nDo you confirm that you would "
                          "like to proceed with this return? (yes/no)", False),
    ("return", _SUMMARY + "- Order total: $120.00\n- Items to return: Backpack, Desk Lamp\n- Refund method: PayPal\n"
                          "Do you confirm the return? (yes/no)", True),
    ("exchange+", _SUMMARY + "- Current item: Backpack (red, nylon) - $30.00\n- New item: Backpack (blue, nylon) - "
                             "$35.50\n- Price difference: $5.50 (to be charged to your PayPal)\nWould you like to "
                             "proceed with the exchange?", True),
    ("exchange+", _SUMMARY + "- Current item: Backpack (red, nylon) - $30.00\n- New item: Backpack (blue, nylon) - "
                             "$35.50\n- Price difference: $5.50, which you will need to pay with PayPal\nWould you "
                             "like to proceed with the exchange?", True),
    ("exchange+", _SUMMARY + "- Current item: Backpack (red, nylon)\n- New item: Backpack (blue, nylon)\n- Price "
                             "difference: $4.50\nWould you like to proceed with the exchange?", False),
    ("even", "There is no price difference between the two Backpacks ($30.00 each). Shall I modify the item?", True),
    ("pay to PayPal", f"I will update the payment method for {_ORDER} from your credit card (credit_card_1111111) to "
                      "PayPal (paypal_1234567). The original payment will be refunded and your PayPal will be charged "
                      "$54.20. Shall I proceed?", True),
    ("pay to PayPal", "I'll charge the full order amount of $54.20 to PayPal and issue a refund of $54.20 to your "
                      f"Visa ending in 1111. Shall I change the payment of {_ORDER}?", True),
    ("pay to gift card", "Your gift card has $100.00, enough to cover the order. Shall I switch the payment of "
                         f"{_ORDER} to your gift card (gift_card_1234567)?", True),
]

# money said with other forms of the direction verbs, and denied ('no charge', 'nothing to pay'): a
# denial of the way the owed money goes is turned down unless the proposal also says that money moves
PROPOSALS += [
    ("cancel", f"I'll cancel {_ORDER} (reason: no longer needed); we will be refunding $54.20 to your card. "
               "Proceed?", True),
    ("cancel", f"I'll cancel {_ORDER} (reason: no longer needed); we'll be deducting $54.20 from your card. "
               "Proceed?", False),
    ("cancel", f"I'll cancel {_ORDER} (reason: no longer needed); there's no charge for cancelling. Proceed?", True),
    ("cancel", f"I'll cancel {_ORDER} (reason: no longer needed). No refund will be issued. Proceed?", False),
    ("return", f"I'll return both items from {_ORDER}; there's no charge for returns, and $45.20 will be refunded "
               "to PayPal. Proceed?", True),
    ("return", f"I'm crediting $45.20 to your PayPal for the return of both items from {_ORDER}. Proceed?", True),
    ("return", f"I'm deducting $45.20 from your PayPal for the return of both items from {_ORDER}. Proceed?", False),
    ("return", f"I'll return both items from {_ORDER} to your PayPal; you won't get anything back. Proceed?", False),
    ("return", "The Backpack and the Desk Lamp are refundable; I'll return both to your PayPal. Proceed?", True),
    ("exchange+", "There's no charge for the exchange. Shall I exchange the red Backpack for the blue one?", False),
    ("exchange+", "You won't have to pay anything. Shall I exchange the red Backpack for the blue one?", False),
    ("exchange+", "The exchange is free of charge; the blue Backpack costs $35.50. Shall I proceed?", False),
    ("exchange+", "There's no charge for the exchange itself; the price difference is $5.50. Shall I proceed?", True),
    ("exchange+", "There's no fee for exchanges: $5.50 will be billed to your PayPal. Shall I proceed?", True),
    ("exchange+", "I'll be crediting $5.50 to your PayPal for the exchange. Shall I proceed?", False),
    ("exchange+", "We'll debit your PayPal $5.50 for the exchange. Shall I proceed?", True),
    ("exchange-", "The exchange is free of charge. Shall I exchange the red Backpack for the green one?", True),
    ("exchange-", "There's nothing to pay; you'll get $2.75 back. Shall I exchange the red Backpack for the green "
                  "one?", True),
    ("exchange-", "We'll be billing your PayPal $2.75 for the exchange. Shall I proceed?", False),
    ("even", "There's no charge for this change. Shall I modify the item?", True),
    ("even", "You have nothing to pay: there is no price difference. Shall I change the Backpack to gray?", True),
    ("pay to PayPal", f"There's no charge to switch the payment of {_ORDER} to PayPal. Shall I proceed?", False),
    ("pay to PayPal", f"There's no fee to switch the payment of {_ORDER} to PayPal: we'll bill your PayPal $54.20 "
                      "and refund your original card. Shall I proceed?", True),
    ("pay to gift card", f"Switching the payment of {_ORDER} to your gift card is free of charge. Shall I proceed?",
     False),
    ("pay to gift card", "We'll be deducting $54.20 from your gift card (balance $100.00) and refunding your original "
                         f"card. Shall I switch the payment of {_ORDER}?", True),
]


@pytest.mark.parametrize("request_key,text,accepted", PROPOSALS)
def test_a_proposal_is_accepted_only_with_the_money_owed(request_key, text, accepted):
    request, required = REQUESTS[request_key]
    assert money_matches(request, text) is accepted, text
    if required is not None:  # the world's check reads the same sentence: what it finds stated, the customer takes
        world = get_world("retail")
        assert not (world.output_stated(required, text) and not accepted), text
