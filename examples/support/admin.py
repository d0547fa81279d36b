"""Django admin for the demo shop.

Customers, orders and tickets are editable demo data. Refunds, replies, cancellations and
handoffs are read-only: each is the record of an effect under its idempotency key, and
editing one would make a replay return something that never happened.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from examples.support.models import Cancellation, Customer, Handoff, Order, Refund, Reply, Ticket


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["email", "name", "tier", "language"]
    list_filter = ["tier", "language"]
    search_fields = ["email", "name"]


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["order_id", "customer", "status", "total", "currency", "placed_at"]
    list_filter = ["status"]
    search_fields = ["order_id", "customer__email"]
    list_select_related = ["customer"]
    date_hierarchy = "placed_at"


@admin.register(Ticket)
class TicketAdmin(admin.ModelAdmin):
    list_display = ["ticket_id", "customer_email", "subject", "language", "tags"]
    list_filter = ["language"]
    search_fields = ["ticket_id", "customer_email", "subject", "body"]


class _EffectAdmin(admin.ModelAdmin):
    """Read-only: effects are written by the tools, once, under their idempotency key."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Refund)
class RefundAdmin(_EffectAdmin):
    list_display = ["id", "order", "amount", "reason", "created_at", "idempotency_key"]
    search_fields = ["order__order_id", "idempotency_key"]
    list_select_related = ["order"]


@admin.register(Reply)
class ReplyAdmin(_EffectAdmin):
    list_display = ["id", "ticket", "to_email", "sent_at", "idempotency_key"]
    search_fields = ["ticket__ticket_id", "to_email", "idempotency_key"]


@admin.register(Cancellation)
class CancellationAdmin(_EffectAdmin):
    list_display = ["id", "order", "reason", "created_at", "idempotency_key"]
    search_fields = ["order__order_id", "idempotency_key"]
    list_select_related = ["order"]


@admin.register(Handoff)
class HandoffAdmin(_EffectAdmin):
    list_display = ["id", "ticket", "priority", "created_at", "idempotency_key"]
    list_filter = ["priority"]
    search_fields = ["ticket__ticket_id", "idempotency_key"]
