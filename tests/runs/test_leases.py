"""The lease heartbeat: a live step keeps its lease, a dead or stuck one lets it expire.

Invariant 3 (a redelivered task does no harm) and invariant 10 (a dead worker's step ends
in a defined state: redone). The heartbeat thread has a connection of its own, so these
tests commit (``transactional_db``); the kill of a real worker is in test_workers.py.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from examples.support.seed import seed_shop
from runs import services
from runs.kernel import leases
from runs.kernel.leases import LeaseKeeper
from runs.models import Run, RunState, Step
from tests.processes import Simulator
from tests.runs.factories import seeded_ticket_input

pytestmark = pytest.mark.django_db(transaction=True)

LEASE_S = 1.0


@pytest.fixture
def short_lease(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.AGENTDESK_STEP_LEASE_S = LEASE_S
    settings.AGENTDESK_STEP_HEARTBEAT_S = 0.2
    settings.AGENTDESK_STEP_MAX_S = 600.0
    # A keeper of this test's own: the process's keeper thread, started by an earlier
    # test, may be half-way through a wait of the default 5 s, longer than these leases.
    monkeypatch.setattr(leases, "keeper", LeaseKeeper())


def _leased(*, expires_in_s: float = 0.5) -> Run:
    """A running run whose step a worker holds, as the claim leaves it."""
    seed_shop()
    run, _ = services.run_submit(agent_name="support", run_input=seeded_ticket_input("T-0002"))
    Run.objects.filter(pk=run.pk).update(
        state=RunState.RUNNING,
        lease_token=uuid.uuid4(),
        lease_expires_at=timezone.now() + timedelta(seconds=expires_in_s),
    )
    run.refresh_from_db()
    return run


def _row(run: Run) -> tuple[Any, Any, Any]:
    return Run.objects.filter(pk=run.pk).values_list(
        "lease_token", "lease_expires_at", "updated_at"
    )[0]


def test_a_held_lease_is_renewed_and_nothing_else_is_written(short_lease: None) -> None:
    held, other = _leased(), _leased()
    other_before = _row(other)
    token, expires_before, updated_before = _row(held)
    events_before = AuditEvent.objects.count()
    keeper = LeaseKeeper(thread=False)
    keeper.hold(held)

    started = timezone.now()
    assert keeper.beat() == 1

    token_after, expires_after, updated_after = _row(held)
    assert (token_after, updated_after) == (token, updated_before)
    assert started + timedelta(seconds=LEASE_S) <= expires_after
    assert expires_after <= timezone.now() + timedelta(seconds=LEASE_S)
    assert expires_after > expires_before
    assert _row(other) == other_before  # a lease this process does not hold
    assert AuditEvent.objects.count() == events_before  # a lease is not a change of state


def test_a_lease_another_worker_took_over_is_not_renewed(short_lease: None) -> None:
    """Its old holder must not steal it back: the row's token is no longer the one held."""
    run = _leased()
    keeper = LeaseKeeper(thread=False)
    keeper.hold(run)
    Run.objects.filter(pk=run.pk).update(lease_token=uuid.uuid4())
    taken_over = _row(run)

    assert keeper.beat() == 0
    assert _row(run) == taken_over


def test_a_released_lease_is_not_renewed(short_lease: None) -> None:
    run = _leased()
    keeper = LeaseKeeper(thread=False)
    keeper.release(keeper.hold(run))
    before = _row(run)

    assert keeper.beat() == 0
    assert _row(run) == before


def test_a_step_stuck_past_the_longest_step_is_left_to_expire(
    short_lease: None, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.AGENTDESK_STEP_MAX_S = 0.05
    run = _leased()
    keeper = LeaseKeeper(thread=False)
    keeper.hold(run)
    time.sleep(0.1)
    before = _row(run)

    with caplog.at_level(logging.WARNING, logger="runs.kernel.leases"):
        assert keeper.beat() == 0

    assert _row(run) == before
    assert f"step of run {run.pk} has held its lease for 0 s" in caplog.text
    # A new step of the same task (a chained one, a new token) is young again.
    run.lease_token = uuid.uuid4()
    Run.objects.filter(pk=run.pk).update(lease_token=run.lease_token)
    assert keeper.beat() == 1


def test_a_slow_model_call_keeps_its_lease_and_is_called_once(
    short_lease: None, model_endpoint: Simulator, settings: Any
) -> None:
    """A model call three times as long as the lease: the sweeper never takes the step.

    A 3 s lease renewed every 0.5 s: the heartbeat has a few chances in each lease, so a
    machine busy with the rest of the suite cannot make it miss one by a slow second.
    """
    settings.AGENTDESK_STEP_LEASE_S = 3.0
    settings.AGENTDESK_STEP_HEARTBEAT_S = 0.5
    settings.AGENTDESK_LLM_TIMEOUT_S = 15.0
    seed_shop()
    model_endpoint.configure(latency_ms=9000)
    run, _ = services.run_submit(agent_name="support", run_input=seeded_ticket_input("T-0002"))
    started = model_endpoint.configure()  # the knobs; the stats below count requests
    requests_before = model_endpoint.requests_taken()
    step = threading.Thread(target=_first_step, args=(run,))
    step.start()
    recovered = []
    while step.is_alive():
        recovered.append(services.runs_recover_stalled())
        time.sleep(0.25)
    step.join()

    assert started["latency_ms"] == 9000
    assert len(recovered) >= 24  # the sweeper looked all along the call
    assert set(recovered) == {0}
    run.refresh_from_db()
    assert (run.next_seq, run.lease_token, run.step_attempts) == (2, None, 0)
    assert list(Step.objects.filter(run=run).values_list("seq", "error_class")) == [
        (0, ""),
        (1, ""),
    ]
    assert model_endpoint.requests_taken() - requests_before == 1


def test_without_the_heartbeat_the_same_call_loses_its_lease(
    short_lease: None, model_endpoint: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: with renewals switched off the sweeper takes the step mid-call."""
    monkeypatch.setattr(LeaseKeeper, "beat", lambda self: 0)
    seed_shop()
    model_endpoint.configure(latency_ms=4000)
    run, _ = services.run_submit(agent_name="support", run_input=seeded_ticket_input("T-0002"))
    step = threading.Thread(target=_first_step, args=(run,))
    step.start()
    recovered = []
    while step.is_alive():
        recovered.append(services.runs_recover_stalled())
        time.sleep(0.25)
    step.join()

    assert sum(recovered) == 1
    run.refresh_from_db()
    assert (run.next_seq, run.lease_token) == (0, None)  # its result was discarded
    assert Step.objects.filter(run=run).count() == 0


def _first_step(run: Run) -> None:
    """A step task's work, in a thread of its own as in a worker; its connection back after."""
    try:
        services.run_step_execute(run_id=str(run.pk), seq=0)
    finally:
        connection.close()
