"""Seed data for the demo shop: 25 customers, 60 orders, 7 prior refunds, 3 cancellations
and the 50 tickets of ``tickets.py``.

Dates are relative to the start of the current day (UTC) at seed time, so the 30-day refund
window always means the same thing for a ticket: "day 29" is still refundable and "day 31"
is not, whenever the demo is seeded. Anchoring on the day rather than the second keeps the
seed idempotent: running it twice on one day changes nothing. Seeding again on a later day
moves the dates along with it.

Every row is written with ``update_or_create`` on its natural key (email, order id, ticket
id, idempotency key). ``reset=True`` also deletes every effect the agent has caused (refunds,
cancellations, replies and handoffs not made by the seed) so a demo can start over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agentdesk.roles import DEMO_QUEUES
from audit.log import audit_record
from audit.models import AuditVerb
from examples.support.models import Cancellation, Customer, Handoff, Order, Refund, Reply, Ticket
from examples.support.tickets import TICKETS
from examples.support.tools import format_money, refund_result
from reviews.models import Queue

SEED_KEY_PREFIX = "seed:"

# sku -> (name, unit price in EUR)
CATALOG: dict[str, tuple[str, Decimal]] = {
    "MUG-STONE-350": ("Stoneware mug 350 ml", Decimal("14.00")),
    "MUG-ENAMEL-300": ("Enamel camp mug 300 ml", Decimal("12.50")),
    "MUG-DOUBLE-250": ("Double-wall glass 250 ml", Decimal("18.00")),
    "TEA-SENCHA-100": ("Japanese sencha, 100 g", Decimal("11.90")),
    "TEA-ASSAM-250": ("Assam breakfast tea, 250 g", Decimal("9.50")),
    "TEA-EARL-100": ("Earl Grey, 100 g", Decimal("8.90")),
    "TEA-ROOIBOS-200": ("Rooibos vanilla, 200 g", Decimal("7.80")),
    "TEA-CHAI-200": ("Masala chai, 200 g", Decimal("11.00")),
    "TEA-MATCHA-30": ("Ceremonial matcha, 30 g", Decimal("24.00")),
    "KET-GOOSE-1L": ("Gooseneck kettle 1 l, temperature control", Decimal("89.00")),
    "KET-STOVE-15": ("Enamel stovetop kettle 1.5 l", Decimal("45.00")),
    "GRN-BURR-HAND": ("Hand burr grinder", Decimal("59.00")),
    "GRN-BURR-ELEC": ("Electric burr grinder", Decimal("129.00")),
    # Over EUR 250 on its own: T-0003 refunds it whole, the demo's two-person approval.
    "GRN-BURR-PRO": ("Electric burr grinder Pro, 64 mm flat burrs", Decimal("279.00")),
    "POT-CAST-800": ("Cast-iron teapot 800 ml", Decimal("52.00")),
    "POT-GLASS-600": ("Glass teapot with infuser 600 ml", Decimal("29.00")),
    "ACC-INFUSER": ("Stainless tea infuser", Decimal("6.50")),
    "ACC-WHISK": ("Bamboo matcha whisk", Decimal("15.00")),
    "ACC-SCALE": ("Brewing scale 0.1 g", Decimal("34.00")),
    "ACC-FILTER-100": ("Paper tea filters, 100 pcs", Decimal("4.20")),
}

# email, name, tier, language
CUSTOMERS: tuple[tuple[str, str, str, str], ...] = (
    ("jane@example.com", "Jane Doe", "standard", "en"),
    ("tom.baker@example.com", "Tom Baker", "standard", "en"),
    ("priya.patel@example.com", "Priya Patel", "vip", "en"),
    ("lukas.schmidt@example.org", "Lukas Schmidt", "standard", "de"),
    ("anna.mueller@example.org", "Anna Müller", "vip", "de"),
    ("marie.dubois@example.net", "Marie Dubois", "standard", "fr"),
    ("julien.martin@example.net", "Julien Martin", "standard", "fr"),
    ("carmen.garcia@example.org", "Carmen García", "standard", "es"),
    ("diego.lopez@example.org", "Diego López", "vip", "es"),
    ("oliver.smith@example.com", "Oliver Smith", "standard", "en"),
    ("emma.wilson@example.com", "Emma Wilson", "standard", "en"),
    ("noah.brown@example.com", "Noah Brown", "standard", "en"),
    ("sofia.rossi@example.net", "Sofia Rossi", "standard", "en"),
    ("liam.oconnor@example.com", "Liam O'Connor", "vip", "en"),
    ("mia.jensen@example.net", "Mia Jensen", "standard", "en"),
    ("felix.wagner@example.org", "Felix Wagner", "standard", "de"),
    ("claire.lefevre@example.net", "Claire Lefèvre", "vip", "fr"),
    ("javier.romero@example.org", "Javier Romero", "standard", "es"),
    ("hannah.klein@example.org", "Hannah Klein", "standard", "de"),
    ("george.evans@example.com", "George Evans", "standard", "en"),
    ("isabel.santos@example.net", "Isabel Santos", "standard", "en"),
    ("max.fischer@example.org", "Max Fischer", "standard", "de"),
    ("lucy.chen@example.com", "Lucy Chen", "vip", "en"),
    ("ahmed.hassan@example.com", "Ahmed Hassan", "standard", "en"),
    ("rachel.green@example.com", "Rachel Green", "standard", "en"),
)


@dataclass(frozen=True)
class OrderSeed:
    """An order: ``days_ago`` counts back from the start of the seed day."""

    order_id: str
    email: str
    status: str
    days_ago: int
    lines: tuple[tuple[str, int], ...]  # (sku, qty)


P, S, D, C = "processing", "shipped", "delivered", "cancelled"

ORDERS: tuple[OrderSeed, ...] = (
    OrderSeed(
        "SO-1001", "tom.baker@example.com", S, 3, (("TEA-ASSAM-250", 2), ("MUG-STONE-350", 1))
    ),
    OrderSeed(
        "SO-1002", "priya.patel@example.com", D, 5, (("POT-GLASS-600", 1), ("TEA-SENCHA-100", 2))
    ),
    OrderSeed("SO-1003", "oliver.smith@example.com", D, 12, (("GRN-BURR-PRO", 1),)),
    OrderSeed(
        "SO-1004", "emma.wilson@example.com", P, 1, (("KET-GOOSE-1L", 1), ("TEA-EARL-100", 1))
    ),
    OrderSeed("SO-1005", "noah.brown@example.com", S, 2, (("GRN-BURR-HAND", 1), ("ACC-SCALE", 1))),
    OrderSeed("SO-1006", "george.evans@example.com", D, 45, (("MUG-STONE-350", 4),)),
    OrderSeed("SO-1007", "jane@example.com", D, 70, (("TEA-EARL-100", 2),)),
    OrderSeed(
        "SO-1008", "lukas.schmidt@example.org", S, 4, (("TEA-ROOIBOS-200", 3), ("ACC-INFUSER", 1))
    ),
    OrderSeed(
        "SO-1009", "marie.dubois@example.net", D, 6, (("KET-GOOSE-1L", 1), ("TEA-SENCHA-100", 1))
    ),
    OrderSeed(
        "SO-1010",
        "carmen.garcia@example.org",
        P,
        1,
        (("POT-CAST-800", 1), ("TEA-MATCHA-30", 1), ("ACC-WHISK", 1)),
    ),
    OrderSeed(
        "SO-1011", "rachel.green@example.com", S, 9, (("MUG-ENAMEL-300", 2), ("TEA-CHAI-200", 1))
    ),
    OrderSeed(
        "SO-1012", "ahmed.hassan@example.com", D, 7, (("TEA-MATCHA-30", 1), ("ACC-WHISK", 1))
    ),
    OrderSeed(
        "SO-1013", "max.fischer@example.org", D, 10, (("KET-STOVE-15", 1), ("TEA-ASSAM-250", 1))
    ),
    OrderSeed("SO-1014", "julien.martin@example.net", D, 16, (("MUG-DOUBLE-250", 2),)),
    OrderSeed("SO-1015", "isabel.santos@example.net", D, 8, (("TEA-MATCHA-30", 1),)),
    OrderSeed(
        "SO-1016", "mia.jensen@example.net", D, 25, (("ACC-INFUSER", 2), ("TEA-EARL-100", 1))
    ),
    OrderSeed("SO-1017", "sofia.rossi@example.net", D, 40, (("POT-GLASS-600", 1),)),
    OrderSeed("SO-1018", "liam.oconnor@example.com", D, 60, (("GRN-BURR-HAND", 1),)),
    OrderSeed(
        "SO-1019",
        "hannah.klein@example.org",
        D,
        6,
        (("TEA-SENCHA-100", 2), ("TEA-ROOIBOS-200", 2), ("TEA-EARL-100", 2)),
    ),
    OrderSeed("SO-1020", "lucy.chen@example.com", D, 3, (("ACC-WHISK", 1), ("TEA-MATCHA-30", 2))),
    OrderSeed(
        "SO-1021", "diego.lopez@example.org", D, 8, (("POT-CAST-800", 1), ("TEA-SENCHA-100", 1))
    ),
    OrderSeed(
        "SO-1022", "claire.lefevre@example.net", S, 2, (("KET-GOOSE-1L", 1), ("MUG-DOUBLE-250", 2))
    ),
    OrderSeed(
        "SO-1023", "anna.mueller@example.org", D, 20, (("GRN-BURR-ELEC", 1), ("ACC-SCALE", 1))
    ),
    OrderSeed("SO-1024", "felix.wagner@example.org", P, 1, (("TEA-ASSAM-250", 4),)),
    OrderSeed(
        "SO-1025", "javier.romero@example.org", D, 11, (("KET-STOVE-15", 1), ("MUG-ENAMEL-300", 2))
    ),
    OrderSeed(
        "SO-1026", "tom.baker@example.com", D, 15, (("POT-GLASS-600", 1), ("ACC-INFUSER", 1))
    ),
    OrderSeed(
        "SO-1027",
        "priya.patel@example.com",
        D,
        18,
        (("MUG-STONE-350", 2), ("TEA-CHAI-200", 2), ("ACC-FILTER-100", 2)),
    ),
    OrderSeed("SO-1028", "jane@example.com", D, 35, (("MUG-DOUBLE-250", 1),)),
    OrderSeed(
        "SO-1029", "george.evans@example.com", D, 29, (("GRN-BURR-HAND", 1), ("ACC-FILTER-100", 1))
    ),
    OrderSeed("SO-1030", "emma.wilson@example.com", D, 31, (("KET-STOVE-15", 1),)),
    OrderSeed("SO-1031", "oliver.smith@example.com", D, 50, (("TEA-ASSAM-250", 1),)),
    OrderSeed("SO-1032", "noah.brown@example.com", D, 22, (("MUG-ENAMEL-300", 4),)),
    OrderSeed("SO-1033", "lukas.schmidt@example.org", D, 33, (("KET-STOVE-15", 1),)),
    OrderSeed(
        "SO-1034",
        "carmen.garcia@example.org",
        D,
        13,
        (("TEA-ROOIBOS-200", 2), ("MUG-STONE-350", 1)),
    ),
    OrderSeed("SO-1035", "marie.dubois@example.net", D, 9, (("MUG-STONE-350", 2),)),
    OrderSeed("SO-1036", "julien.martin@example.net", P, 2, (("TEA-SENCHA-100", 3),)),
    OrderSeed("SO-1037", "lucy.chen@example.com", D, 4, (("ACC-SCALE", 1), ("KET-GOOSE-1L", 1))),
    OrderSeed("SO-1038", "oliver.smith@example.com", C, 6, (("MUG-DOUBLE-250", 3),)),
    OrderSeed(
        "SO-1039",
        "mia.jensen@example.net",
        D,
        2,
        (("ACC-INFUSER", 1), ("TEA-EARL-100", 2), ("POT-GLASS-600", 1)),
    ),
    OrderSeed("SO-1040", "max.fischer@example.org", S, 21, (("GRN-BURR-ELEC", 1),)),
    OrderSeed(
        "SO-1041", "javier.romero@example.org", S, 1, (("TEA-MATCHA-30", 1), ("ACC-WHISK", 1))
    ),
    OrderSeed(
        "SO-1042",
        "jane@example.com",
        D,
        10,
        (("KET-STOVE-15", 1), ("MUG-STONE-350", 2), ("TEA-CHAI-200", 1)),
    ),
    OrderSeed(
        "SO-1043", "rachel.green@example.com", D, 14, (("KET-STOVE-15", 1), ("TEA-EARL-100", 1))
    ),
    OrderSeed(
        "SO-1044", "ahmed.hassan@example.com", D, 5, (("MUG-ENAMEL-300", 1), ("TEA-ASSAM-250", 1))
    ),
    OrderSeed("SO-1045", "ahmed.hassan@example.com", S, 3, (("POT-CAST-800", 1),)),
    OrderSeed("SO-1046", "liam.oconnor@example.com", D, 7, (("MUG-STONE-350", 3),)),
    OrderSeed(
        "SO-1047", "sofia.rossi@example.net", D, 9, (("ACC-SCALE", 1), ("TEA-SENCHA-100", 1))
    ),
    OrderSeed("SO-1048", "anna.mueller@example.org", D, 55, (("TEA-MATCHA-30", 3),)),
    OrderSeed(
        "SO-1049", "diego.lopez@example.org", D, 28, (("ACC-WHISK", 1), ("TEA-MATCHA-30", 1))
    ),
    OrderSeed("SO-1050", "claire.lefevre@example.net", D, 38, (("POT-CAST-800", 1),)),
    OrderSeed("SO-1051", "felix.wagner@example.org", D, 26, (("MUG-STONE-350", 2),)),
    OrderSeed("SO-1052", "hannah.klein@example.org", C, 19, (("KET-GOOSE-1L", 1),)),
    OrderSeed(
        "SO-1053",
        "isabel.santos@example.net",
        D,
        44,
        (("TEA-ROOIBOS-200", 1), ("ACC-FILTER-100", 1)),
    ),
    OrderSeed("SO-1054", "lucy.chen@example.com", D, 90, (("GRN-BURR-ELEC", 1),)),
    OrderSeed("SO-1055", "george.evans@example.com", D, 12, (("TEA-CHAI-200", 2),)),
    OrderSeed("SO-1056", "rachel.green@example.com", C, 30, (("ACC-SCALE", 1),)),
    OrderSeed("SO-1057", "mia.jensen@example.net", P, 1, (("TEA-SENCHA-100", 1),)),
    OrderSeed("SO-1058", "tom.baker@example.com", P, 1, (("MUG-DOUBLE-250", 2),)),
    OrderSeed("SO-1059", "emma.wilson@example.com", S, 5, (("TEA-EARL-100", 3),)),
    OrderSeed("SO-1060", "priya.patel@example.com", D, 65, (("KET-GOOSE-1L", 1),)),
)

# order id, amount, reason, days ago: refunds made before the demo starts
PRIOR_REFUNDS: tuple[tuple[str, Decimal, str, int], ...] = (
    ("SO-1026", Decimal("35.50"), "glass teapot and infuser arrived broken", 9),
    ("SO-1027", Decimal("14.00"), "one stoneware mug arrived chipped", 15),
    ("SO-1032", Decimal("12.50"), "one enamel mug dented in transit", 18),
    ("SO-1060", Decimal("20.00"), "goodwill: delivery two weeks late", 50),
)

# order id, reason, days ago: each also refunds the order in full, as cancel_order does
PRIOR_CANCELLATIONS: tuple[tuple[str, str, int], ...] = (
    ("SO-1038", "customer no longer needs the glasses", 5),
    ("SO-1052", "customer ordered the wrong kettle", 19),
    ("SO-1056", "duplicate order", 30),
)


def seed_anchor() -> datetime:
    """The start of the current day (UTC): every seeded date counts back from it."""
    return timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)


def order_items(lines: tuple[tuple[str, int], ...]) -> tuple[list[dict[str, Any]], Decimal]:
    """The items JSON for an order's lines and its total."""
    items = []
    total = Decimal("0.00")
    for sku, qty in lines:
        name, price = CATALOG[sku]
        items.append({"sku": sku, "name": name, "qty": qty, "unit_price": format_money(price)})
        total += price * qty
    return items, total


def _at(anchor: datetime, days_ago: int, hour: int) -> datetime:
    return anchor - timedelta(days=days_ago) + timedelta(hours=hour)


def _seed_refund(order: Order, key: str, amount: Decimal, reason: str, at: datetime) -> None:
    refund, _ = Refund.objects.update_or_create(
        idempotency_key=key,
        defaults={"order": order, "amount": amount, "reason": reason, "created_at": at},
    )
    refunded_after = sum(
        (r.amount for r in order.refunds.filter(created_at__lte=at)), Decimal("0.00")
    )
    result = refund_result(refund, refunded_after)
    if refund.result != result:
        refund.result = result
        refund.save(update_fields=["result"])


@transaction.atomic
def seed_shop(*, reset: bool = False) -> None:
    """Create or refresh the demo shop; running it twice on one day changes nothing.

    With ``reset``, first delete every reply, handoff, cancellation and refund that the seed
    did not make, so orders the agent cancelled or refunded are back to their seeded state.
    """
    if reset:
        not_seeded = ~Q(idempotency_key__startswith=SEED_KEY_PREFIX)
        for model in (Reply, Handoff, Cancellation, Refund):
            model._default_manager.filter(not_seeded).delete()

    anchor = seed_anchor()
    customers = {}
    for email, name, tier, language in CUSTOMERS:
        customers[email], _ = Customer.objects.update_or_create(
            email=email, defaults={"name": name, "tier": tier, "language": language}
        )

    orders = {}
    for seed in ORDERS:
        items, total = order_items(seed.lines)
        hour = 8 + int(seed.order_id[-2:]) % 12
        orders[seed.order_id], _ = Order.objects.update_or_create(
            order_id=seed.order_id,
            defaults={
                "customer": customers[seed.email],
                "status": seed.status,
                "items": items,
                "total": total,
                "currency": "EUR",
                "placed_at": _at(anchor, seed.days_ago, hour),
            },
        )

    for order_id, amount, reason, days_ago in PRIOR_REFUNDS:
        key = f"{SEED_KEY_PREFIX}{order_id}:refund"
        _seed_refund(orders[order_id], key, amount, reason, _at(anchor, days_ago, 15))

    for order_id, reason, days_ago in PRIOR_CANCELLATIONS:
        order = orders[order_id]
        at = _at(anchor, days_ago, 14)
        key = f"{SEED_KEY_PREFIX}{order_id}:cancel"
        cancellation, _ = Cancellation.objects.update_or_create(
            idempotency_key=key, defaults={"order": order, "reason": reason, "created_at": at}
        )
        _seed_refund(order, f"{key}:refund", order.total, f"order cancelled: {reason}", at)
        result = {
            "cancellation_id": cancellation.pk,
            "order_id": order_id,
            "status": Order.Status.CANCELLED.value,
            "refunded_amount": format_money(order.total),
            "currency": order.currency,
        }
        if cancellation.result != result:
            cancellation.result = result
            cancellation.save(update_fields=["result"])

    for ticket in TICKETS:
        Ticket.objects.update_or_create(
            ticket_id=ticket.ticket_id,
            defaults={
                "customer_email": ticket.customer_email,
                "subject": ticket.subject,
                "body": ticket.body,
                "language": ticket.language,
                "tags": list(ticket.tags),
            },
        )
    queues_seed()


@transaction.atomic
def queues_seed() -> None:
    """The queues the support agent's policy names (``refunds``, ``refunds-senior``, ``support``).

    The runtime never creates a queue, and a configuration naming one that does not
    exist is refused, so the demo's queues are created here, with no reviewers: the
    demo accounts (agentdesk.roles) grant theirs. An existing queue is left as it is.
    """
    for slug, name, tier, sla, escalate_to, _, _ in DEMO_QUEUES:  # targets come first
        queue, created = Queue.objects.get_or_create(
            slug=slug,
            defaults={
                "name": name,
                "tier": tier,
                "sla_minutes": sla,
                "escalate_to": Queue.objects.filter(slug=escalate_to).first()
                if escalate_to
                else None,
            },
        )
        if created:
            audit_record(
                actor=None,
                actor_label="seed",
                verb=AuditVerb.QUEUE_CREATED,
                object_type="queue",
                object_id=str(queue.pk),
                after={"slug": slug, "name": name, "reason": "the demo's queues"},
            )
