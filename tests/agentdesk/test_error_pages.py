"""Friendly 400, 403 and 404 pages, one log line per refusal, and sockets with no route.

Invariant 9's answers (no access: 404; read without write: 403) are pages a person can
act on: in the house layout, saying what happened and what to do next, never whether a
hidden thing exists. Invariant 10: each is a defined answer, logged as one line, not a
traceback that looks like a crash; a websocket path that matches no route is closed with
4404, not a 500.
"""

from __future__ import annotations

import logging
import sys
import uuid
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client

from agentdesk.asgi import application
from agentdesk.logging import ExpectedDenialFilter
from tests.snapshot import changed_tables, db_snapshot

pytestmark = pytest.mark.django_db

# The origin of the default AGENTDESK_BASE_URL, which the socket validator allows.
ORIGIN = (b"origin", b"http://127.0.0.1:8000")


def _request_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "django.request"]


def test_inv9_a_run_you_may_not_see_is_a_friendly_404_in_the_house_layout(
    client: Client, reviewer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client.force_login(reviewer)
    path = f"/runs/{uuid.uuid4()}/"

    with caplog.at_level(logging.INFO):
        response = client.get(path)

    assert response.status_code == 404
    html = response.content.decode()
    assert "<title>Not found · AgentDesk</title>" in html
    assert "There is nothing here you can open" in html
    assert "A page you have no access to looks exactly like this one" in html
    assert 'href="/inbox/">your inbox</a>' in html
    assert "<span>rita</span>" in html  # the topbar of every page, with the user
    [record] = _request_records(caplog)
    assert (record.levelname, record.getMessage(), record.exc_info) == (
        "WARNING",
        f"Not Found: {path}",
        None,
    )


def test_inv9_an_anonymous_404_offers_to_log_in(client: Client) -> None:
    response = client.get("/no/such/page/")

    assert response.status_code == 404
    assert 'href="/login/?next=/no/such/page/">Log in</a>' in response.content.decode()


def test_inv9_a_403_says_what_to_do_logs_one_line_and_changes_nothing(
    client: Client, outsider: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client.force_login(outsider)
    before = db_snapshot()

    with caplog.at_level(logging.INFO):
        response = client.post(
            "/runs/new/",
            {"agent": "support", "customer_email": "a@example.com", "subject": "s", "body": "b"},
        )

    assert response.status_code == 403
    html = response.content.decode()
    assert "<title>Not allowed · AgentDesk</title>" in html
    assert "You may see this, but not do that" in html
    assert "Nothing was changed." in html
    assert "ask an admin for the role that allows it" in html
    assert "You are logged in as <strong>oscar</strong>" in html
    [record] = _request_records(caplog)
    assert (record.levelname, record.getMessage(), record.exc_info, record.exc_text) == (
        "WARNING",
        "Forbidden (Permission denied): /runs/new/",
        None,
        None,
    )
    assert changed_tables(before, db_snapshot()) == []


def test_inv10_a_bad_parameter_logs_one_line_without_a_traceback(
    client: Client, reviewer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client.force_login(reviewer)

    with caplog.at_level(logging.INFO):
        response = client.get("/inbox/?age=-5")

    assert response.status_code == 400
    [record] = _request_records(caplog)
    assert record.levelname == "WARNING"
    assert record.getMessage() == (
        "This address has a bad parameter. age: Ensure this value is greater than or equal "
        "to 1.: /inbox/"
    )
    assert record.exc_info is None


def test_inv10_an_unexpected_error_keeps_its_traceback() -> None:
    """The filter drops tracebacks of refusals only; a crash is still a crash."""
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        crash = sys.exc_info()
    record = logging.LogRecord("django.request", logging.ERROR, "", 0, "x", None, crash)

    assert ExpectedDenialFilter().filter(record) is True
    assert record.exc_info == crash


@pytest.mark.parametrize("path", ["/ws/nope/", "/ws/queues/abc/", "/", "/ws/queues/1/extra/"])
def test_inv10_a_websocket_path_without_a_route_is_closed_with_4404(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    socket = WebsocketCommunicator(application, path, headers=[ORIGIN])

    async def scenario() -> dict[str, Any]:
        connected, _ = await socket.connect()
        assert connected
        closed: dict[str, Any] = await socket.receive_output(timeout=5)
        await socket.wait()
        return closed

    with caplog.at_level(logging.INFO):
        closed = async_to_sync(scenario)()

    assert closed == {"type": "websocket.close", "code": 4404}
    [record] = [r for r in caplog.records if r.name == "agentdesk.sockets"]
    assert record.getMessage() == f"websocket {path!r} matches no route: closed with 4404"
    assert record.exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
