"""Whom a support run acts for, and what the policy learns of each call before its verdict.

The run's subject is the ticket's sender. Every order, ticket and customer record a call
reaches is looked up here, with its owner, so the runtime can refuse a call on a record of
someone else whatever the model claims (``policy.engine``). Calls that move money say
how much: a refund its amount, a cancellation the balance it refunds; the policy adds them
up per order and per customer, so splitting a refund never gets under a rule.

Read-only and deterministic: the shop's own tables, never the model's or the ticket's word.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django.db.models import DecimalField, Sum, Value
from django.db.models.functions import Coalesce

from agents.definition import CallFacts, Touch
from examples.support.models import Customer, Order, Refund, Ticket

ZERO = Decimal("0.00")
ORDER_TOOLS = frozenset({"lookup_order", "issue_refund", "cancel_order"})
TICKET_TOOLS = frozenset({"send_reply", "handoff_to_human"})


def support_subject(run_input: Mapping[str, Any]) -> str | None:
    """The customer a ticket's run serves: its sender, by email (case does not matter)."""
    email = run_input.get("customer_email")
    return email.strip().lower() if isinstance(email, str) and email.strip() else None


def _customer_refunded(email: str) -> Decimal:
    total: Decimal = Refund.objects.filter(order__customer__email__iexact=email).aggregate(
        total=Coalesce(Sum("amount"), Value(ZERO), output_field=DecimalField())
    )["total"]
    return total


def _order_facts(tool: str, arguments: Mapping[str, Any]) -> CallFacts:
    order_id = str(arguments.get("order_id", ""))
    order = (
        Order.objects.select_related("customer")
        .annotate(
            refunded=Coalesce(Sum("refunds__amount"), Value(ZERO), output_field=DecimalField())
        )
        .filter(order_id=order_id)
        .first()
    )
    # A refund moves what it asks for, whatever the order: rules judge the amount even
    # when the order is unknown (the tool then refuses it).
    amount: Decimal | None = (
        Decimal(str(arguments.get("amount", "0"))) if tool == "issue_refund" else None
    )
    if order is None:
        # No such order: nothing of anyone's is reached.
        return CallFacts(touches=(Touch("order", order_id, None),), amount=amount)
    owner = order.customer.email.lower()
    refundable = max(order.total - order.refunded, ZERO)
    if tool == "cancel_order":
        # A cancellation refunds the whole remaining balance: it moves that much money.
        amount = refundable
    facts: dict[str, Any] = {
        "order": {
            "id": order.order_id,
            "status": order.status,
            "total": order.total,
            "refunded_total": order.refunded,
            "refundable_amount": refundable,
            "currency": order.currency,
        }
    }
    if amount is not None:
        facts["customer"] = {
            "tier": order.customer.tier,
            "refunded_total": _customer_refunded(owner),
        }
    return CallFacts(touches=(Touch("order", order.order_id, owner),), amount=amount, facts=facts)


def _ticket_facts(arguments: Mapping[str, Any], run_input: Mapping[str, Any]) -> CallFacts:
    ticket_id = str(arguments.get("ticket_id", ""))
    ticket = Ticket.objects.filter(ticket_id=ticket_id).only("customer_email").first()
    if ticket is not None:
        owner: str | None = ticket.customer_email.lower()
    elif ticket_id and ticket_id == run_input.get("ticket_id"):
        owner = support_subject(run_input)  # the run's own ticket, filed on first answer
    else:
        owner = None  # no such ticket: the tool refuses it
    return CallFacts(touches=(Touch("ticket", ticket_id, owner),))


def support_policy_facts(
    tool: str, arguments: Mapping[str, Any], run_input: Mapping[str, Any]
) -> CallFacts:
    """The records one call reaches, their owners, and the money it moves."""
    if tool in ORDER_TOOLS:
        return _order_facts(tool, arguments)
    if tool in TICKET_TOOLS:
        return _ticket_facts(arguments, run_input)
    if tool == "lookup_customer":
        email = str(arguments.get("email", ""))
        exists = Customer.objects.filter(email__iexact=email).exists()
        return CallFacts(
            touches=(Touch("customer", email.lower(), email.lower() if exists else None),)
        )
    return CallFacts()
