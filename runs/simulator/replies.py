"""The simulated agent's wording: customer replies and the operator summary.

Kept apart from the decision logic so that brain.py reads as a policy. Replies open with a
greeting in the ticket's language and continue in English; that is enough for reviewers in a
demo to see that a German ticket was understood.
"""

from __future__ import annotations

from decimal import Decimal

_GREETINGS = {"en": "Hello", "de": "Hallo", "fr": "Bonjour", "es": "Hola"}
_SIGN_OFF = "Best regards,\nCustomer Support"
STATUS_WORDS = ("processing", "shipped", "delivered", "cancelled")
REFUSAL_TEXT = "I'm sorry, but I can't help with that."


def _letter(language: str, *sentences: str) -> str:
    greeting = _GREETINGS.get(language, _GREETINGS["en"])
    return f"{greeting},\n\n" + " ".join(s for s in sentences if s) + f"\n\n{_SIGN_OFF}"


def refund_confirmation(language: str, order_id: str, amount: str, currency: str) -> str:
    """Tell the customer the refund went through."""
    return _letter(
        language,
        f"We have refunded {amount} {currency} for order {order_id}.",
        "It will reach your original payment method within 5-10 business days.",
    )


def cancel_confirmation(language: str, order_id: str) -> str:
    """Tell the customer the order is cancelled."""
    return _letter(
        language,
        f"Your order {order_id} has been cancelled.",
        "You will not be charged for it; any payment already taken will be returned.",
    )


def status_update(language: str, order_id: str, status: str) -> str:
    """Answer "where is my order"."""
    detail = {
        "processing": "We are preparing it and it will ship soon.",
        "shipped": "It is on its way to you.",
        "delivered": "Our carrier reports it as delivered.",
        "cancelled": "It was cancelled, so it will not be shipped.",
    }.get(status, "")
    return _letter(language, f"Your order {order_id} is currently {status}.", detail)


def ask_for_order(language: str, several: bool) -> str:
    """Ask for the order id the ticket did not give."""
    what = (
        "Could you tell us which of your orders this is about (the number looks like SO-1234)?"
        if several
        else "Could you send us your order number (it looks like SO-1234)?"
    )
    return _letter(language, "Thank you for contacting us.", what)


def refund_declined(language: str, order_id: str, why: str) -> str:
    """Explain that the refund is not possible."""
    return _letter(
        language,
        f"We have looked into order {order_id}.",
        f"Unfortunately we cannot refund it: {why}.",
        "If you think this is wrong, reply to this message and a colleague will review it.",
    )


def nothing_to_refund(language: str, order_id: str) -> str:
    """The order has been refunded in full already."""
    return _letter(language, f"Order {order_id} has already been refunded in full.")


def cannot_cancel(language: str, order_id: str, status: str) -> str:
    """A shipped or delivered order can be returned but not cancelled."""
    return _letter(
        language,
        f"Order {order_id} has already been {status}, so it can no longer be cancelled.",
        "You can return it within the return window and we will refund you.",
    )


def already_cancelled(language: str, order_id: str) -> str:
    """The order was cancelled before."""
    return _letter(language, f"Order {order_id} is already cancelled; nothing more is needed.")


def reviewer_decline(language: str, order_id: str) -> str:
    """After a reviewer rejected the action and asked the agent to answer instead."""
    return _letter(
        language,
        f"We have reviewed your request about order {order_id}.",
        "We are not able to do this as requested; a colleague will follow up if needed.",
    )


def money_text(amount: Decimal) -> str:
    """Decimal amount as the tools expect it: "42.50"."""
    return f"{amount:.2f}"
