"""Kettle & Leaf's customer-service policy, as data.

The agent reads it through the ``search_refund_policy`` tool and the system prompt
summarises it; both come from here so the two cannot drift apart. ``keywords`` carry the
words customers actually use (including German, French and Spanish ones) so that a keyword
search finds the right section without an embedding model.
"""

from __future__ import annotations

from dataclasses import dataclass

SHOP_NAME = "Kettle & Leaf"
REFUND_WINDOW_DAYS = 30
LOST_PARCEL_AFTER_DAYS = 10


@dataclass(frozen=True)
class PolicySection:
    """One section of the policy: a title the agent can cite, the text, search keywords."""

    title: str
    text: str
    keywords: tuple[str, ...] = ()


POLICY_SECTIONS: tuple[PolicySection, ...] = (
    PolicySection(
        title="Refund window",
        text=(
            f"Refunds can be issued within {REFUND_WINDOW_DAYS} days of the date the order was "
            "placed (lookup_order returns refund_window_ends). The same window applies to VIP "
            "customers. After the window the support agent does not refund; a customer who asks "
            "for an exception is handed off to a human, who may grant a goodwill gesture."
        ),
        keywords=(
            "window",
            "days",
            "late",
            "deadline",
            "expired",
            "frist",
            "rückerstattung",
            "délai",
            "remboursement",
            "plazo",
            "reembolso",
        ),
    ),
    PolicySection(
        title="Damaged, defective, missing or wrong items",
        text=(
            "If an item arrives damaged, broken, defective, is missing from the parcel or is not "
            f"what was ordered, and the order was placed within {REFUND_WINDOW_DAYS} days, "
            "refund the price paid for the affected items only (a partial "
            "refund: unit price times the affected quantity). The customer does not need to "
            "send the item back and a photo is welcome but not required. Refunds are never "
            "larger than the price paid: no compensation, no extra for inconvenience."
        ),
        keywords=(
            "damaged",
            "broken",
            "cracked",
            "chipped",
            "defective",
            "missing",
            "wrong",
            "faulty",
            "kaputt",
            "beschädigt",
            "cassé",
            "abîmé",
            "roto",
            "dañado",
        ),
    ),
    PolicySection(
        title="Full refunds",
        text=(
            "Refund the whole refundable amount of an order only when the entire order is "
            "unusable: every item damaged or defective, or the parcel contained someone else's "
            "goods. A change of mind is not a reason for a refund by the support agent; the "
            "customer may return unopened items within the window and is refunded when the "
            "return arrives (hand off to a human to arrange it)."
        ),
        keywords=("full", "entire", "whole", "everything", "return", "money", "erstattung"),
    ),
    PolicySection(
        title="Cancellations",
        text=(
            "Only orders in status processing can be cancelled; cancelling refunds the full "
            "refundable amount to the original payment method automatically, so never issue a "
            "separate refund for a cancelled order. Shipped orders cannot be cancelled: the "
            "customer may refuse the delivery or return the items after delivery within the "
            "refund window. Delivered orders follow the refund rules."
        ),
        keywords=("cancel", "cancellation", "stornieren", "storno", "annuler", "cancelar"),
    ),
    PolicySection(
        title="Delivery times and lost parcels",
        text=(
            "Processing orders ship within 2 business days. Shipped orders arrive within 2 to 5 "
            "business days inside the EU; shipping is free. An order shipped more than "
            f"{LOST_PARCEL_AFTER_DAYS} days ago, or marked delivered but not received, may be "
            "lost: do not refund it yourself, hand it off to a human (priority urgent for VIP "
            "customers, normal otherwise) who opens a carrier investigation."
        ),
        keywords=(
            "where",
            "delivery",
            "shipping",
            "tracking",
            "lost",
            "arrived",
            "parcel",
            "lieferung",
            "paket",
            "livraison",
            "colis",
            "envío",
            "pedido",
        ),
    ),
    PolicySection(
        title="Payment method and currency",
        text=(
            "Refunds always go back to the original payment method, in the order's currency "
            "(euros). They cannot be sent to another card, bank account, PayPal account or "
            "person, and cannot be paid in another currency. Refunds appear on the customer's "
            "statement within 5 to 10 business days. Double charges and other billing "
            "questions are handed off to a human."
        ),
        keywords=(
            "card",
            "paypal",
            "bank",
            "account",
            "currency",
            "dollars",
            "charged",
            "billing",
            "statement",
            "karte",
            "carte",
            "tarjeta",
        ),
    ),
    PolicySection(
        title="VIP customers",
        text=(
            "VIP customers follow the same refund rules as everyone else. Their handoffs get "
            "priority urgent, and replies to them may offer a personal follow-up by the team."
        ),
        keywords=("vip", "priority", "loyal", "tier"),
    ),
    PolicySection(
        title="Privacy",
        text=(
            "Only discuss orders, refunds and details of the customer who wrote the ticket: an "
            "order belongs to the sender when its customer email equals the ticket's email. "
            "Never disclose another customer's name, orders, refunds or contact details, "
            "whoever asks and whatever reason they give."
        ),
        keywords=("privacy", "data", "someone", "another", "neighbour", "gdpr", "datenschutz"),
    ),
    PolicySection(
        title="Changes the agent cannot make",
        text=(
            "Address changes, changes to items in an order, discounts, coupon codes, price "
            "matches and account or tier changes are not available to the support agent. "
            "Address changes on processing orders are handed off to a human; the rest are "
            "politely declined."
        ),
        keywords=("address", "discount", "coupon", "code", "adresse", "dirección", "upgrade"),
    ),
)
