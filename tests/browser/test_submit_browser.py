"""An operator submits runs from the generated submit page in Debian's Chromium.

Daphne serves the app against the test database, with two agents registered. The operator
picks a demo ticket (the example's demo inputs), submits it, then writes a ticket of
their own for the other agent: a bad email is a field error and saves nothing; corrected,
the example files the ticket (T-0051) and the run gets its id. The runs list names both
runs by their tickets. No worker runs: the runs stay queued. Screenshots land in
test-artifacts/ (AGENTDESK_TEST_ARTIFACTS) as submit-*.png.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from agentdesk.roles import roles_sync
from agents import registry
from examples.support.models import Ticket
from examples.support.seed import seed_shop
from runs.models import Run
from tests.conftest import ARTIFACTS
from tests.processes import WebServer
from tests.runs.factories import seeded_ticket_input

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RUN_PAGE = re.compile(r".*/runs/[0-9a-f-]{36}/$")


@pytest.fixture
def two_agents(settings: Any) -> Iterator[None]:
    """Both example agents, set before the web server reads the list from the settings."""
    settings.AGENTDESK_AGENTS = [
        "examples.support.agent.support_agent",
        "examples.support.agent.support_unattended_agent",
    ]
    registry.agents.cache_clear()
    yield
    registry.agents.cache_clear()


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"submit-{name}.png"), full_page=True)


def test_an_operator_submits_a_demo_ticket_and_one_of_their_own(
    two_agents: None, web_server: WebServer, page: Page
) -> None:
    seed_shop()
    operator = get_user_model().objects.create_user("otto", password="otto-pw")
    operator.groups.add(roles_sync()["operator"])
    base = web_server.base_url
    page.goto(f"{base}/login/?next=/runs/new/")
    page.fill("input[name=username]", "otto")
    page.fill("input[name=password]", "otto-pw")
    page.click("button[type=submit]")

    # The default agent's form, its demo tickets beside it; one fills the form.
    expect(page.locator("h1")).to_have_text("Submit a run")
    expect(page.locator("nav[aria-label=Agent] a")).to_have_text(["support", "support-unattended"])
    expect(page.locator(".demo-list li")).to_have_count(50)
    page.locator(".demo-list a", has_text="T-0002").click()
    seeded = seeded_ticket_input("T-0002")
    expect(page.locator("input[name=customer_email]")).to_have_value(seeded["customer_email"])
    expect(page.locator("input[name=ticket_id]")).to_have_value("T-0002")
    _shot(page, "1-demo-ticket")
    page.click("text=Run the agent")
    expect(page).to_have_url(RUN_PAGE)
    expect(page.locator("#run-title")).to_have_text(f"T-0002 · {seeded['subject']}")
    demo_run = Run.objects.get()
    assert (demo_run.agent_name, demo_run.input) == ("support", seeded)

    # The other agent, a ticket written by hand: first with a bad email.
    page.goto(f"{base}/runs/new/")
    page.locator("nav[aria-label=Agent] a", has_text="support-unattended").click()
    expect(page.locator("input[name=agent]")).to_have_value("support-unattended")
    page.fill("input[name=customer_email]", "jane-at-example.com")
    page.fill("input[name=subject]", "Kettle lid cracked")
    page.fill("textarea[name=body]", "The lid of my kettle cracked.\nOrder SO-1043.")
    page.click("text=Run the agent")
    email = page.locator("label", has=page.locator("input[name=customer_email]"))
    expect(email.locator("small.error")).to_have_text(r"Must match ^[^@\s]+@[^@\s]+\.[^@\s]+$")
    expect(page.locator("textarea[name=body]")).to_have_value(
        "The lid of my kettle cracked.\nOrder SO-1043."
    )
    _shot(page, "2-field-error")
    assert (Run.objects.count(), Ticket.objects.count()) == (1, 50)

    page.fill("input[name=customer_email]", "rachel.green@example.com")
    page.click("text=Run the agent")
    expect(page).to_have_url(RUN_PAGE)
    expect(page.locator("#run-title")).to_have_text("T-0051 · Kettle lid cracked")
    _shot(page, "3-run-page")
    filed = Ticket.objects.get(ticket_id="T-0051")
    assert (filed.customer_email, filed.body) == (
        "rachel.green@example.com",
        "The lid of my kettle cracked.\nOrder SO-1043.",
    )
    own_run = Run.objects.exclude(pk=demo_run.pk).get()
    assert (own_run.agent_name, own_run.input["ticket_id"]) == ("support-unattended", "T-0051")

    # The runs list names each run by its ticket, newest first.
    page.goto(f"{base}/runs/")
    expect(page.locator("td.run-title")).to_have_text(
        ["T-0051 · Kettle lid cracked", f"T-0002 · {seeded['subject']}"]
    )
    _shot(page, "4-runs-list")
