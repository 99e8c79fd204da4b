"""What the customer privately knows in a retail task: the contract between tasks and agents.

A retail :class:`~simworld.task.TaskInstance` carries ``private = {"user": CustomerBrief(...).
model_dump(), "assistant": {}}``. The support side starts with nothing but the store policy: it
must learn every value it needs from the customer (who reveals a field only when asked) or from
tool results. The customer simulator and the scripted support oracle are written against these
models, so the field names and meanings below are stable.

How the support side can discover each value:

* the user id: ``find_user_id_by_email(identity.email)`` or
  ``find_user_id_by_name_zip(identity.first_name, identity.last_name, identity.zip)`` (tasks only
  set ``knows_email=False`` when name + zip identify exactly one user);
* an order id the customer does not know: ``get_user_details`` lists the user's orders; the one
  whose items include a product named ``order_hint_product`` is the target (tasks only use a hint
  that matches exactly one of the user's orders);
* item ids of the items concerned: the order's items (``get_order_details``), matched by product
  name and options (an order never holds the same item twice, so name + options is unambiguous);
* new item ids: ``get_product_details(product_id)`` of the same product, matched by options;
* a payment method id: ``get_user_details`` payment methods, matched by ``payment_method.kind``
  (and ``last_four`` for credit cards; a user has at most one PayPal account, at most one gift
  card, and credit cards with distinct last four digits).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Intent = Literal["order_status", "cancel", "modify_address", "modify_payment", "modify_items", "return",
                 "exchange", "modify_user_address"]
"""What a request asks for. Each write intent maps to one tool:
cancel -> cancel_pending_order, modify_address -> modify_pending_order_address,
modify_payment -> modify_pending_order_payment, modify_items -> modify_pending_order_items,
return -> return_delivered_order_items, exchange -> exchange_delivered_order_items,
modify_user_address -> modify_user_address; order_status only reads."""

CancelReason = Literal["no longer needed", "ordered by mistake"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Identity(_Model):
    """Who the customer is: what they answer when asked to authenticate."""

    first_name: str = Field(description="Capitalised first name, e.g. 'Sara'.")
    last_name: str = Field(description="Capitalised last name, e.g. 'Doe'.")
    zip: str = Field(description="Five-digit zip code of the customer's default address, e.g. '02139'.")
    email: str = Field(description="E-mail address, e.g. 'sara.doe496@example.com'.")


class Address(_Model):
    """A postal address, exactly as the address tools take it."""

    address1: str = Field(description="Street line, e.g. '445 Maple Drive'.")
    address2: str = Field(description="Second line, e.g. 'Suite 701'; may be ''.")
    city: str
    state: str = Field(description="Two-letter state code, e.g. 'TX'.")
    country: str = Field(description="Always 'USA' in generated data.")
    zip: str = Field(description="Five digits.")


class ItemRef(_Model):
    """One item (a product variant) as the customer describes it and as the tools name it."""

    item_id: str = Field(description="10-digit item id (variant id). Customers rarely know it; "
                                     "the support side finds it via get_order_details / get_product_details.")
    product_id: str = Field(description="10-digit id of the product the item is a variant of.")
    name: str = Field(description="Product name, e.g. 'Office Chair'.")
    options: dict[str, str] = Field(description="Option name -> value, e.g. {'color': 'black', 'material': 'mesh'}.")
    price: str = Field(description="Unit price in dollars with two decimals, e.g. '149.99' (informational).")


class PaymentRef(_Model):
    """A payment method as the customer names it."""

    id: str = Field(description="e.g. 'credit_card_4821379', 'paypal_1234567', 'gift_card_7654321'.")
    kind: Literal["credit_card", "paypal", "gift_card"]
    last_four: str | None = Field(default=None, description="Credit cards only: the last four digits.")
    description: str = Field(description="How the customer says it: 'PayPal', 'gift card', "
                                         "'Visa credit card ending in 1234'.")


class Request(_Model):
    """One thing the customer wants done. A brief may hold several (multi-order tasks), in order."""

    intent: Intent
    order_id: str | None = Field(default=None, description="Target order, '#W' + 7 digits "
                                                           "(None only for modify_user_address).")
    knows_order_id: bool = Field(default=True, description="Whether the customer can tell the order id. "
                                                           "When False, use order_hint / order_hint_product.")
    order_hint: str = Field(default="", description="Natural-language description of the order when the id "
                                                    "is unknown, e.g. 'the order with the Office Chair'.")
    order_hint_product: str | None = Field(default=None, description="Product name that identifies the order "
                                                                     "among the user's orders (unique to it).")
    reason: CancelReason | None = Field(default=None, description="cancel only: the reason, verbatim as the "
                                                                  "cancel tool takes it.")
    items: list[ItemRef] = Field(default_factory=list, description="modify_items / return / exchange: the "
                                                                   "order's items concerned.")
    new_items: list[ItemRef] = Field(default_factory=list, description="modify_items / exchange: the wanted "
                                                                       "replacement for items[i], same product, "
                                                                       "other options.")
    address: Address | None = Field(default=None, description="modify_address / modify_user_address: the new "
                                                              "address.")
    payment_method: PaymentRef | None = Field(default=None, description="modify_payment: the new method; "
                                                                        "modify_items / exchange: the method "
                                                                        "that pays or receives the price "
                                                                        "difference; return: where the refund "
                                                                        "goes.")
    money_owed: str | None = Field(default=None, description="cancel: the refund the customer expects (the "
                                                             "amount paid), 'refund 123.45'; modify_payment: "
                                                             "the order total the new method is charged (the "
                                                             "old one is refunded as much), 'charge 123.45'. "
                                                             "Other intents: None (the items' prices tell).")
    ask: list[str] = Field(default_factory=list, description="order_status: what the customer wants to be told: "
                                                             "'status' (the status name) and 'total' (the sum of "
                                                             "the order's item prices, dollars with two decimals).")
    expect_refusal: bool = Field(default=False, description="True when store policy forbids this request: the "
                                                            "support side must refuse and not write.")
    refusal_reason: str = Field(default="", description="Why policy forbids it (for judges and reports).")


class CustomerBrief(_Model):
    """Everything the customer knows. ``private["user"]`` holds ``model_dump()`` of this model.

    ``brief`` is the natural-language instruction text an LLM customer simulator gets (the engine
    appends ``private[...]["brief"]`` to that role's system prompt); the other fields are the same
    facts, structured, for scripted customers.
    """

    identity: Identity
    knows_email: bool = Field(description="Whether the customer gives the e-mail when asked to authenticate; "
                                          "when False they offer name + zip instead.")
    user_id: str = Field(description="The customer's user id (the customer does not say it unprompted; it is "
                                     "here for scoring and debugging).")
    requests: list[Request]
    brief: str = Field(description="Instructions for an LLM customer simulator.")
