"""Inputs and helpers for run tests."""

from __future__ import annotations

from typing import Any

from runs import services
from runs.models import Run


def ticket_input(**overrides: Any) -> dict[str, Any]:
    value = {
        "ticket_id": "T-0001",
        "customer_email": "jane@example.com",
        "subject": "Where is my order?",
        "body": "Hi, order SO-1001 has not arrived yet. Can you check? Jane",
    }
    value.update(overrides)
    return value


def drive(run: Run, *, max_steps: int = 60) -> Run:
    """Execute a run's steps in this process, one after another, until it ends.

    Used where the test wants no workers: pytest-django's ``db`` fixture never fires
    on_commit callbacks, so nothing is enqueued and each step is run here instead.
    """
    for _ in range(max_steps):
        run.refresh_from_db()
        if run.is_terminal:
            return run
        services.run_step_execute(run_id=str(run.id), seq=run.next_seq)
    run.refresh_from_db()
    return run


def seeded_ticket_input(ticket_id: str) -> dict[str, Any]:
    """The run input for one of the demo shop's seeded tickets."""
    from examples.support.models import Ticket

    ticket = Ticket.objects.get(ticket_id=ticket_id)
    return {
        "ticket_id": ticket.ticket_id,
        "customer_email": ticket.customer_email,
        "subject": ticket.subject,
        "body": ticket.body,
    }
