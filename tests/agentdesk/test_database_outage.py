"""A database outage is a 503 that says so, and nothing is written (invariants 1 and 10).

A real outage, without touching the shared PostgreSQL: the web server (Daphne, as in
production) reaches the test database through a TCP relay this test owns, and the test
cuts the relay: open connections drop, new ones are refused, exactly what the driver sees
when PostgreSQL goes away. A reviewer's edit in the browser and a run submitted over the
API then get a 503 with a clear message, one log line each and no traceback; when the
relay is gone, every table is as it was.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import re
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from agentdesk.tokens import api_token_create
from reviews.models import ApprovalRequest, RequestState
from tests.processes import WebServer
from tests.reviews.factories import queue_make, request_make
from tests.runs.factories import ticket_input
from tests.snapshot import changed_tables, db_snapshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


class DatabaseLink:
    """A TCP relay to PostgreSQL that the test can cut, as an outage would."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every open connection and refuse new ones."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self.listener.close()
        with self.lock:
            for end in self.sockets:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()


@pytest.fixture
def link() -> Iterator[DatabaseLink]:
    db = connection.settings_dict
    relay = DatabaseLink((db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)))
    yield relay
    relay.cut()


@pytest.fixture
def server(
    link: DatabaseLink, worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebServer]:
    db = connection.settings_dict
    env = {
        **worker_env,
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@127.0.0.1:{link.port}/{db['NAME']}",
    }
    web = WebServer(env=env, log_path=tmp_path_factory.mktemp("outage") / "daphne.log")
    web.start()
    yield web
    web.stop()


@dataclass
class Reply:
    status: int
    headers: Any
    text: str


class Browser:
    """Cookies, forms and status codes over urllib (the suite has no HTTP client library)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def send(
        self,
        path: str,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
    ) -> Reply:
        """GET, or POST a form (``data``) or JSON (``json_body``)."""
        headers = dict(headers or {})
        body = None if data is None else urllib.parse.urlencode(data).encode()
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=body, headers=headers)
        try:
            with self.opener.open(request, timeout=90) as response:
                return Reply(response.status, response.headers, response.read().decode())
        except urllib.error.HTTPError as error:
            return Reply(error.code, error.headers, error.read().decode())

    def csrf(self, path: str) -> str:
        page = self.send(path)
        assert page.status == 200, page.text[:500]
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token is not None
        return token.group(1)

    def log_in(self, username: str) -> None:
        token = self.csrf("/login/")
        data = {"username": username, "password": "pw", "csrfmiddlewaretoken": token}
        landed = self.send("/login/", data)  # redirected to the inbox
        assert (landed.status, "Log out" in landed.text) == (200, True), landed.text[:500]


def test_inv10_a_database_outage_is_a_503_and_writes_nothing(
    server: WebServer, link: DatabaseLink, reviewer: Any, operator: Any
) -> None:
    approval: ApprovalRequest = request_make(queue=queue_make("refunds", deciders=(reviewer,)))
    _, api_token = api_token_create(user=operator, name="outage")
    browser = Browser(server.base_url)
    browser.log_in(reviewer.username)
    # The reviewer opens the request, with its edit form, while the database is up.
    csrf = browser.csrf(f"/inbox/requests/{approval.pk}/")
    before = db_snapshot()

    link.cut()
    edit = browser.send(
        f"/inbox/requests/{approval.pk}/edit",
        {
            "csrfmiddlewaretoken": csrf,
            "edit-args_hash": approval.args_hash,
            "edit-note": "only the lid",
            "args-order_id": "SO-1002",
            "args-amount": "12.00",
            "args-reason": "lid broken",
        },
    )
    submit = Browser(server.base_url).send(
        "/api/runs",
        json_body={"agent": "support", "input": ticket_input()},
        headers={"Authorization": f"Bearer {api_token}", "Idempotency-Key": "during-outage"},
    )

    assert edit.status == 503
    assert edit.headers["Retry-After"] == "30"
    assert "<title>Unavailable · AgentDesk</title>" in edit.text
    assert "AgentDesk cannot reach its database" in edit.text
    assert "Nothing you sent was saved: no decision, edit or run was recorded." in edit.text
    assert submit.status == 503
    assert json.loads(submit.text) == {
        "error": {
            "message": "The database is not answering, so AgentDesk cannot read or save "
            "anything. Nothing was changed; try again."
        }
    }
    assert changed_tables(before, db_snapshot()) == []
    approval.refresh_from_db()
    assert approval.state == RequestState.PENDING
    log = Path(server.log_path).read_text()
    outage_lines = [line for line in log.splitlines() if "database unavailable" in line]
    assert len(outage_lines) == 2
    assert f"POST /inbox/requests/{approval.pk}/edit answered 503" in outage_lines[0]
    assert "POST /api/runs answered 503" in outage_lines[1]
    assert "Traceback" not in log
