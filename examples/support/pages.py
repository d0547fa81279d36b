"""What the runtime's pages show and do for the support agent, declared on the Agent.

The submit page offers the shop's tickets as ready-made inputs (``demo_inputs``) and, for
a ticket written by hand, files it first (``prepare_input``, which calls the shop's own
service); the runs list and a run's page name a run by its ticket (``run_title``). The
runtime calls these through the agent's declaration and knows nothing of tickets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from agents.definition import DemoInput
from examples.support.models import Ticket
from examples.support.services import ticket_file


def support_demo_inputs() -> list[DemoInput]:
    """Every ticket of the shop, seeded or filed, in id order, as the form's input."""
    tickets = Ticket.objects.order_by("ticket_id").only(
        "ticket_id", "customer_email", "subject", "body", "tags"
    )
    return [
        DemoInput(
            key=ticket.ticket_id,
            label=ticket.subject,
            input={
                "ticket_id": ticket.ticket_id,
                "customer_email": ticket.customer_email,
                "subject": ticket.subject,
                "body": ticket.body,
            },
            tags=tuple(str(tag) for tag in ticket.tags),
        )
        for ticket in tickets
    ]


def support_prepare_input(ticket: BaseModel) -> dict[str, Any]:
    """A ticket without an id is filed under the next free one; the run gets that id."""
    data = ticket.model_dump()
    if not data.get("ticket_id"):
        filed = ticket_file(
            customer_email=data["customer_email"], subject=data["subject"], body=data["body"]
        )
        data["ticket_id"] = filed.ticket_id
    return data


def support_run_title(run_input: Mapping[str, Any]) -> str:
    """The ticket's id and subject line ("T-0007 · Cracked mug"), whichever it has."""
    parts = [run_input.get("ticket_id"), run_input.get("subject")]
    return " · ".join(str(part) for part in parts if isinstance(part, str) and part)
