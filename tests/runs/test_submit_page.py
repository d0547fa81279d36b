"""The submit page, generated from the agent's declarations, and the runs' titles.

The page knows no agent: its form is the agent's input schema, its ready-made inputs are
the agent's ``demo_inputs``, the agent's ``prepare_input`` runs before the run is created
(the example files its ticket there) and the runs list names a run by ``run_title``. A
second agent with another schema, declared here, shows that nothing is the example's.
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any, Literal

import pytest
from django import forms
from django.test import Client
from pydantic import BaseModel, ConfigDict, Field

from agents import registry
from agents.definition import DemoInput
from examples.support.models import Ticket
from examples.support.seed import seed_shop
from runs import services
from runs.models import Run
from tests.runs.agents import support_agent
from tests.runs.conftest import TEST_AGENTS
from tests.runs.factories import seeded_ticket_input, ticket_input
from tests.snapshot import changed_tables, db_snapshot

pytestmark = pytest.mark.django_db


class OrderQuestion(BaseModel):
    """Another agent's input: a question about an order, nothing like a ticket."""

    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(pattern=r"^SO-[0-9]{4}$", title="Order")
    copies: int = Field(default=1, ge=1, le=5, description="How many to ask about.")
    channel: Literal["mail", "phone"] = "mail"
    note: str | None = Field(default=None, max_length=20)


def _order_title(run_input: Mapping[str, Any]) -> str:
    return f"order {run_input.get('order_id')}"


def _order_demos() -> list[DemoInput]:
    return [
        DemoInput("first", "The first order", {"order_id": "SO-1001", "copies": 2}),
        DemoInput("by-phone", "Asked by phone", {"order_id": "SO-1002", "channel": "phone"}),
    ]


def _render_question(question: BaseModel) -> str:
    assert isinstance(question, OrderQuestion)
    return f"Order {question.order_id}: {question.copies} by {question.channel}"


def _broken_title(run_input: Mapping[str, Any]) -> str:
    raise KeyError("subject")


orders_agent = replace(
    support_agent,
    name="orders",
    input_schema=OrderQuestion,
    render_input=_render_question,
    demo_inputs=_order_demos,
    prepare_input=None,
    run_title=_order_title,
)
untitled_agent = replace(orders_agent, name="untitled", demo_inputs=None, run_title=None)
broken_title_agent = replace(orders_agent, name="broken_title", run_title=_broken_title)


@pytest.fixture(autouse=True)
def _agents(settings: Any, use_test_agents: None) -> Iterator[None]:
    settings.AGENTDESK_AGENTS = [
        *TEST_AGENTS,
        *(
            f"{__name__}.{name}"
            for name in ("orders_agent", "untitled_agent", "broken_title_agent")
        ),
    ]
    registry.agents.cache_clear()
    yield
    registry.agents.cache_clear()


def _login(client: Client, user: Any) -> Client:
    client.force_login(user)
    return client


def _page(client: Client, query: str = "") -> tuple[Any, str]:
    response = client.get(f"/runs/new/{query}")
    assert response.status_code == 200
    return response.context["form"], response.content.decode()


# --- the form is the agent's input schema ----------------------------------------------------


def test_the_support_form_is_the_ticket_schema(client: Client, operator: Any) -> None:
    form, page = _page(_login(client, operator))

    assert list(form.fields) == ["agent", "customer_email", "subject", "body", "ticket_id"]
    assert [form.fields[name].required for name in form.fields] == [True, True, True, True, False]
    assert form.initial == {"agent": "support"}
    assert '<input type="hidden" name="agent" value="support"' in page
    assert form.fields["ticket_id"].help_text == (
        "Filled in when you pick a demo ticket; left empty, a new ticket is filed."
    )
    assert isinstance(form.fields["body"].widget, forms.Textarea)


def test_another_agent_gets_a_form_of_its_own_schema(client: Client, operator: Any) -> None:
    form, page = _page(_login(client, operator), "?agent=orders")

    assert list(form.fields) == ["agent", "order_id", "copies", "channel", "note"]
    assert [form.fields[name].label for name in form.fields][1:] == [
        "Order",
        "Copies",
        "Channel",
        "Note",
    ]
    assert isinstance(form.fields["copies"], forms.IntegerField)
    assert (form.fields["copies"].min_value, form.fields["copies"].max_value) == (1, 5)
    assert form.fields["channel"].choices == [("mail", "mail"), ("phone", "phone")]
    assert form.fields["note"].max_length == 20  # the optional field keeps its length
    assert '<input type="hidden" name="agent" value="orders"' in page
    assert 'name="customer_email"' not in page
    assert "How many to ask about." in page


def test_an_agent_is_picked_by_a_link(client: Client, operator: Any) -> None:
    _, page = _page(_login(client, operator))

    for name in ("support", "orders", "untitled"):
        assert f'<a href="?agent={name}"' in page
    assert '<a href="?agent=support" aria-current="true">support</a>' in page


def test_a_valid_form_of_another_agent_queues_its_input_as_typed(
    client: Client, operator: Any
) -> None:
    _login(client, operator)
    tickets = Ticket.objects.count()

    response = client.post(
        "/runs/new/", {"agent": "orders", "order_id": "SO-1001", "copies": "2", "note": ""}
    )

    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/runs/{run.id}/"
    assert (run.agent_name, run.input) == ("orders", {"order_id": "SO-1001", "copies": 2})
    assert run.submitted_by == operator
    assert Ticket.objects.count() == tickets  # no hook declared: nothing filed


def test_bad_input_gives_field_errors_and_changes_nothing(client: Client, operator: Any) -> None:
    _login(client, operator)
    before = db_snapshot()

    response = client.post(
        "/runs/new/",
        {"agent": "orders", "order_id": "1001", "copies": "9", "channel": "fax", "note": "x" * 21},
    )

    assert response.status_code == 200
    errors = response.context["form"].errors
    assert errors == {
        "order_id": ["Must match ^SO-[0-9]{4}$"],
        "copies": ["Ensure this value is less than or equal to 5."],
        "channel": ["Select a valid choice. fax is not one of the available choices."],
        "note": ["Ensure this value has at most 20 characters (it has 21)."],
    }
    page = response.content.decode()
    assert '<small class="error">Ensure this value is less than or equal to 5.</small>' in page
    assert changed_tables(before, db_snapshot()) == []


def test_an_unknown_agent_posted_is_a_field_error(client: Client, operator: Any) -> None:
    _login(client, operator)
    before = db_snapshot()

    response = client.post("/runs/new/", {"agent": "nobody", **ticket_input(ticket_id="")})

    assert response.status_code == 200
    assert response.context["form"].errors == {
        "agent": ["Select a valid choice. nobody is not one of the available choices."]
    }
    assert changed_tables(before, db_snapshot()) == []


def test_what_the_service_refuses_is_shown_and_nothing_is_saved(
    client: Client, operator: Any, settings: Any
) -> None:
    """Past the form's checks, the service's refusal: its message on the page."""
    _login(client, operator)
    settings.AGENTDESK_MAX_INPUT_BYTES = 21
    before = db_snapshot()

    response = client.post("/runs/new/", {"agent": "orders", "order_id": "SO-1001"})

    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        "input is 22 bytes; the limit is 21 bytes"
    ]
    assert changed_tables(before, db_snapshot()) == []


@pytest.mark.parametrize("persona", ["reviewer", "auditor", "outsider"])
def test_who_may_not_submit_gets_403_and_nothing_changes(
    client: Client, persona: str, request: pytest.FixtureRequest
) -> None:
    _login(client, request.getfixturevalue(persona))
    seed_shop()
    before = db_snapshot()

    # A ticket without an id would be filed by the example's hook, were the page reached.
    posted = client.post("/runs/new/", {"agent": "support", **ticket_input(ticket_id="")})

    assert client.get("/runs/new/?agent=orders&demo=first").status_code == 403
    assert posted.status_code == 403
    assert changed_tables(before, db_snapshot()) == []


# --- demo inputs -----------------------------------------------------------------------------


def test_the_example_offers_its_tickets_as_demo_inputs(client: Client, operator: Any) -> None:
    seed_shop()
    _, page = _page(_login(client, operator))

    links = re.findall(r'<a href="\?agent=support&amp;demo=(T-[0-9]{4})"', page)
    assert links == [f"T-{n:04d}" for n in range(1, 51)]
    subject = Ticket.objects.get(ticket_id="T-0007").subject
    assert f"<code>T-0007</code> {html.escape(subject)}</a>" in page


def test_a_demo_input_fills_the_form_and_submits_as_it_is(client: Client, operator: Any) -> None:
    seed_shop()
    _login(client, operator)
    tickets = Ticket.objects.count()

    form, page = _page(client, "?agent=support&demo=T-0007")
    posted = {name: form[name].value() for name in form.fields}
    response = client.post("/runs/new/", posted)

    assert posted == {"agent": "support", **seeded_ticket_input("T-0007")}
    assert 'aria-current="true"><code>T-0007</code>' in page
    run = Run.objects.get()
    assert response.status_code == 302
    assert run.input == seeded_ticket_input("T-0007")
    assert Ticket.objects.count() == tickets  # the demo ticket is not filed again


def test_another_agents_demo_input_fills_its_form(client: Client, operator: Any) -> None:
    form, page = _page(_login(client, operator), "?agent=orders&demo=first")

    assert form.initial == {"agent": "orders", "order_id": "SO-1001", "copies": 2}
    assert "<code>by-phone</code> Asked by phone</a>" in page
    assert "Demo inputs" in page


def test_an_agent_without_demo_inputs_shows_none(client: Client, operator: Any) -> None:
    _, page = _page(_login(client, operator), "?agent=untitled")

    assert "Demo inputs" not in page


# --- the example's hook: filing a ticket ---------------------------------------------------


def test_a_ticket_written_by_hand_is_filed_by_the_example(client: Client, operator: Any) -> None:
    seed_shop()
    _login(client, operator)

    response = client.post("/runs/new/", {"agent": "support", **ticket_input(ticket_id="")})

    run = Run.objects.get()
    assert response.status_code == 302
    assert run.input == ticket_input(ticket_id="T-0051")
    filed = Ticket.objects.get(ticket_id="T-0051")
    assert (filed.customer_email, filed.subject, filed.body, filed.tags) == (
        "jane@example.com",
        "Where is my order?",
        "Hi, order SO-1001 has not arrived yet. Can you check? Jane",
        ["submitted"],
    )


FILED_ID = ',"ticket_id":"T-0051"'  # what the hook adds to the canonical JSON


def test_a_run_refused_after_the_hook_rolls_the_ticket_back(
    client: Client, operator: Any, settings: Any
) -> None:
    """The input fits the limit until the hook adds the filed ticket's id (``FILED_ID``)."""
    seed_shop()
    _login(client, operator)
    typed = ticket_input(ticket_id="")
    del typed["ticket_id"]
    size = len(json.dumps(typed, sort_keys=True, separators=(",", ":")).encode())
    settings.AGENTDESK_MAX_INPUT_BYTES = size
    before = db_snapshot()

    response = client.post("/runs/new/", {"agent": "support", **typed})

    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        f"input is {size + len(FILED_ID)} bytes; the limit is {size} bytes"
    ]
    assert changed_tables(before, db_snapshot()) == []
    assert not Ticket.objects.filter(ticket_id="T-0051").exists()


def test_the_api_submits_the_input_as_given(operator: Any) -> None:
    """The hook is the submit page's: a run from the API or the command files nothing."""
    seed_shop()
    typed = ticket_input()
    del typed["ticket_id"]

    run, _ = services.run_submit(agent_name="support", run_input=typed, submitted_by=operator)

    assert run.input == typed
    assert not Ticket.objects.filter(ticket_id="T-0051").exists()


# --- the run's title ---------------------------------------------------------------------------


def _title_cells(page: str) -> list[str]:
    return re.findall(r'<td class="run-title">(.*?)</td>', page)


def test_the_runs_list_shows_each_runs_title(client: Client, operator: Any) -> None:
    for agent, run_input in [
        ("support", ticket_input()),
        ("orders", {"order_id": "SO-1002"}),
        ("untitled", {"order_id": "SO-1003"}),
    ]:
        services.run_submit(agent_name=agent, run_input=run_input, submitted_by=operator)

    response = _login(client, operator).get("/runs/")

    assert response.status_code == 200
    # Newest first; the agent without a title has an empty cell.
    assert _title_cells(response.content.decode()) == [
        "",
        "order SO-1002",
        "T-0001 · Where is my order?",
    ]


def test_the_run_page_shows_the_title_and_the_input_by_field(client: Client, operator: Any) -> None:
    run, _ = services.run_submit(
        agent_name="support",
        run_input=ticket_input(body="Line one\nline two"),
        submitted_by=operator,
    )

    page = _login(client, operator).get(f"/runs/{run.id}/").content.decode()

    assert '<p id="run-title"><strong>T-0001 · Where is my order?</strong></p>' in page
    [section] = re.findall(r'<dl class="input-fields">(.*?)</dl>', page, re.DOTALL)
    fields = re.findall(r"<dt>(.*?)</dt><dd( class=\"pre\")?>(.*?)</dd>", section, re.DOTALL)
    assert fields == [
        ("Customer Email", "", "jane@example.com"),
        ("Subject", "", "Where is my order?"),
        ("Body", ' class="pre"', "Line one\nline two"),
        ("Ticket Id", "", "T-0001"),
    ]


def test_a_failing_title_costs_the_title_not_the_page(
    client: Client, operator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    run, _ = services.run_submit(
        agent_name="broken_title", run_input={"order_id": "SO-1001"}, submitted_by=operator
    )

    with caplog.at_level(logging.ERROR, logger="runs.presenters"):
        response = _login(client, operator).get("/runs/")

    assert response.status_code == 200
    assert _title_cells(response.content.decode()) == [""]
    assert [r.getMessage() for r in caplog.records if r.name == "runs.presenters"] == [
        f"run_title of agent 'broken_title' failed on run {run.id}"
    ]
