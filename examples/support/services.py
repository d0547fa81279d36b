"""Writes of the demo shop that are not tools: filing a new ticket from the web form."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from examples.support.models import Ticket


def ticket_file(*, customer_email: str, subject: str, body: str) -> Ticket:
    """File a new ticket under the next free id (T-0051 after the seeded T-0050).

    Two people filing at once may pick the same id; the unique constraint refuses the
    second, which then takes the next one.
    """
    for _ in range(20):
        last = Ticket.objects.order_by("-ticket_id").values_list("ticket_id", flat=True).first()
        number = int(last.removeprefix("T-")) + 1 if last else 1
        try:
            with transaction.atomic():
                return Ticket.objects.create(
                    ticket_id=f"T-{number:04d}",
                    customer_email=customer_email,
                    subject=subject,
                    body=body,
                    tags=["submitted"],
                )
        except IntegrityError:
            continue
    raise RuntimeError("could not find a free ticket id after 20 tries")
