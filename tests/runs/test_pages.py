"""The minimal pages: who sees what, and submitting a ticket from the browser."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from runs import services
from runs.models import Run
from tests.reviews.factories import queue_make, request_make
from tests.runs.factories import ticket_input

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(operator: Any, reviewer: Any) -> Run:
    """A submitted run with a request in a queue the reviewer may open (so they see it)."""
    run = services.run_submit(
        agent_name="support", run_input=ticket_input(), submitted_by=operator
    )[0]
    request_make(queue=queue_make("refunds", viewers=(reviewer,)), run=run)
    return run


def _login(client: Client, user: Any) -> Client:
    client.force_login(user)
    return client


def test_anonymous_is_sent_to_login(client: Client, run: Run) -> None:
    for url in ("/runs/", f"/runs/{run.id}/", "/runs/new/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=")


def test_login_page_renders(client: Client) -> None:
    response = client.get("/login/")
    assert response.status_code == 200
    assert b"Log in" in response.content


@pytest.mark.parametrize("persona", ["reviewer", "operator", "auditor"])
def test_roles_see_runs(client: Client, run: Run, persona: str, request: Any) -> None:
    _login(client, request.getfixturevalue(persona))

    listing = client.get("/runs/")
    detail = client.get(f"/runs/{run.id}/")

    assert listing.status_code == 200
    assert str(run.id)[:8] in listing.content.decode()
    assert detail.status_code == 200
    assert run.trace_id in detail.content.decode()


def test_user_without_a_role_sees_no_run(client: Client, run: Run, outsider: Any) -> None:
    _login(client, outsider)

    assert client.get("/runs/").status_code == 403
    assert client.get(f"/runs/{run.id}/").status_code == 404


def test_htmx_refresh_renders_only_the_partial(client: Client, run: Run, reviewer: Any) -> None:
    _login(client, reviewer)

    response = client.get(f"/runs/{run.id}/", HTTP_HX_REQUEST="true")

    html = response.content.decode()
    assert html.lstrip().startswith('<div id="run-live"')
    assert "<html" not in html


def test_operator_submits_a_ticket(client: Client, operator: Any) -> None:
    _login(client, operator)
    form = {"agent": "support", **ticket_input()}

    response = client.post("/runs/new/", form)

    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/runs/{run.id}/"
    assert run.input == ticket_input()
    assert run.submitted_by == operator


def test_invalid_ticket_form_shows_errors_and_creates_nothing(
    client: Client, operator: Any
) -> None:
    _login(client, operator)

    response = client.post(
        "/runs/new/",
        {
            "agent": "support",
            "customer_email": "not-an-email",
            "subject": "",
            "body": "x",
            "ticket_id": "7",
        },
    )

    assert response.status_code == 200
    assert response.context["form"].errors.keys() == {"customer_email", "subject", "ticket_id"}
    assert Run.objects.count() == 0


def test_reviewer_may_not_submit(client: Client, reviewer: Any) -> None:
    _login(client, reviewer)

    assert client.get("/runs/new/").status_code == 403
    assert client.post("/runs/new/", {"agent": "support", **ticket_input()}).status_code == 403
    assert Run.objects.count() == 0


def test_model_output_is_escaped_on_the_run_page(client: Client, run: Run, reviewer: Any) -> None:
    Run.objects.filter(pk=run.pk).update(output="<script>alert(1)</script>", state="succeeded")
    _login(client, reviewer)

    html = client.get(f"/runs/{run.id}/").content.decode()

    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def _config_version_fact(html: str) -> str:
    match = re.search(r'<dd id="run-config-version">(.*?)</dd>', html, re.DOTALL)
    assert match, "no Config version fact on the run page"
    return " ".join(match.group(1).split())


def test_the_run_page_shows_its_configuration_version(
    client: Client, run: Run, operator: Any, reviewer: Any
) -> None:
    operator_html = _login(client, operator).get(f"/runs/{run.id}/").content.decode()
    reviewer_html = _login(client, reviewer).get(f"/runs/{run.id}/").content.decode()

    assert run.config_version is not None
    assert run.config_version.number == 1
    # Operators may open the version; a reviewer, who would get a 404 there, sees its number.
    assert _config_version_fact(operator_html) == '<a href="/agents/support/versions/1/">v1</a>'
    assert _config_version_fact(reviewer_html) == "v1"


def test_the_run_page_links_its_prompt_version_for_those_who_may_open_it(
    client: Client, run: Run, operator: Any, reviewer: Any
) -> None:
    operator_html = _login(client, operator).get(f"/runs/{run.id}/").content.decode()
    reviewer_html = _login(client, reviewer).get(f"/runs/{run.id}/").content.decode()

    assert re.fullmatch(r"v1-[0-9a-f]{10}", run.prompt_version)
    link = '<a id="run-prompt-version" href="/prompts/support/versions/1/">'
    assert f"{link}<code>{run.prompt_version}</code></a>" in operator_html
    # A reviewer would get a 404 on the prompt page: the ref, without a link.
    assert 'id="run-prompt-version"' not in reviewer_html
    assert f"<code>{run.prompt_version}</code>" in reviewer_html
    assert _login(client, operator).get("/prompts/support/versions/1/").status_code == 200
