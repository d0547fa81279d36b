"""Every web request has an id: in its response, its log lines and the audit events it wrote."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from django.http import HttpResponse
from django.test import Client, RequestFactory

from agentdesk.logging import RequestIdMiddleware, TraceIdFilter, current_request_id
from agentdesk.tokens import api_token_create
from audit.models import AuditEvent
from examples.support.seed import seed_shop
from runs.models import Run
from tests.runs.factories import seeded_ticket_input

pytestmark = pytest.mark.django_db


def _login(client: Client, **headers: str) -> Any:
    response = client.post("/login/", {"username": "rita", "password": "pw"}, headers=headers)
    assert response.status_code == 302
    return response


def test_an_audit_event_made_by_a_request_carries_the_request_id(reviewer: Any) -> None:
    response = _login(Client())

    request_id = response["X-Request-ID"]
    assert re.fullmatch(r"req-[0-9a-f]{24}", request_id)
    event = AuditEvent.objects.get(verb="user.logged_in")
    assert event.trace_id == request_id


def test_each_request_gets_its_own_id(reviewer: Any) -> None:
    client = Client()
    first = _login(client)["X-Request-ID"]
    second = client.post("/logout/")["X-Request-ID"]

    assert first != second
    assert list(AuditEvent.objects.order_by("seq").values_list("verb", "trace_id")) == [
        ("user.logged_in", first),
        ("user.logged_out", second),
    ]


def test_a_valid_id_sent_by_the_caller_is_kept_and_junk_is_replaced(reviewer: Any) -> None:
    kept = _login(Client(), **{"X-Request-ID": "lb-7f3a9c21e0"})["X-Request-ID"]
    replaced = _login(Client(), **{"X-Request-ID": "<script>alert(1)</script>"})["X-Request-ID"]

    assert kept == "lb-7f3a9c21e0"
    assert re.fullmatch(r"req-[0-9a-f]{24}", replaced)
    assert list(AuditEvent.objects.order_by("seq").values_list("trace_id", flat=True)) == [
        kept,
        replaced,
    ]


def test_the_log_lines_written_while_handling_a_request_carry_its_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Lines written inside the middleware chain (views, services); Django's own
    "Not Found" line is written after the chain returns, and does not."""
    log = logging.getLogger("agentdesk.test")

    def view(request: Any) -> HttpResponse:
        log.warning("handling")
        return HttpResponse("ok")

    caplog.handler.addFilter(TraceIdFilter())
    with caplog.at_level(logging.WARNING, logger="agentdesk.test"):
        response = RequestIdMiddleware(view)(RequestFactory().get("/"))

    assert [r.trace_id for r in caplog.records] == [response["X-Request-ID"]]  # type: ignore[attr-defined]
    assert current_request_id() == ""  # unbound again after the request


def test_a_run_submitted_over_http_keeps_its_own_trace_id(operator: Any) -> None:
    """A run's events share the run's trace id, whatever request created it."""
    seed_shop()
    token = api_token_create(user=operator, name="test")[1]

    response = Client().post(
        "/api/runs",
        {"agent": "support", "input": seeded_ticket_input("T-0002")},
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )

    assert response.status_code == 201, response.content
    run_id = response.json()["id"]
    event = AuditEvent.objects.get(verb="run.submitted", object_id=run_id)
    assert event.trace_id == Run.objects.get(pk=run_id).trace_id
    assert event.trace_id != response["X-Request-ID"]
