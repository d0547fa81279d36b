"""Each process's connection pool survives a PostgreSQL restart (invariant 10).

Against a PostgreSQL of the test's own (tests.processes.PrivatePostgres), never the shared
one: it is restarted under a live web process, and under Django's own pool in this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError, connections
from django.db.backends.postgresql.base import DatabaseWrapper
from psycopg_pool import ConnectionPool

from tests.processes import ROOT, PrivatePostgres, WebServer, postgres_bin

pytestmark = pytest.mark.slow


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres().start()
    yield server
    server.destroy()


def _wrapper(server: PrivatePostgres, alias: str, *, checked: bool) -> DatabaseWrapper:
    """Django's PostgreSQL connection as these settings configure it, to the private server.

    The settings' own OPTIONS (the pool among them); only where it connects differs, and
    ``checked=False`` turns the check off, as it was before, for the control.
    """
    settings_dict = {
        **connections["default"].settings_dict,
        "HOST": "127.0.0.1",
        "PORT": str(server.port),
        "NAME": "postgres",
        "USER": "postgres",
        "PASSWORD": "",
    }
    if not checked:
        settings_dict["CONN_HEALTH_CHECKS"] = False
    return DatabaseWrapper(settings_dict, alias)


def _select_one(wrapper: DatabaseWrapper) -> Any:
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone()[0]
    finally:
        wrapper.close()  # back to the pool, as at the end of a request or before a model call


def test_the_pool_checks_each_connection_it_hands_out() -> None:
    default = connections["default"]

    assert default.settings_dict["CONN_HEALTH_CHECKS"] is True
    assert default.pool._check == ConnectionPool.check_connection


def test_after_a_restart_the_first_query_gets_a_live_connection(
    private_postgres: PrivatePostgres, django_db_blocker: Any
) -> None:
    """The control first: the same pool without the check hands out the dead connection."""
    unchecked = _wrapper(private_postgres, "pool-unchecked", checked=False)
    checked = _wrapper(private_postgres, "pool-checked", checked=True)
    try:
        with django_db_blocker.unblock():
            assert _select_one(unchecked) == 1
            assert _select_one(checked) == 1

            private_postgres.restart()

            with pytest.raises(OperationalError):
                _select_one(unchecked)
            assert _select_one(checked) == 1
            assert _select_one(checked) == 1
    finally:
        unchecked.close_pool()
        checked.close_pool()


def _api_status(base_url: str) -> int:
    """A request that must read the database: an unknown API token is looked up, then 401."""
    request = urllib.request.Request(
        f"{base_url}/api/requests", headers={"Authorization": "Bearer adk_not-a-token"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_web_process_answers_its_first_request_after_a_restart(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    """Before the check, nine HTTP 500s in a row up to 55 s after the database was back."""
    subprocess.run(
        ["runuser", "-u", "postgres", "--"] * (os.geteuid() == 0)
        + [postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(private_postgres.port)]
        + ["-U", "postgres", "agentdesk"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{private_postgres.port}/agentdesk",
        "AGENTDESK_SECRET_KEY": "test-only-not-secret",
        "AGENTDESK_LOG_LEVEL": "WARNING",
        "AGENTDESK_DB_POOL_MAX": "4",
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    web = WebServer(env=env, log_path=tmp_path / "daphne.log").start()
    try:
        assert [_api_status(web.base_url) for _ in range(3)] == [401, 401, 401]

        private_postgres.restart()

        assert [_api_status(web.base_url) for _ in range(10)] == [401] * 10
    finally:
        web.stop()
    assert "Internal Server Error" not in (tmp_path / "daphne.log").read_text()
