"""Shared fixtures: personas, the model simulator and real Celery workers."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection

from agentdesk.roles import roles_sync
from releases.configuration import config_cache_clear
from tests.processes import Simulator, WebServer, WorkerPool

SESSION_QUEUE = f"agentdesk-test-{uuid.uuid4().hex[:8]}"
ARTIFACTS = Path(os.environ.get("AGENTDESK_TEST_ARTIFACTS", "test-artifacts")).resolve()


@pytest.fixture(scope="session", autouse=True)
def _session_queue() -> None:
    """Send this session's step tasks to a queue of its own."""
    from agentdesk.celery import app

    app.conf.task_default_queue = SESSION_QUEUE
    settings.AGENTDESK_CELERY_QUEUE = SESSION_QUEUE  # also namespaces shared Redis state


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> None:
    """Let the test database's flushes empty the audit log.

    PostgreSQL refuses TRUNCATE on the audit log (migration 0005), and pytest-django
    empties tables with TRUNCATE after each ``transactional_db`` test. On the test
    database only, that one trigger is disabled; UPDATE and DELETE stay refused, and the
    test of TRUNCATE enables it again inside its transaction.
    """
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(AUDIT_TRUNCATE_TRIGGER_OFF)


AUDIT_TRUNCATE_TRIGGER_OFF = (
    "ALTER TABLE agentdesk_auditevent DISABLE TRIGGER agentdesk_auditevent_no_truncate"
)


def migrated_forward_again() -> None:
    """What a test that took the schema back and forward does before it goes on.

    Migrating re-created the audit log's TRUNCATE trigger, which the test database's
    flushes need off; and tables dropped and made again start their ids over, so the
    configurations this process built by version id must go.
    """
    with connection.cursor() as cursor:
        cursor.execute(AUDIT_TRUNCATE_TRIGGER_OFF)
    config_cache_clear()


# --- personas ------------------------------------------------------------------------------


def _user(username: str, role: str | None = None, **extra: Any) -> Any:
    user = get_user_model().objects.create_user(username=username, password="pw", **extra)
    if role:
        user.groups.add(roles_sync()[role])
    return user


@pytest.fixture
def reviewer(db: None) -> Any:
    return _user("rita", "reviewer")


@pytest.fixture
def operator(db: None) -> Any:
    return _user("otto", "operator")


@pytest.fixture
def release_manager(db: None) -> Any:
    return _user("rhea", "release_manager")


@pytest.fixture
def auditor(db: None) -> Any:
    return _user("aude", "auditor")


@pytest.fixture
def outsider(db: None) -> Any:
    return _user("oscar")


@pytest.fixture
def support_queues(db: None) -> None:
    """The queues the support agent's policy names (the demo seed's), with no reviewers.

    The runtime never creates a queue and a configuration naming a missing one is
    refused, so tests that save versions or run the agent to a review need them.
    """
    from examples.support.seed import queues_seed

    queues_seed()


# --- the model simulator and workers ----------------------------------------------------


@pytest.fixture(scope="session")
def simulator() -> Iterator[Simulator]:
    sim = Simulator(args=["--seed", "7", "--latency-ms", "0"]).start()
    yield sim
    sim.stop()


@pytest.fixture
def model_endpoint(simulator: Simulator, settings: Any) -> Simulator:
    """Point in-process model calls at the simulator, with its default knobs."""
    settings.AGENTDESK_LLM_ENDPOINTS = {
        "default": {"base_url": simulator.base_url, "api_key": "sk-test"}
    }
    settings.AGENTDESK_LLM_TIMEOUT_S = 5.0
    simulator.configure(**SIMULATOR_DEFAULTS)
    return simulator


SIMULATOR_DEFAULTS: dict[str, Any] = {
    "latency_ms": 0,
    "rate_limit_rate": 0,
    "server_error_rate": 0,
    "hang_rate": 0,
    "malformed_json_rate": 0,
    "unknown_tool_rate": 0,
    "refusal_rate": 0,
    "schema_invalid_rate": 0,
}


@pytest.fixture
def worker_env(django_db_setup: None, model_endpoint: Simulator) -> dict[str, str]:
    db = connection.settings_dict
    url = f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    return {
        **os.environ,
        "DATABASE_URL": f"{url}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "AGENTDESK_SECRET_KEY": "test-only-not-secret",
        "AGENTDESK_CELERY_QUEUE": SESSION_QUEUE,
        "AGENTDESK_LLM_BASE_URL": model_endpoint.base_url,
        "AGENTDESK_LLM_TIMEOUT_S": "3",
        "AGENTDESK_STEP_LEASE_S": "4",
        "AGENTDESK_STEP_HEARTBEAT_S": "1",
        "AGENTDESK_STEP_REDELIVER_S": "4",
        "AGENTDESK_RECOVERY_INTERVAL_S": "1",
        "AGENTDESK_LOG_LEVEL": "INFO",
        # The agents this test registered (tests/runs registers unreviewed variants).
        "AGENTDESK_AGENTS": ",".join(settings.AGENTDESK_AGENTS),
    }


@pytest.fixture
def workers(
    transactional_db: None,
    worker_env: dict[str, str],
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerPool]:
    """Real Celery worker processes on this session's queue; start them with ``.start()``."""
    log_dir = tmp_path_factory.mktemp("workers")
    pool = WorkerPool(env=worker_env, queue=SESSION_QUEUE, log_dir=log_dir)
    yield pool
    pool.stop()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(pool.logs(tail_chars=6000))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    describe: Callable[[], object] | None = None,
) -> None:
    """Poll until ``predicate`` holds; on time-out, fail with ``describe()`` as context."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    context = f"\n{describe()}" if describe else ""
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{context}")


# --- browser tests ---------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests run last: Playwright's sync API leaves an event loop running."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, Any]:
    """Debian's Chromium, never a downloaded browser (``make test`` installs it)."""
    return {
        "executable_path": CHROMIUM,
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }


@pytest.fixture
def web_server(
    transactional_db: None, worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebServer]:
    """The ASGI app under Daphne against the test database (committed data only)."""
    server = WebServer(env=worker_env, log_path=tmp_path_factory.mktemp("web") / "daphne.log")
    server.start()
    yield server
    server.stop()
