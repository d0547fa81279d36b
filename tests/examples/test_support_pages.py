"""What the support agent declares for the runtime's pages (examples/support/pages.py).

The runtime calls these through the agent (tests/runs/test_submit_page.py shows the page
doing so); here, what each gives for the example: its tickets as demo inputs, a ticket
filed for input without an id, and a run's title from its ticket.
"""

from __future__ import annotations

import pytest

from examples.support.agent import SupportTicketInput, support_agent
from examples.support.models import Ticket
from examples.support.pages import support_demo_inputs, support_prepare_input, support_run_title
from examples.support.seed import seed_shop
from examples.support.tickets import TICKETS


def test_the_agent_declares_its_pages_hooks() -> None:
    assert support_agent.demo_inputs is support_demo_inputs
    assert support_agent.prepare_input is support_prepare_input
    assert support_agent.run_title is support_run_title


@pytest.mark.django_db
def test_the_demo_inputs_are_the_shops_tickets_as_valid_input() -> None:
    seed_shop()

    demos = support_demo_inputs()

    assert [demo.key for demo in demos] == [seed.ticket_id for seed in TICKETS]
    first, seed = demos[0], TICKETS[0]
    assert (first.label, first.tags) == (seed.subject, seed.tags)
    assert first.input == {
        "ticket_id": seed.ticket_id,
        "customer_email": seed.customer_email,
        "subject": seed.subject,
        "body": seed.body,
    }
    for demo in demos:  # each one submits as it is
        assert SupportTicketInput.model_validate(demo.input).ticket_id == demo.key


@pytest.mark.django_db
def test_a_filed_ticket_is_a_demo_input_too() -> None:
    seed_shop()
    support_prepare_input(SupportTicketInput(customer_email="a@b.example", subject="s", body="b"))

    assert [demo.key for demo in support_demo_inputs()][-2:] == ["T-0050", "T-0051"]


@pytest.mark.django_db
def test_input_without_a_ticket_id_is_filed_under_the_next_one() -> None:
    seed_shop()
    ticket = SupportTicketInput(customer_email="a@b.example", subject="Hello", body="Hi there")

    prepared = support_prepare_input(ticket)

    assert prepared == {
        "customer_email": "a@b.example",
        "subject": "Hello",
        "body": "Hi there",
        "ticket_id": "T-0051",
    }
    filed = Ticket.objects.get(ticket_id="T-0051")
    assert (filed.customer_email, filed.subject, filed.body, filed.tags) == (
        "a@b.example",
        "Hello",
        "Hi there",
        ["submitted"],
    )


@pytest.mark.django_db
def test_input_naming_a_ticket_files_nothing() -> None:
    seed_shop()
    ticket = SupportTicketInput(
        ticket_id="T-0007", customer_email="a@b.example", subject="s", body="b"
    )

    assert support_prepare_input(ticket)["ticket_id"] == "T-0007"
    assert Ticket.objects.count() == len(TICKETS)


@pytest.mark.parametrize(
    ("run_input", "title"),
    [
        ({"ticket_id": "T-0007", "subject": "Cracked mug", "body": "…"}, "T-0007 · Cracked mug"),
        ({"subject": "No id yet"}, "No id yet"),
        ({"ticket_id": "T-0001"}, "T-0001"),
        # Any stored JSON object: a run from before a schema change included.
        ({"ticket_id": 7, "subject": ["not", "text"]}, ""),
        ({}, ""),
    ],
)
def test_the_run_title_is_the_ticket_id_and_subject(
    run_input: dict[str, object], title: str
) -> None:
    assert support_run_title(run_input) == title
