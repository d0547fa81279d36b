"""Circuit breakers: the transitions, their audit events, races between workers, the page.

Time is moved with freezegun inside one process; across processes and threads the tests
use real time with a short cooldown, or age the row's timestamps in the database.
"""

from __future__ import annotations

import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory

from audit.models import AuditEvent
from runs.gateway import breakers
from runs.gateway.breakers import (
    CircuitOpen,
    breaker_allow,
    breaker_record_failure,
    breaker_record_success,
    breaker_states,
    model_breaker_name,
    tool_breaker_name,
)
from runs.models import BreakerState, CircuitBreaker
from tests.processes import ROOT, embedded_env

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
NAME = "model:default"
FAILURES = 3
WINDOW_S = 60.0
CONSECUTIVE = 5
COOLDOWN_S = 30.0


@pytest.fixture
def limits(settings: Any) -> None:
    settings.AGENTDESK_BREAKER_FAILURES = FAILURES
    settings.AGENTDESK_BREAKER_WINDOW_S = WINDOW_S
    settings.AGENTDESK_BREAKER_CONSECUTIVE = CONSECUTIVE
    settings.AGENTDESK_BREAKER_COOLDOWN_S = COOLDOWN_S


@pytest.fixture
def clock(db: None, limits: None) -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(T0) as frozen:
        yield frozen


def _fail(times: int = 1, *, name: str = NAME, error_class: str = "model_server_error") -> None:
    for _ in range(times):
        breaker_record_failure(name=name, error_class=error_class)


def _row(name: str = NAME) -> CircuitBreaker:
    return CircuitBreaker.objects.get(name=name)


def _state(name: str = NAME) -> tuple[str, int, datetime | None, datetime | None]:
    row = _row(name)
    return row.state, row.failure_count, row.opened_at, row.probe_started_at


def _events(name: str = NAME) -> list[tuple[str, str, str, str, Any, Any, Any]]:
    return [
        (e.verb, e.actor_label, e.object_type, e.object_id, e.actor_id, e.before, e.after)
        for e in AuditEvent.objects.filter(object_type="breaker", object_id=name).order_by("id")
    ]


def _open_raises(name: str = NAME) -> CircuitOpen:
    with pytest.raises(CircuitOpen) as caught:
        breaker_allow(name=name)
    return caught.value


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- names --------------------------------------------------------------------------------


def test_names_say_what_the_breaker_guards() -> None:
    assert model_breaker_name("backup") == "model:backup"
    assert tool_breaker_name("issue_refund") == "tool:issue_refund"
    with pytest.raises(ValueError, match="longer than 120"):
        tool_breaker_name("x" * 116)


# --- closed -------------------------------------------------------------------------------


def test_a_breaker_without_a_row_allows_for_one_query_and_creates_nothing(
    clock: FrozenDateTimeFactory, django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(1):
        clean = breaker_allow(name=NAME)
    with django_assert_num_queries(0):
        breaker_record_success(name=NAME, was_clean=clean)
    with django_assert_num_queries(1):
        breaker_record_success(name=NAME)

    assert clean is True
    assert CircuitBreaker.objects.count() == 0
    assert AuditEvent.objects.count() == 0


def test_a_call_started_while_failures_were_counted_resets_them_on_success(
    clock: FrozenDateTimeFactory,
) -> None:
    _fail(FAILURES - 1)

    clean = breaker_allow(name=NAME)
    breaker_record_success(name=NAME, was_clean=clean)

    assert clean is False
    assert (_row().state, _row().failure_count) == ("closed", 0)


def test_failures_counted_during_a_clean_call_stay_counted_after_its_success(
    clock: FrozenDateTimeFactory,
) -> None:
    """The price of the query saved: the next success that starts after them forgets them."""
    clean = breaker_allow(name=NAME)
    _fail(FAILURES - 1)  # other callers, while this call was under way
    breaker_record_success(name=NAME, was_clean=clean)

    assert (_row().state, _row().failure_count) == ("closed", FAILURES - 1)
    breaker_record_success(name=NAME, was_clean=breaker_allow(name=NAME))
    assert (_row().state, _row().failure_count) == ("closed", 0)


def test_failures_below_the_threshold_keep_it_closed(
    clock: FrozenDateTimeFactory, django_assert_num_queries: Any
) -> None:
    _fail(FAILURES - 1)

    with django_assert_num_queries(1):
        breaker_allow(name=NAME)
    row = _row()
    assert (row.state, row.failure_count, row.window_started_at, row.opened_at) == (
        "closed",
        2,
        T0,
        None,
    )
    assert (row.last_failure_at, row.last_error_class) == (T0, "model_server_error")
    assert _events() == []


def test_a_success_forgets_the_failures_and_the_next_one_costs_no_write(
    clock: FrozenDateTimeFactory, django_assert_num_queries: Any
) -> None:
    _fail(FAILURES - 1)

    breaker_record_success(name=NAME)
    with django_assert_num_queries(1):
        breaker_record_success(name=NAME)
    _fail(FAILURES - 1)

    row = _row()
    assert (row.state, row.failure_count) == ("closed", 2)  # counting started again at 0
    assert _events() == []


# --- opening ------------------------------------------------------------------------------


def test_n_failures_within_the_window_open_it(clock: FrozenDateTimeFactory) -> None:
    _fail()
    clock.tick(timedelta(seconds=20))
    _fail()
    clock.tick(timedelta(seconds=20))
    _fail(error_class="model_timeout")

    assert _state() == ("open", 3, _at(40), None)
    assert _row().last_error_class == "model_timeout"
    assert _events() == [
        (
            "breaker.opened",
            "worker",
            "breaker",
            NAME,
            None,
            {
                "state": "closed",
                "failure_count": 2,
                "consecutive_failures": 2,
                "opened_at": None,
                "probe_started_at": None,
                "last_error_class": "model_server_error",
            },
            {
                "state": "open",
                "failure_count": 3,
                "consecutive_failures": 3,
                "opened_at": _at(40).isoformat(),
                "probe_started_at": None,
                "last_error_class": "model_timeout",
            },
        )
    ]


def test_failures_spread_over_more_than_the_window_do_not_open_it(
    clock: FrozenDateTimeFactory,
) -> None:
    _fail(FAILURES - 1)
    clock.tick(timedelta(seconds=WINDOW_S + 1))
    _fail()  # the window has passed: a new one starts, counting this failure alone

    row = _row()
    assert (row.state, row.failure_count, row.window_started_at) == (
        "closed",
        1,
        _at(WINDOW_S + 1),
    )
    breaker_allow(name=NAME)
    assert _events() == []


def test_failures_in_a_row_open_it_however_slowly_they_come(
    clock: FrozenDateTimeFactory,
) -> None:
    """Calls that hang for their whole timeout never make N in a window; N in a row do."""
    for _ in range(CONSECUTIVE - 1):
        _fail(error_class="model_timeout")
        clock.tick(timedelta(seconds=WINDOW_S + 1))
    assert (_row().state, _row().failure_count, _row().consecutive_failures) == (
        "closed",
        1,
        CONSECUTIVE - 1,
    )
    assert _events() == []

    _fail(error_class="model_timeout")

    opened_at = _at((CONSECUTIVE - 1) * (WINDOW_S + 1))
    assert _state() == ("open", 1, opened_at, None)
    assert _row().consecutive_failures == CONSECUTIVE
    assert _events() == [
        (
            "breaker.opened",
            "worker",
            "breaker",
            NAME,
            None,
            {
                "state": "closed",
                "failure_count": 1,
                "consecutive_failures": CONSECUTIVE - 1,
                "opened_at": None,
                "probe_started_at": None,
                "last_error_class": "model_timeout",
            },
            {
                "state": "open",
                "failure_count": 1,
                "consecutive_failures": CONSECUTIVE,
                "opened_at": opened_at.isoformat(),
                "probe_started_at": None,
                "last_error_class": "model_timeout",
            },
        )
    ]
    assert _open_raises().retry_at == opened_at + timedelta(seconds=COOLDOWN_S)


def test_a_success_between_slow_failures_starts_the_row_again(
    clock: FrozenDateTimeFactory,
) -> None:
    for _ in range(CONSECUTIVE - 1):
        _fail(error_class="model_timeout")
        clock.tick(timedelta(seconds=WINDOW_S + 1))
    breaker_record_success(name=NAME, was_clean=breaker_allow(name=NAME))
    for _ in range(CONSECUTIVE - 1):
        _fail(error_class="model_timeout")
        clock.tick(timedelta(seconds=WINDOW_S + 1))

    assert (_row().state, _row().failure_count, _row().consecutive_failures) == (
        "closed",
        1,
        CONSECUTIVE - 1,
    )
    assert _events() == []


def test_each_kind_of_breaker_has_its_thresholds(
    clock: FrozenDateTimeFactory, settings: Any
) -> None:
    """A model kind's own row limit and a tool kind's own window limit; the rest general."""
    settings.AGENTDESK_BREAKER_MODEL_CONSECUTIVE = 2
    settings.AGENTDESK_BREAKER_TOOL_FAILURES = 4
    settings.AGENTDESK_BREAKER_TOOL_WINDOW_S = 10.0
    tool = "tool:lookup_order"

    assert breakers.breaker_thresholds(NAME) == breakers.Thresholds(
        failures=FAILURES, window_s=WINDOW_S, consecutive=2
    )
    assert breakers.breaker_thresholds(tool) == breakers.Thresholds(
        failures=4, window_s=10.0, consecutive=CONSECUTIVE
    )
    _fail(1, name=NAME)
    clock.tick(timedelta(seconds=WINDOW_S + 1))
    _fail(1, name=NAME)  # the second in a row, in a window of its own
    _fail(3, name=tool, error_class="tool_timeout")  # one below the tool's window limit

    assert (_row().state, _row().failure_count, _row().consecutive_failures) == ("open", 1, 2)
    assert (_row(tool).state, _row(tool).failure_count) == ("closed", 3)
    clock.tick(timedelta(seconds=11))
    _fail(1, name=tool, error_class="tool_timeout")  # a new 10 s window: 1, in a row 4
    assert (_row(tool).state, _row(tool).failure_count) == ("closed", 1)
    _fail(1, name=tool, error_class="tool_timeout")  # in a row: the general 5
    assert (_row(tool).state, _row(tool).consecutive_failures) == ("open", 5)


def test_breakers_are_independent(clock: FrozenDateTimeFactory) -> None:
    _fail(FAILURES, name="tool:lookup_order", error_class="tool_timeout")

    breaker_allow(name=NAME)
    breaker_allow(name="tool:issue_refund")
    assert _open_raises("tool:lookup_order").name == "tool:lookup_order"


# --- open ---------------------------------------------------------------------------------


def test_an_open_breaker_fails_fast_until_its_cooldown_ends(
    clock: FrozenDateTimeFactory, django_assert_num_queries: Any
) -> None:
    _fail(FAILURES)
    clock.tick(timedelta(seconds=COOLDOWN_S - 1))

    with django_assert_num_queries(1):
        refused = _open_raises()

    assert (refused.name, refused.retry_at) == (NAME, _at(COOLDOWN_S))
    assert _state() == ("open", 3, T0, None)


def test_late_failures_and_successes_while_open_change_nothing(
    clock: FrozenDateTimeFactory,
) -> None:
    """Calls let through before the breaker opened report afterwards: they neither extend
    the cooldown nor close the breaker; only the probe decides."""
    _fail(FAILURES)
    clock.tick(timedelta(seconds=10))

    _fail(error_class="model_timeout")
    breaker_record_success(name=NAME)

    row = _row()
    assert (row.state, row.failure_count, row.opened_at) == ("open", 3, T0)
    assert (row.last_failure_at, row.last_error_class) == (_at(10), "model_timeout")
    assert _open_raises().retry_at == _at(COOLDOWN_S)
    assert [e[0] for e in _events()] == ["breaker.opened"]


# --- half open ----------------------------------------------------------------------------


def test_after_the_cooldown_exactly_one_probe_goes_through(
    clock: FrozenDateTimeFactory,
) -> None:
    _fail(FAILURES)
    clock.tick(timedelta(seconds=COOLDOWN_S))

    breaker_allow(name=NAME)  # the probe
    clock.tick(timedelta(seconds=2))
    second = _open_raises()

    assert _state() == ("half_open", 3, T0, _at(COOLDOWN_S))
    assert (second.name, second.retry_at) == (NAME, _at(2 * COOLDOWN_S))
    assert _events()[1:] == [
        (
            "breaker.half_opened",
            "worker",
            "breaker",
            NAME,
            None,
            {"state": "open", "opened_at": T0.isoformat()},
            {"state": "half_open", "probe_started_at": _at(COOLDOWN_S).isoformat()},
        )
    ]


def test_a_successful_probe_closes_it(clock: FrozenDateTimeFactory) -> None:
    _fail(FAILURES)
    clock.tick(timedelta(seconds=COOLDOWN_S))
    breaker_allow(name=NAME)
    clock.tick(timedelta(seconds=1))

    breaker_record_success(name=NAME)

    row = _row()
    assert (row.state, row.failure_count, row.window_started_at) == ("closed", 0, None)
    assert (row.opened_at, row.probe_started_at) == (None, None)
    breaker_allow(name=NAME)
    breaker_allow(name=NAME)
    assert _events()[2:] == [
        (
            "breaker.closed",
            "worker",
            "breaker",
            NAME,
            None,
            {
                "state": "half_open",
                "failure_count": 3,
                "consecutive_failures": 3,
                "opened_at": T0.isoformat(),
                "probe_started_at": _at(COOLDOWN_S).isoformat(),
                "last_error_class": "model_server_error",
            },
            {
                "state": "closed",
                "failure_count": 0,
                "consecutive_failures": 0,
                "opened_at": None,
                "probe_started_at": None,
                "last_error_class": "model_server_error",
            },
        )
    ]


def test_a_failed_probe_opens_it_again_for_a_whole_cooldown(
    clock: FrozenDateTimeFactory,
) -> None:
    _fail(FAILURES)
    clock.tick(timedelta(seconds=COOLDOWN_S))
    breaker_allow(name=NAME)
    clock.tick(timedelta(seconds=5))

    _fail(error_class="model_rate_limited")

    assert _state() == ("open", 3, _at(COOLDOWN_S + 5), None)
    assert _open_raises().retry_at == _at(2 * COOLDOWN_S + 5)
    clock.tick(timedelta(seconds=COOLDOWN_S - 1))
    _open_raises()
    clock.tick(timedelta(seconds=1))
    breaker_allow(name=NAME)  # the next probe
    assert _events()[2] == (
        "breaker.opened",
        "worker",
        "breaker",
        NAME,
        None,
        {
            "state": "half_open",
            "failure_count": 3,
            "consecutive_failures": 3,
            "opened_at": T0.isoformat(),
            "probe_started_at": _at(COOLDOWN_S).isoformat(),
            "last_error_class": "model_server_error",
        },
        {
            "state": "open",
            "failure_count": 3,
            "consecutive_failures": 3,
            "opened_at": _at(COOLDOWN_S + 5).isoformat(),
            "probe_started_at": None,
            "last_error_class": "model_rate_limited",
        },
    )


def test_a_probe_whose_worker_died_does_not_block_forever(
    clock: FrozenDateTimeFactory,
) -> None:
    _fail(FAILURES)
    clock.tick(timedelta(seconds=COOLDOWN_S))
    breaker_allow(name=NAME)  # this probe's worker dies: it never reports
    clock.tick(timedelta(seconds=COOLDOWN_S - 1))
    assert _open_raises().retry_at == _at(2 * COOLDOWN_S)

    clock.tick(timedelta(seconds=1))
    breaker_allow(name=NAME)  # a new probe
    third = _open_raises()

    assert _state() == ("half_open", 3, T0, _at(2 * COOLDOWN_S))
    assert third.retry_at == _at(3 * COOLDOWN_S)
    # Taking over a dead probe changes no state: no audit event of its own.
    assert [e[0] for e in _events()] == ["breaker.opened", "breaker.half_opened"]


def test_a_whole_cycle_writes_one_event_per_transition(clock: FrozenDateTimeFactory) -> None:
    _fail(FAILURES)
    clock.tick(timedelta(seconds=COOLDOWN_S))
    breaker_allow(name=NAME)
    _fail()
    clock.tick(timedelta(seconds=COOLDOWN_S))
    breaker_allow(name=NAME)
    breaker_record_success(name=NAME)
    breaker_record_success(name=NAME)

    assert [(e[0], e[5]["state"], e[6]["state"]) for e in _events()] == [
        ("breaker.opened", "closed", "open"),
        ("breaker.half_opened", "open", "half_open"),
        ("breaker.opened", "half_open", "open"),
        ("breaker.half_opened", "open", "half_open"),
        ("breaker.closed", "half_open", "closed"),
    ]
    assert {(e[1], e[2], e[3], e[4]) for e in _events()} == {("worker", "breaker", NAME, None)}


def test_states_for_the_page(clock: FrozenDateTimeFactory) -> None:
    _fail(FAILURES, name="tool:lookup_order", error_class="tool_timeout")
    clock.tick(timedelta(seconds=5))
    _fail(name=NAME)
    _fail(FAILURES, name="model:backup")
    clock.tick(timedelta(seconds=COOLDOWN_S))
    breaker_allow(name="model:backup")

    assert breaker_states() == [
        {
            "name": "model:backup",
            "state": "half_open",
            "failure_count": 3,
            "threshold": 3,
            "window_s": 60.0,
            "consecutive_failures": 3,
            "consecutive_threshold": CONSECUTIVE,
            "opened_at": _at(5),
            "probe_started_at": _at(5 + COOLDOWN_S),
            "retry_at": _at(5 + 2 * COOLDOWN_S),
            "retry_due": False,
            "last_failure_at": _at(5),
            "last_error_class": "model_server_error",
        },
        {
            "name": "model:default",
            "state": "closed",
            "failure_count": 1,
            "threshold": 3,
            "window_s": 60.0,
            "consecutive_failures": 1,
            "consecutive_threshold": CONSECUTIVE,
            "opened_at": None,
            "probe_started_at": None,
            "retry_at": None,
            "retry_due": False,
            "last_failure_at": _at(5),
            "last_error_class": "model_server_error",
        },
        {
            "name": "tool:lookup_order",
            "state": "open",
            "failure_count": 3,
            "threshold": 3,
            "window_s": 60.0,
            "consecutive_failures": 3,
            "consecutive_threshold": CONSECUTIVE,
            "opened_at": T0,
            "probe_started_at": None,
            "retry_at": _at(COOLDOWN_S),
            "retry_due": True,
            "last_failure_at": T0,
            "last_error_class": "tool_timeout",
        },
    ]


# --- races between threads and processes -----------------------------------------------------


def _race(count: int, call: Callable[[], Any]) -> list[Any]:
    """Run ``call`` in ``count`` threads released together, each on its own connection."""
    barrier = threading.Barrier(count)
    outcomes: list[Any] = [None] * count

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            outcomes[i] = call()
        except Exception as exc:  # collected and asserted on by the test
            outcomes[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def _slowed(monkeypatch: pytest.MonkeyPatch, function: str, pause_s: float) -> None:
    """Pause inside ``runs.gateway.breakers.<function>`` so that threads overlap there.

    ``_cooldown`` runs between breaker_allow's read and its compare-and-set; ``_snapshot``
    between breaker_record_failure's lock and its write. Without the pause the first
    thread is often done before the others have a connection, and a missing
    compare-and-set or lock would go unnoticed.
    """
    original = getattr(breakers, function)

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(pause_s)
        return original(*args, **kwargs)

    monkeypatch.setattr(breakers, function, slow)


def test_twenty_threads_at_an_open_breaker_past_cooldown_let_one_probe_through(
    transactional_db: None, limits: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened_at = datetime.now(UTC) - timedelta(seconds=COOLDOWN_S + 5)
    CircuitBreaker.objects.create(
        name=NAME, state=BreakerState.OPEN, failure_count=FAILURES, opened_at=opened_at
    )
    _slowed(monkeypatch, "_cooldown", 0.3)

    outcomes = _race(20, lambda: breaker_allow(name=NAME))

    assert sum(o is False for o in outcomes) == 1, outcomes  # the probe: allowed, not clean
    assert sum(isinstance(o, CircuitOpen) for o in outcomes) == 19, outcomes
    assert _row().state == "half_open"
    assert [e[0] for e in _events()] == ["breaker.half_opened"]


def test_twenty_threads_failing_at_once_count_twenty_on_one_row(
    transactional_db: None, limits: None, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first failure creates the row while others race to create it too; the row lock
    makes every increment count."""
    settings.AGENTDESK_BREAKER_FAILURES = 20
    settings.AGENTDESK_BREAKER_CONSECUTIVE = 20
    _slowed(monkeypatch, "_snapshot", 0.02)

    outcomes = _race(20, lambda: _fail(name="tool:flaky", error_class="tool_crashed"))

    assert outcomes == [None] * 20
    row = _row("tool:flaky")
    assert (row.state, row.failure_count, row.consecutive_failures) == ("open", 20, 20)
    assert row.probe_started_at is None
    assert row.opened_at == row.last_failure_at  # the 20th failure opened it
    assert [e[0] for e in _events("tool:flaky")] == ["breaker.opened"]


def _shell(code: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    if not ready:
        process.kill()
        raise AssertionError(f"no output within {timeout_s} s; stderr: {process.communicate()[1]}")
    return process.stdout.readline().strip()


PROCESS_A = """
from runs.gateway.breakers import breaker_record_failure
for _ in range(3):
    breaker_record_failure(name="model:shared", error_class="model_server_error")
"""

# Waits until the breaker is open, so that it sees it open well within the cooldown
# however long Django took to start; then waits out the cooldown and probes.
PROCESS_B = """
import json, time
from django.utils import timezone
from runs.gateway.breakers import CircuitOpen, breaker_allow, breaker_record_success
from runs.models import CircuitBreaker
print("ready", flush=True)
deadline = time.monotonic() + 30
while not CircuitBreaker.objects.filter(name="model:shared", state="open").exists():
    assert time.monotonic() < deadline, "the breaker never opened"
    time.sleep(0.02)
try:
    breaker_allow(name="model:shared")
    seen = "allowed"
except CircuitOpen as exc:
    seen = "open"
    time.sleep(max(0.0, (exc.retry_at - timezone.now()).total_seconds()) + 0.05)
breaker_allow(name="model:shared")
breaker_record_success(name="model:shared")
print(json.dumps({"seen": seen}), flush=True)
"""


@pytest.mark.slow
def test_workers_in_other_processes_share_the_breaker(
    transactional_db: None, worker_env: dict[str, str], settings: Any
) -> None:
    """Process A opens the breaker; process B sees it open, then probes and closes it."""
    env = {
        **worker_env,
        "AGENTDESK_BREAKER_FAILURES": "3",
        "AGENTDESK_BREAKER_COOLDOWN_S": "2",
    }
    settings.AGENTDESK_BREAKER_FAILURES = 3
    settings.AGENTDESK_BREAKER_COOLDOWN_S = 2
    b = _shell(PROCESS_B, env)
    try:
        assert _read_line(b, 30) == "ready"
        a = _shell(PROCESS_A, env)
        _, a_err = a.communicate(timeout=60)
        assert a.returncode == 0, a_err
        assert _read_line(b, 30) == '{"seen": "open"}'
        _, b_err = b.communicate(timeout=30)
        assert b.returncode == 0, b_err
    finally:
        if b.poll() is None:
            b.kill()
            b.wait()

    row = _row("model:shared")
    assert (row.state, row.failure_count, row.opened_at, row.probe_started_at) == (
        "closed",
        0,
        None,
        None,
    )
    breaker_allow(name="model:shared")
    assert [e[0] for e in _events("model:shared")] == [
        "breaker.opened",
        "breaker.half_opened",
        "breaker.closed",
    ]


EMBEDDED_CYCLE = """
from datetime import timedelta
from audit.models import AuditEvent
from runs.gateway.breakers import CircuitOpen, breaker_allow, breaker_record_failure
from runs.gateway.breakers import breaker_record_success
from runs.models import CircuitBreaker
seen = []
for _ in range(3):
    breaker_record_failure(name="tool:x", error_class="tool_timeout")
try:
    breaker_allow(name="tool:x")
except CircuitOpen:
    seen.append("open")
row = CircuitBreaker.objects.get(name="tool:x")
CircuitBreaker.objects.filter(pk=row.pk).update(opened_at=row.opened_at - timedelta(seconds=31))
breaker_allow(name="tool:x")
try:
    breaker_allow(name="tool:x")
except CircuitOpen:
    seen.append("probe under way")
breaker_record_success(name="tool:x")
seen.append(CircuitBreaker.objects.get(name="tool:x").state)
print(seen, list(AuditEvent.objects.order_by("id").values_list("verb", flat=True)))
"""


@pytest.mark.slow
def test_the_embedded_mode_runs_the_same_cycle_on_sqlite(tmp_path: Path) -> None:
    env = embedded_env(
        tmp_path,
        AGENTDESK_DEBUG="true",
        AGENTDESK_BREAKER_FAILURES="3",
        AGENTDESK_BREAKER_COOLDOWN_S="30",
    )
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr

    cycle = _shell(EMBEDDED_CYCLE, env)
    out, err = cycle.communicate(timeout=60)

    assert cycle.returncode == 0, err
    assert out.strip() == (
        "['open', 'probe under way', 'closed'] "
        "['breaker.opened', 'breaker.half_opened', 'breaker.closed']"
    )


# --- the page -----------------------------------------------------------------------------

URL = "/runs/breakers/"


@pytest.fixture
def page_breakers(clock: FrozenDateTimeFactory) -> list[dict[str, Any]]:
    _fail(FAILURES, name="tool:lookup_order", error_class="tool_timeout")
    _fail(name=NAME)
    return breaker_states()


def test_anonymous_is_sent_to_login(client: Client, page_breakers: list[dict[str, Any]]) -> None:
    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={URL}"


def test_outsider_is_refused_and_nothing_changes(
    client: Client, page_breakers: list[dict[str, Any]], outsider: Any
) -> None:
    client.force_login(outsider)

    response = client.get(URL)

    assert response.status_code == 403
    assert breaker_states() == page_breakers


def test_reviewer_sees_every_breaker_and_its_state(
    client: Client, page_breakers: list[dict[str, Any]], reviewer: Any
) -> None:
    client.force_login(reviewer)

    response = client.get(URL)

    page = response.content.decode()
    assert response.status_code == 200
    assert "<title>Breakers · AgentDesk</title>" in page
    assert "<code>tool:lookup_order</code>" in page
    assert '<span class="state state-open">open</span>' in page
    assert "<code>model:default</code>" in page
    assert '<span class="state state-closed">closed</span>' in page
    assert '<td class="num">3 / 3</td>\n        <td class="num">3 / 5</td>' in page
    assert '<td class="num">1 / 3</td>\n        <td class="num">1 / 5</td>' in page
    assert "<code>tool_timeout</code>" in page
    opened = '<time datetime="2026-03-02T09:00:00+00:00">Mar 2, 09:00:00 UTC</time>'
    retry = '<time datetime="2026-03-02T09:00:30+00:00">Mar 2, 09:00:30 UTC</time>'
    assert f"<td>{opened}</td>\n        <td>{retry}</td>" in page
    assert 'hx-trigger="every 5s"' in page
    assert 'href="/runs/breakers/" aria-current="page">Breakers</a>' in page
    assert breaker_states() == page_breakers


def test_a_half_open_breaker_is_labelled(
    client: Client, clock: FrozenDateTimeFactory, reviewer: Any
) -> None:
    _fail(FAILURES)
    clock.tick(timedelta(seconds=COOLDOWN_S))
    breaker_allow(name=NAME)
    client.force_login(reviewer)

    page = client.get(URL).content.decode()

    assert '<span class="state state-halfopen">half open</span>' in page
    assert '09:01:00 UTC</time> <span class="muted">(probe under way)</span>' in page


def test_htmx_polling_gets_only_the_table(
    client: Client, page_breakers: list[dict[str, Any]], reviewer: Any
) -> None:
    client.force_login(reviewer)

    response = client.get(URL, headers={"HX-Request": "true"})

    fragment = response.content.decode()
    assert response.status_code == 200
    assert fragment.lstrip().startswith('<div id="breaker-table"')
    assert "<html" not in fragment
    assert "<code>tool:lookup_order</code>" in fragment


def test_no_breaker_yet_explains_what_breakers_are(
    client: Client, reviewer: Any, limits: None
) -> None:
    client.force_login(reviewer)

    page = client.get(URL).content.decode()

    assert (
        "A model endpoint's breaker opens after 3 failures within 60 seconds, or after 5 in "
        "a row however slowly they come (timeouts included); a tool's after 3 within 60 "
        "seconds, or 5 in a row. While open, calls fail fast into the fallback chain; after "
        "30 seconds one probe call is let through"
    ) in page
    assert "<table" not in page


def test_the_nav_links_to_breakers_only_for_those_who_may_see_them(
    client: Client, reviewer: Any, outsider: Any
) -> None:
    client.force_login(reviewer)
    assert 'href="/runs/breakers/"' in client.get("/runs/").content.decode()

    client.force_login(outsider)
    assert 'href="/runs/breakers/"' not in client.get("/login/").content.decode()
