"""The support agent's tools: three lookups and four effects on the demo shop.

Every tool takes its validated pydantic arguments and a ``ToolContext`` and returns plain
JSON-ready data (money as decimal strings). Expected failures raise ``ToolError`` with a
short code, which the runtime hands back to the model.

At most once. Each KEYED tool records its effect in a row whose ``idempotency_key`` column is
unique, together with the result it returned, and works in this order inside one transaction:

1. If a row already holds the key, return its stored result: the effect has happened, so a
   replay must not be validated again (the balance may have changed since).
2. Lock what the effect depends on (``select_for_update`` on the order), then look for the
   key once more: a concurrent replay may have committed while this one waited for the lock.
3. Validate against the current state and write the effect and its result in a savepoint. If
   the insert hits the unique key anyway (a race on an unlocked path), roll the savepoint
   back and return the row that won.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from django.db import IntegrityError, models, transaction
from django.db.models import DecimalField, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field

from agents.definition import Idempotency, Risk, Tool, ToolContext, ToolError
from examples.support.models import Cancellation, Customer, Handoff, Order, Refund, Reply, Ticket
from examples.support.policy_text import POLICY_SECTIONS, REFUND_WINDOW_DAYS, PolicySection

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
MAX_POLICY_MATCHES = 3

# --- argument schemas --------------------------------------------------------------------
# [0-9] rather than \d: pydantic's regex engine treats \d as any Unicode digit.
OrderId = Annotated[
    str, Field(pattern=r"^SO-[0-9]{4}$", description='An order id such as "SO-1042".')
]
TicketId = Annotated[
    str, Field(pattern=r"^T-[0-9]{4}$", description='A ticket id such as "T-0007".')
]
Email = Annotated[
    str,
    Field(
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        max_length=254,
        description="The customer's email address.",
    ),
]
Reason = Annotated[
    str,
    Field(
        min_length=1,
        max_length=500,
        description="A short reason for the shop's records, e.g. 'mug arrived cracked'.",
    ),
]
Amount = Annotated[
    Decimal,
    Field(
        gt=0,
        max_digits=10,
        decimal_places=2,
        description='Euros, at most two decimals, e.g. "14.00".',
    ),
]


class _Args(BaseModel):
    """Tool arguments: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LookupOrderArgs(_Args):
    order_id: OrderId


class LookupCustomerArgs(_Args):
    email: Email


class SearchRefundPolicyArgs(_Args):
    query: str = Field(
        min_length=1, max_length=200, description="Keywords, e.g. 'damaged item refund'."
    )


class SendReplyArgs(_Args):
    ticket_id: TicketId
    body: str = Field(
        min_length=1,
        max_length=4000,
        description="The full reply text, in the customer's language, signed by the shop.",
    )


class IssueRefundArgs(_Args):
    order_id: OrderId
    amount: Amount
    reason: Reason


class CancelOrderArgs(_Args):
    order_id: OrderId
    reason: Reason


class HandoffToHumanArgs(_Args):
    ticket_id: TicketId
    summary: str = Field(
        min_length=1,
        max_length=2000,
        description="What the customer wants, what you found and why a human must decide.",
    )
    priority: Literal["low", "normal", "urgent"] = Field(
        description="urgent for VIP customers and lost parcels, low for non-requests."
    )


# --- reads -------------------------------------------------------------------------------
def format_money(amount: Decimal) -> str:
    """Money as the tools show it: a decimal string with two places ("84.00")."""
    return str(amount.quantize(CENT))


def _refunded_total(order: Order) -> Decimal:
    total: Decimal = order.refunds.aggregate(
        total=Coalesce(Sum("amount"), Value(ZERO), output_field=DecimalField())
    )["total"]
    return total


def refundable_amount(order: Order) -> Decimal:
    """What the ledger still allows refunding on ``order`` (never below zero)."""
    return max(order.total - _refunded_total(order), ZERO)


def _order_not_found(order_id: str) -> ToolError:
    return ToolError("order_not_found", f"No order {order_id} exists.", order_id=order_id)


def lookup_order(args: LookupOrderArgs, ctx: ToolContext) -> dict[str, Any]:
    """An order with its customer, items and refund balance.

    ``refundable_amount`` is what the ledger still allows (total minus refunds); the refund
    window is computed from the order date so the model never has to do date arithmetic.
    """
    order = Order.objects.select_related("customer").filter(order_id=args.order_id).first()
    if order is None:
        raise _order_not_found(args.order_id)
    refunded = _refunded_total(order)
    window_ends = timezone.localtime(order.placed_at).date() + timedelta(days=REFUND_WINDOW_DAYS)
    return {
        "order_id": order.order_id,
        "status": order.status,
        "placed_at": order.placed_at.isoformat(),
        "customer": {
            "email": order.customer.email,
            "name": order.customer.name,
            "tier": order.customer.tier,
        },
        "items": order.items,
        "total": format_money(order.total),
        "currency": order.currency,
        "refunded_total": format_money(refunded),
        "refundable_amount": format_money(max(order.total - refunded, ZERO)),
        "refund_window_ends": window_ends.isoformat(),
        "refund_window_open": timezone.localdate() <= window_ends,
    }


def lookup_customer(args: LookupCustomerArgs, ctx: ToolContext) -> dict[str, Any]:
    """A customer, their orders and their refund history (emails match case-insensitively)."""
    customer = Customer.objects.filter(email__iexact=args.email).first()
    if customer is None:
        raise ToolError(
            "customer_not_found", f"No customer with email {args.email} exists.", email=args.email
        )
    orders = customer.orders.order_by("placed_at", "order_id")
    refunds = Refund.objects.filter(order__customer=customer).select_related("order")
    return {
        "email": customer.email,
        "name": customer.name,
        "tier": customer.tier,
        "language": customer.language,
        "orders": [
            {
                "order_id": order.order_id,
                "status": order.status,
                "total": format_money(order.total),
                "currency": order.currency,
                "placed_at": order.placed_at.isoformat(),
            }
            for order in orders
        ],
        "refunds": [
            {
                "refund_id": refund.pk,
                "order_id": refund.order.order_id,
                "amount": format_money(refund.amount),
                "currency": refund.order.currency,
                "reason": refund.reason,
                "created_at": refund.created_at.isoformat(),
            }
            for refund in refunds.order_by("created_at", "id")
        ],
    }


_WORD = re.compile(r"[^\W_]+")
_STOPWORDS = frozenset(
    {
        "the",
        "and",
        "for",
        "are",
        "was",
        "were",
        "you",
        "your",
        "our",
        "with",
        "this",
        "that",
        "what",
        "when",
        "where",
        "which",
        "how",
        "can",
        "not",
        "but",
        "have",
        "has",
        "had",
        "from",
        "into",
        "about",
        "please",
        "want",
        "would",
        "could",
        "need",
        "does",
        "did",
    }
)


def _tokens(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in _STOPWORDS}


def _hits(token: str, words: set[str]) -> bool:
    """A query word hits a text word when one is a prefix of the other ("refunds"/"refund")."""
    return any(w.startswith(token) or (len(w) >= 4 and token.startswith(w)) for w in words)


def _policy_score(tokens: set[str], section: PolicySection) -> int:
    keywords = {k.lower() for k in section.keywords}
    title, text = _tokens(section.title), _tokens(section.text)
    return sum(
        3 * _hits(t, keywords) + 2 * _hits(t, title) + _hits(t, text) for t in sorted(tokens)
    )


def search_refund_policy(args: SearchRefundPolicyArgs, ctx: ToolContext) -> dict[str, Any]:
    """Up to three policy sections matching the query's keywords, best first.

    A keyword match weighs 3, a title match 2, a body match 1; ties keep the policy's own
    order, so the same query always returns the same sections.
    """
    tokens = _tokens(args.query)
    scored = [(_policy_score(tokens, s), i, s) for i, s in enumerate(POLICY_SECTIONS)]
    best = sorted((x for x in scored if x[0] > 0), key=lambda x: (-x[0], x[1]))
    return {
        "query": args.query,
        "matches": [{"section": s.title, "text": s.text} for _, _, s in best[:MAX_POLICY_MATCHES]],
    }


# --- effects -----------------------------------------------------------------------------
def _require_key(ctx: ToolContext) -> str:
    if not ctx.idempotency_key:
        raise ValueError("a KEYED tool needs the action's idempotency key")
    return ctx.idempotency_key


def _stored_result(model: type[models.Model], key: str) -> dict[str, Any] | None:
    """The result recorded under ``key``, or None if this effect has not happened."""
    stored: dict[str, Any] | None = (
        model._default_manager.filter(idempotency_key=key).values_list("result", flat=True).first()
    )
    return stored


def _record_once(
    model: type[models.Model], key: str, write: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Run ``write`` in a savepoint; if another call holds ``key``, return its stored result.

    Only a clash on the key is absorbed: any other integrity error has no stored result and
    propagates.
    """
    try:
        with transaction.atomic():
            return write()
    except IntegrityError:
        stored = _stored_result(model, key)
        if stored is None:
            raise
        return stored


def _locked_order(order_id: str) -> Order:
    order = Order.objects.select_for_update().filter(order_id=order_id).first()
    if order is None:
        raise _order_not_found(order_id)
    return order


def refund_result(refund: Refund, refunded_after: Decimal) -> dict[str, Any]:
    """What ``issue_refund`` returns for ``refund``; the seed stores the same shape."""
    order = refund.order
    return {
        "refund_id": refund.pk,
        "order_id": order.order_id,
        "amount": format_money(refund.amount),
        "currency": order.currency,
        "refunded_total": format_money(refunded_after),
        "refundable_amount": format_money(order.total - refunded_after),
    }


def _ticket_of_run(ticket_id: str, ctx: ToolContext) -> Ticket:
    """The ticket a reply or hand-off belongs to.

    A ticket submitted through the API or the form may be new to the shop: it is filed
    from the run's own input the first time the agent answers it. Any other unknown id is
    refused, so the model cannot invent a ticket to write to.
    """
    ticket = Ticket.objects.filter(ticket_id=ticket_id).first()
    if ticket is not None:
        return ticket
    if ctx.input.get("ticket_id") != ticket_id:
        raise ToolError("ticket_not_found", f"No ticket {ticket_id} exists.", ticket_id=ticket_id)
    ticket, _ = Ticket.objects.get_or_create(
        ticket_id=ticket_id,
        defaults={
            "customer_email": ctx.input["customer_email"],
            "subject": ctx.input["subject"],
            "body": ctx.input["body"],
        },
    )
    return ticket


def send_reply(args: SendReplyArgs, ctx: ToolContext) -> dict[str, Any]:
    """Send a reply to the ticket's customer; the address comes from the ticket, not the model.

    Taking the recipient from the ticket means no ticket text can make the agent write to
    someone else.
    """
    key = _require_key(ctx)
    with transaction.atomic():
        if (stored := _stored_result(Reply, key)) is not None:
            return stored
        ticket = _ticket_of_run(args.ticket_id, ctx)

        def write() -> dict[str, Any]:
            reply = Reply.objects.create(
                ticket=ticket, to_email=ticket.customer_email, body=args.body, idempotency_key=key
            )
            reply.result = {
                "reply_id": reply.pk,
                "ticket_id": ticket.ticket_id,
                "to": reply.to_email,
                "sent_at": reply.sent_at.isoformat(),
            }
            reply.save(update_fields=["result"])
            return reply.result

        return _record_once(Reply, key, write)


def _refund_checked(order: Order, amount: Decimal) -> Decimal:
    """What ``order`` has refunded so far; ToolError if ``amount`` cannot be refunded."""
    refunded = _refunded_total(order)
    refundable = order.total - refunded
    if refundable <= 0:
        raise ToolError(
            "order_fully_refunded",
            f"{order.order_id} has already been refunded in full "
            f"({format_money(refunded)} {order.currency}); nothing is left to refund.",
            order_id=order.order_id,
            refunded_total=format_money(refunded),
        )
    if amount > refundable:
        raise ToolError(
            "refund_exceeds_balance",
            f"Refund of {format_money(amount)} {order.currency} exceeds the refundable "
            f"balance of {order.order_id}: {format_money(refundable)} {order.currency}.",
            order_id=order.order_id,
            amount=format_money(amount),
            refundable=format_money(refundable),
        )
    return refunded


def _cancellable(order: Order) -> None:
    if order.status != Order.Status.PROCESSING:
        raise ToolError(
            "order_not_cancellable",
            f"{order.order_id} is {order.status}; only processing orders can be cancelled.",
            order_id=order.order_id,
            status=order.status,
        )


def issue_refund(args: IssueRefundArgs, ctx: ToolContext) -> dict[str, Any]:
    """Refund part or all of an order, never more than the ledger's balance.

    The balance check runs under a lock on the order row, so two different refunds racing
    on one order cannot both pass it.
    """
    key = _require_key(ctx)
    with transaction.atomic():
        if (stored := _stored_result(Refund, key)) is not None:
            return stored
        order = _locked_order(args.order_id)
        if (stored := _stored_result(Refund, key)) is not None:
            return stored
        refunded = _refund_checked(order, args.amount)

        def write() -> dict[str, Any]:
            refund = Refund.objects.create(
                order=order, amount=args.amount, reason=args.reason, idempotency_key=key
            )
            refund.result = refund_result(refund, refunded + refund.amount)
            refund.save(update_fields=["result"])
            return refund.result

        return _record_once(Refund, key, write)


def cancel_order(args: CancelOrderArgs, ctx: ToolContext) -> dict[str, Any]:
    """Cancel a processing order and refund its whole remaining balance in the same step.

    The refund goes into the ledger under ``<key>:refund``, so a cancelled order is also a
    fully refunded one and ``issue_refund`` refuses it afterwards.
    """
    key = _require_key(ctx)
    with transaction.atomic():
        if (stored := _stored_result(Cancellation, key)) is not None:
            return stored
        order = _locked_order(args.order_id)
        if (stored := _stored_result(Cancellation, key)) is not None:
            return stored
        _cancellable(order)
        refunded = _refunded_total(order)
        balance = order.total - refunded

        def write() -> dict[str, Any]:
            order.status = Order.Status.CANCELLED
            order.save(update_fields=["status"])
            cancellation = Cancellation.objects.create(
                order=order, reason=args.reason, idempotency_key=key
            )
            if balance > 0:
                refund = Refund.objects.create(
                    order=order,
                    amount=balance,
                    reason=f"order cancelled: {args.reason}"[:500],
                    idempotency_key=f"{key}:refund",
                )
                refund.result = refund_result(refund, order.total)
                refund.save(update_fields=["result"])
            cancellation.result = {
                "cancellation_id": cancellation.pk,
                "order_id": order.order_id,
                "status": order.status,
                "refunded_amount": format_money(max(balance, ZERO)),
                "currency": order.currency,
            }
            cancellation.save(update_fields=["result"])
            return cancellation.result

        return _record_once(Cancellation, key, write)


def handoff_to_human(args: HandoffToHumanArgs, ctx: ToolContext) -> dict[str, Any]:
    """Hand the ticket to the human support team with a summary and a priority."""
    key = _require_key(ctx)
    with transaction.atomic():
        if (stored := _stored_result(Handoff, key)) is not None:
            return stored
        ticket = _ticket_of_run(args.ticket_id, ctx)

        def write() -> dict[str, Any]:
            handoff = Handoff.objects.create(
                ticket=ticket, summary=args.summary, priority=args.priority, idempotency_key=key
            )
            handoff.result = {
                "handoff_id": handoff.pk,
                "ticket_id": ticket.ticket_id,
                "priority": handoff.priority,
            }
            handoff.save(update_fields=["result"])
            return handoff.result

        return _record_once(Handoff, key, write)


# --- sandboxed calls (an eval's or a shadow's run: runs.kernel.sandbox) -------------------
#
# What each write would answer, from the same checks against the same data, with nothing
# written: no ids, since no row exists.


def _order(order_id: str) -> Order:
    order = Order.objects.filter(order_id=order_id).first()
    if order is None:
        raise _order_not_found(order_id)
    return order


def _ticket_known(ticket_id: str, ctx: ToolContext) -> tuple[str, str]:
    """The ticket's id and customer address, as ``_ticket_of_run`` would find or file it."""
    ticket = Ticket.objects.filter(ticket_id=ticket_id).first()
    if ticket is not None:
        return ticket.ticket_id, ticket.customer_email
    if ctx.input.get("ticket_id") != ticket_id:
        raise ToolError("ticket_not_found", f"No ticket {ticket_id} exists.", ticket_id=ticket_id)
    return ticket_id, str(ctx.input["customer_email"])


def sandboxed_refund(args: IssueRefundArgs, ctx: ToolContext) -> dict[str, Any]:
    order = _order(args.order_id)
    refunded = _refund_checked(order, args.amount) + args.amount
    return {
        "refund_id": None,
        "order_id": order.order_id,
        "amount": format_money(args.amount),
        "currency": order.currency,
        "refunded_total": format_money(refunded),
        "refundable_amount": format_money(order.total - refunded),
    }


def sandboxed_cancel(args: CancelOrderArgs, ctx: ToolContext) -> dict[str, Any]:
    order = _order(args.order_id)
    _cancellable(order)
    balance = order.total - _refunded_total(order)
    return {
        "cancellation_id": None,
        "order_id": order.order_id,
        "status": Order.Status.CANCELLED,
        "refunded_amount": format_money(max(balance, ZERO)),
        "currency": order.currency,
    }


def sandboxed_reply(args: SendReplyArgs, ctx: ToolContext) -> dict[str, Any]:
    ticket_id, to = _ticket_known(args.ticket_id, ctx)
    return {"reply_id": None, "ticket_id": ticket_id, "to": to, "sent_at": None}


def sandboxed_handoff(args: HandoffToHumanArgs, ctx: ToolContext) -> dict[str, Any]:
    ticket_id, _ = _ticket_known(args.ticket_id, ctx)
    return {"handoff_id": None, "ticket_id": ticket_id, "priority": args.priority}


# --- declarations ------------------------------------------------------------------------
LOOKUP_ORDER = Tool(
    name="lookup_order",
    description=(
        "Look up one order by id: status, order date, customer (email, name, tier), items with "
        "unit prices, total, what has been refunded so far, the refundable_amount still "
        "available, and whether the 30-day refund window is open. Money is in euros as "
        "strings. Fails with order_not_found for an unknown id."
    ),
    func=lookup_order,
    input_schema=LookupOrderArgs,
    risk=Risk.READ,
    idempotency=Idempotency.SAFE,
    timeout_s=5.0,
)
LOOKUP_CUSTOMER = Tool(
    name="lookup_customer",
    description=(
        "Look up a customer by email: name, tier (standard or vip), language, all their "
        "orders (id, status, total, date) and their refund history. Use it when a ticket "
        "names no order id. Only look up the ticket sender's own email. Fails with "
        "customer_not_found."
    ),
    func=lookup_customer,
    input_schema=LookupCustomerArgs,
    risk=Risk.READ,
    idempotency=Idempotency.SAFE,
    timeout_s=5.0,
)
SEARCH_REFUND_POLICY = Tool(
    name="search_refund_policy",
    description=(
        "Search the shop's customer-service policy by keywords (refund window, damaged items, "
        "cancellations, delivery, payment method, VIP, privacy). Returns up to 3 sections."
    ),
    func=search_refund_policy,
    input_schema=SearchRefundPolicyArgs,
    risk=Risk.READ,
    idempotency=Idempotency.SAFE,
    timeout_s=5.0,
)
SEND_REPLY = Tool(
    name="send_reply",
    description=(
        "Send your reply to the customer who wrote the ticket (the address is taken from the "
        "ticket). Send one reply per ticket, after any refund or cancellation has succeeded, "
        "and state only what actually happened."
    ),
    func=send_reply,
    sandbox=sandboxed_reply,
    input_schema=SendReplyArgs,
    risk=Risk.WRITE,
    idempotency=Idempotency.KEYED,
    timeout_s=10.0,
)
ISSUE_REFUND = Tool(
    name="issue_refund",
    description=(
        "Refund money on an order to the customer's original payment method, in euros. "
        "Irreversible. amount may not exceed the order's refundable_amount from lookup_order; "
        "fails with refund_exceeds_balance (with the refundable amount) or "
        "order_fully_refunded. For damaged, missing or wrong items refund only those items."
    ),
    func=issue_refund,
    sandbox=sandboxed_refund,
    input_schema=IssueRefundArgs,
    risk=Risk.IRREVERSIBLE,
    idempotency=Idempotency.KEYED,
    timeout_s=15.0,
)
CANCEL_ORDER = Tool(
    name="cancel_order",
    description=(
        "Cancel an order that is still processing; this also refunds its full remaining "
        "balance, so do not issue a separate refund. Irreversible. Fails with "
        "order_not_cancellable (and the status) for shipped, delivered or cancelled orders."
    ),
    func=cancel_order,
    sandbox=sandboxed_cancel,
    input_schema=CancelOrderArgs,
    risk=Risk.IRREVERSIBLE,
    idempotency=Idempotency.KEYED,
    timeout_s=15.0,
)
HANDOFF_TO_HUMAN = Tool(
    name="handoff_to_human",
    description=(
        "Hand the ticket to the human support team: lost parcels, billing problems, address "
        "changes, exceptions to the policy, or anything you are unsure about. Write a summary "
        "a human can act on without rereading the ticket."
    ),
    func=handoff_to_human,
    sandbox=sandboxed_handoff,
    input_schema=HandoffToHumanArgs,
    risk=Risk.WRITE,
    idempotency=Idempotency.KEYED,
    timeout_s=10.0,
    # A hand-off that cannot be filed (an unknown ticket, the tool down) goes to a person
    # through the escalation queue: the case must not end with nobody holding it.
    reaches_person=True,
)

SUPPORT_TOOLS: tuple[Tool, ...] = (
    LOOKUP_ORDER,
    LOOKUP_CUSTOMER,
    SEARCH_REFUND_POLICY,
    SEND_REPLY,
    ISSUE_REFUND,
    CANCEL_ORDER,
    HANDOFF_TO_HUMAN,
)
