"""The demo shop's backend: customers, orders, tickets and the records of every effect.

Each effect an agent can cause (a refund, a reply, a cancellation, a handoff) is a row that
carries the action's idempotency key under a unique constraint, and the result the tool
returned. That constraint is what makes a side effect happen at most once: a replay of the
same action finds the row and returns the stored result (see ``tools.py``).

Money is ``Decimal`` with two places, never float. Check constraints back every rule that a
single row can express; the cross-row rule (refunds never exceed the order total) is enforced
by the refund tool under a row lock on the order.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


def _key_not_empty(name: str) -> models.CheckConstraint:
    return models.CheckConstraint(condition=~Q(idempotency_key=""), name=name)


class Customer(models.Model):
    """A shop customer, identified by email."""

    class Tier(models.TextChoices):
        STANDARD = "standard", "Standard"
        VIP = "vip", "VIP"

    email = models.EmailField(unique=True)
    name = models.CharField(max_length=200)
    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.STANDARD)
    language = models.CharField(max_length=8, default="en", help_text="ISO 639-1 code")

    class Meta:
        ordering = ["email"]
        constraints = [
            models.CheckConstraint(
                condition=Q(tier__in=["standard", "vip"]), name="support_customer_tier_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


class Order(models.Model):
    """An order; ``items`` is a list of ``{"sku", "name", "qty", "unit_price"}``.

    ``unit_price`` is stored as a decimal string ("14.00") because JSON has no decimal type
    and a float would round money.
    """

    class Status(models.TextChoices):
        PROCESSING = "processing", "Processing"
        SHIPPED = "shipped", "Shipped"
        DELIVERED = "delivered", "Delivered"
        CANCELLED = "cancelled", "Cancelled"

    order_id = models.CharField(max_length=16, unique=True)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="orders")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PROCESSING)
    items = models.JSONField(default=list)
    total = models.DecimalField(max_digits=10, decimal_places=2)
    currency = models.CharField(max_length=3, default="EUR")
    placed_at = models.DateTimeField()

    class Meta:
        ordering = ["placed_at", "order_id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(order_id__regex=r"^SO-[0-9]{4}$"), name="support_order_id_format"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["processing", "shipped", "delivered", "cancelled"]),
                name="support_order_status_valid",
            ),
            models.CheckConstraint(condition=Q(total__gte=0), name="support_order_total_gte_0"),
            models.CheckConstraint(
                condition=Q(currency__regex=r"^[A-Z]{3}$"), name="support_order_currency_iso"
            ),
        ]

    def __str__(self) -> str:
        return self.order_id


class Ticket(models.Model):
    """An incoming support ticket; ``tags`` label the demo scenario (e.g. "adversarial")."""

    ticket_id = models.CharField(max_length=16, unique=True)
    customer_email = models.EmailField()
    subject = models.CharField(max_length=200)
    body = models.TextField()
    language = models.CharField(max_length=8, default="en", help_text="ISO 639-1 code")
    tags = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["ticket_id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(ticket_id__regex=r"^T-[0-9]{4}$"), name="support_ticket_id_format"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.ticket_id}: {self.subject}"


class Refund(models.Model):
    """The refunds ledger: one row per refund, at most one per idempotency key."""

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="refunds")
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    reason = models.CharField(max_length=500)
    idempotency_key = models.CharField(max_length=255, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="support_refund_amount_gt_0"),
            _key_not_empty("support_refund_key_not_empty"),
        ]

    def __str__(self) -> str:
        return f"refund {self.amount} on {self.order_id}"


class Reply(models.Model):
    """An outgoing reply to a ticket's customer (the demo records it instead of emailing)."""

    ticket = models.ForeignKey(
        Ticket, to_field="ticket_id", on_delete=models.PROTECT, related_name="replies"
    )
    to_email = models.EmailField()
    body = models.TextField()
    idempotency_key = models.CharField(max_length=255, unique=True)
    sent_at = models.DateTimeField(default=timezone.now)
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["sent_at", "id"]
        verbose_name_plural = "replies"
        constraints = [_key_not_empty("support_reply_key_not_empty")]

    def __str__(self) -> str:
        return f"reply to {self.to_email} on {self.ticket_id}"


class Cancellation(models.Model):
    """A cancelled order; cancelling also writes the matching full refund to the ledger."""

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="cancellations")
    reason = models.CharField(max_length=500)
    idempotency_key = models.CharField(max_length=255, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [_key_not_empty("support_cancellation_key_not_empty")]

    def __str__(self) -> str:
        return f"cancellation of {self.order_id}"


class Handoff(models.Model):
    """A ticket handed to a human support agent."""

    class Priority(models.TextChoices):
        LOW = "low", "Low"
        NORMAL = "normal", "Normal"
        URGENT = "urgent", "Urgent"

    ticket = models.ForeignKey(
        Ticket, to_field="ticket_id", on_delete=models.PROTECT, related_name="handoffs"
    )
    summary = models.TextField()
    priority = models.CharField(max_length=16, choices=Priority.choices)
    idempotency_key = models.CharField(max_length=255, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(priority__in=["low", "normal", "urgent"]),
                name="support_handoff_priority_valid",
            ),
            _key_not_empty("support_handoff_key_not_empty"),
        ]

    def __str__(self) -> str:
        return f"handoff of {self.ticket_id} ({self.priority})"
