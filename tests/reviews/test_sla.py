"""The SLA clock: overdue requests escalate along the chain or take the queue's outcome.

Time is frozen with freezegun around each sweep only: the runs are driven against the
simulator in real time (the HTTP client keeps its own clocks), then the sweep runs at a
chosen moment relative to the request's due time.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from freezegun import freeze_time

from audit.models import AuditEvent
from examples.support.models import Refund
from examples.support.seed import seed_shop
from releases import configuration
from releases import services as releases
from reviews import services, tasks
from reviews.models import (
    ApprovalRequest,
    Decision,
    DecisionKind,
    ExpiryOutcome,
    Queue,
    RequestState,
)
from runs import services as run_services
from runs.models import Action, ActionStatus, Run, RunState
from tests.processes import Simulator
from tests.runs.factories import drive, seeded_ticket_input

# --- helpers shared with test_notify and test_admin ----------------------------------------


def pending_request(
    queue: Queue, *, due_at: datetime | None = None, arguments: dict[str, Any] | None = None
) -> ApprovalRequest:
    """A parked run with one pending request, written directly (no model, no step)."""
    run = Run.objects.create(
        agent_name="support",
        input={"ticket_id": "T-0002"},
        state=RunState.WAITING_FOR_APPROVAL,
        trace_id=uuid.uuid4().hex,
        prompt_version="p1",
        model="sim",
        request_hash="x",
    )
    arguments = arguments or {"order_id": "SO-1002", "amount": "29.00", "reason": "broken"}
    action = Action.objects.create(
        run=run,
        proposed_seq=1,
        index=0,
        tool_call_id="call_1",
        tool="issue_refund",
        raw_arguments="{}",
        arguments=arguments,
        args_hash="h",
        idempotency_key=uuid.uuid4().hex,
        verdict="review",
    )
    return ApprovalRequest.objects.create(
        queue=queue,
        run=run,
        action=action,
        agent_name="support",
        tool="issue_refund",
        risk="irreversible",
        arguments=arguments,
        args_hash=services.request_hash("issue_refund", arguments),
        rule="risk",
        routing_reason="irreversible tools need a person",
        policy_version="pol-test",
        due_at=due_at or timezone.now() + timedelta(minutes=queue.sla_minutes),
    )


def in_threads(count: int, target: Callable[[], Any]) -> list[Any]:
    """Run ``target`` in ``count`` threads released together, each on its own connection."""
    barrier = threading.Barrier(count)
    results: list[Any] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(target())
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=body) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    return results


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def shop(db: None) -> None:
    seed_shop()


@pytest.fixture
def senior(db: None) -> Queue:
    # The demo seed (``shop``) may have created it: these are the settings tested here.
    queue, _ = Queue.objects.update_or_create(
        slug="refunds-senior",
        defaults={"name": "Refunds (senior)", "sla_minutes": 60, "remind_minutes": 15},
    )
    return queue


@pytest.fixture
def refunds(senior: Queue) -> Queue:
    """The queue the support agent sends refunds to; escalates to the senior queue."""
    queue, _ = Queue.objects.update_or_create(
        slug="refunds",
        defaults={
            "name": "Refunds",
            "sla_minutes": 30,
            "remind_minutes": 10,
            "escalate_to": senior,
        },
    )
    return queue


def _parked(ticket_id: str = "T-0002") -> tuple[Run, ApprovalRequest]:
    run, _ = run_services.run_submit(agent_name="support", run_input=seeded_ticket_input(ticket_id))
    run = drive(run)
    assert run.state == RunState.WAITING_FOR_APPROVAL
    return run, ApprovalRequest.objects.get(run=run, state=RequestState.PENDING)


def _verbs(request: ApprovalRequest) -> list[str]:
    return list(
        AuditEvent.objects.filter(object_type="approval_request", object_id=str(request.pk))
        .order_by("id")
        .values_list("verb", flat=True)
    )


# --- escalation and expiry -----------------------------------------------------------------


@pytest.mark.django_db
def test_an_overdue_request_escalates_along_the_chain_then_expires(
    shop: None, model_endpoint: Simulator, refunds: Queue, senior: Queue
) -> None:
    run, request = _parked()
    assert request.queue == refunds
    assert abs(request.due_at - request.created_at - timedelta(minutes=30)) < timedelta(seconds=1)
    first_due = request.due_at

    swept_at = first_due + timedelta(seconds=1)
    with freeze_time(swept_at):
        assert tasks.approvals_expire() == 1

    request.refresh_from_db()
    assert request.state == RequestState.PENDING
    assert request.queue == senior
    assert request.due_at == swept_at + timedelta(minutes=60)
    assert request.reminded_at is None
    [escalation] = Decision.objects.filter(request=request)
    assert escalation.kind == DecisionKind.ESCALATE
    assert escalation.decided_by is None
    assert (escalation.from_queue, escalation.to_queue) == (refunds, senior)
    assert escalation.reason == "not decided within 30 minutes in Refunds"
    event = AuditEvent.objects.get(verb="request.escalated", object_id=str(request.pk))
    assert event.actor_label == "sla"
    assert event.before == {"queue": "refunds"}
    assert event.after["queue"] == "refunds-senior"
    run.refresh_from_db()
    assert run.state == RunState.WAITING_FOR_APPROVAL

    # The senior queue escalates nowhere: its default outcome (reject) applies there.
    with freeze_time(request.due_at + timedelta(seconds=1)):
        assert tasks.approvals_expire() == 1

    request.refresh_from_db()
    assert (request.state, request.outcome) == (RequestState.EXPIRED, "expired_rejected")
    assert list(Decision.objects.filter(request=request).values_list("kind", flat=True)) == [
        DecisionKind.ESCALATE,
        DecisionKind.EXPIRE,
    ]
    assert _verbs(request) == ["request.opened", "request.escalated", "request.expired"]
    run.refresh_from_db()
    assert run.state == RunState.RUNNING


@pytest.mark.django_db
def test_a_version_s_sla_sets_the_due_time_in_the_first_queue_only(
    shop: None, model_endpoint: Simulator, refunds: Queue, senior: Queue, operator: Any
) -> None:
    active = releases.config_active(agent_name="support")
    config = {**configuration.config_effective(version=active), "sla_minutes": 5}
    configuration.config_version_create(
        agent_name="support", config=config, note="Refund decisions within 5 minutes", user=operator
    )
    releases.release_activate_config(agent_name="support", number=2, user=operator)

    run, request = _parked()

    assert run.config_version.number == 2
    assert request.queue == refunds  # sla_minutes sets the due time, not the queue
    assert abs(request.due_at - request.created_at - timedelta(minutes=5)) < timedelta(seconds=1)
    swept_at = request.due_at + timedelta(seconds=1)
    with freeze_time(swept_at):
        assert tasks.approvals_expire() == 1
    request.refresh_from_db()
    # Escalated on, the request takes the next queue's own SLA.
    assert (request.queue, request.due_at) == (senior, swept_at + timedelta(minutes=60))
    assert Decision.objects.get(request=request).reason == "not decided within 5 minutes in Refunds"


@pytest.mark.django_db
def test_an_expired_rejection_resumes_the_run_with_the_feedback(
    shop: None, model_endpoint: Simulator, refunds: Queue
) -> None:
    refunds.escalate_to = None
    refunds.expiry_outcome = ExpiryOutcome.REJECT
    refunds.save()
    run, request = _parked()

    with freeze_time(request.due_at + timedelta(minutes=5)):
        assert tasks.approvals_expire() == 1
    run.refresh_from_db()
    assert run.state == RunState.RUNNING
    run = drive(run)

    request.refresh_from_db()
    assert (request.state, request.outcome) == (RequestState.EXPIRED, "expired_rejected")
    action = Action.objects.get(pk=request.action_id)
    assert action.status == ActionStatus.REJECTED
    assert action.result["error"]["class"] == "review_rejected"
    assert action.result["error"]["details"]["feedback"] == (
        "No reviewer approved this call in time (not decided within 30 minutes in Refunds). "
        "Do not retry it."
    )
    # The model saw the feedback as the tool's result and finished without the refund.
    tool_message = next(
        m
        for m in run.checkpoint["messages"]
        if m.get("role") == "tool" and m.get("tool_call_id") == action.tool_call_id
    )
    assert "No reviewer approved this call in time" in tool_message["content"]
    assert Refund.objects.filter(order__order_id="SO-1002").count() == 0
    # The agent adapted: the simulator proposes a new call, which waits for a person again.
    assert run.state == RunState.WAITING_FOR_APPROVAL
    [again] = ApprovalRequest.objects.filter(run=run, state=RequestState.PENDING)
    assert again.action_id != request.action_id
    assert AuditEvent.objects.filter(verb="run.resumed", object_id=str(run.pk)).count() == 1


@pytest.mark.django_db
def test_an_expired_approval_executes_the_call_exactly_once(
    shop: None, model_endpoint: Simulator, refunds: Queue
) -> None:
    refunds.escalate_to = None
    refunds.expiry_outcome = ExpiryOutcome.APPROVE
    refunds.save()
    run, request = _parked()
    amount = Decimal(request.arguments["amount"])

    with freeze_time(request.due_at + timedelta(seconds=1)):
        assert tasks.approvals_expire() == 1
        assert tasks.approvals_expire() == 0  # a second tick finds nothing to do
    run = drive(run)
    run = drive(run)

    request.refresh_from_db()
    assert (request.state, request.outcome) == (RequestState.EXPIRED, "expired_approved")
    assert services.approval_is_granted(request)
    assert [r.amount for r in Refund.objects.filter(order__order_id="SO-1002")] == [amount]
    assert Action.objects.get(pk=request.action_id).status == ActionStatus.SUCCEEDED
    assert run.state == RunState.SUCCEEDED


@pytest.mark.django_db
def test_a_request_not_yet_due_is_untouched(refunds: Queue) -> None:
    request = pending_request(refunds)
    before = ApprovalRequest.objects.values().get(pk=request.pk)

    with freeze_time(request.due_at - timedelta(seconds=1)):
        assert tasks.approvals_expire() == 0
    with freeze_time(request.due_at):  # due means past due: "due_at < now"
        assert tasks.approvals_expire() == 0

    assert ApprovalRequest.objects.values().get(pk=request.pk) == before
    assert Decision.objects.count() == 0
    assert _verbs(request) == []


@pytest.mark.django_db
def test_an_escalation_loop_ends_in_the_expiry_outcome(refunds: Queue, senior: Queue) -> None:
    senior.escalate_to = refunds  # refunds → senior → refunds: a loop an operator made
    senior.save()
    request = pending_request(refunds)

    with freeze_time(request.due_at + timedelta(seconds=1)):
        assert tasks.approvals_expire() == 1  # refunds → senior
    request.refresh_from_db()
    with freeze_time(request.due_at + timedelta(seconds=1)):
        assert tasks.approvals_expire() == 1  # senior would send it back: it expires

    request.refresh_from_db()
    assert (request.state, request.outcome) == (RequestState.EXPIRED, "expired_rejected")
    assert list(Decision.objects.values_list("kind", flat=True)) == [
        DecisionKind.ESCALATE,
        DecisionKind.EXPIRE,
    ]


@pytest.mark.django_db
def test_a_decided_request_is_not_expired(refunds: Queue, reviewer: Any) -> None:
    request = pending_request(refunds)
    services.approval_reject(request_id=request.pk, user=reviewer, feedback="No.")

    with freeze_time(request.due_at + timedelta(hours=1)):
        assert tasks.approvals_expire() == 0

    request.refresh_from_db()
    assert (request.state, request.outcome) == (RequestState.REJECTED, "rejected")
    assert list(Decision.objects.values_list("kind", flat=True)) == [DecisionKind.REJECT]


@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_expire_each_request_exactly_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue = Queue.objects.create(slug="q", name="Q", sla_minutes=5)
    overdue = timezone.now() - timedelta(minutes=1)
    requests = [pending_request(queue, due_at=overdue) for _ in range(20)]
    resumed: list[str] = []
    lock = threading.Lock()

    def record(args: tuple[str, int], **_: Any) -> None:
        with lock:
            resumed.append(args[0])

    monkeypatch.setattr("runs.tasks.run_step.apply_async", record)

    handled = in_threads(4, lambda: len(services.approvals_expire_overdue()))

    assert sum(handled) == 20
    for request in requests:
        assert Decision.objects.filter(request=request, kind=DecisionKind.EXPIRE).count() == 1
        assert _verbs(request) == ["request.expired"]
    assert sorted(resumed) == sorted(str(r.run_id) for r in requests)
    assert AuditEvent.objects.filter(verb="run.resumed").count() == 20
    assert ApprovalRequest.objects.filter(state=RequestState.EXPIRED).count() == 20


@pytest.mark.django_db(transaction=True)
def test_concurrent_beat_ticks_expire_each_request_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two beat hosts ticking together: one sweeps, the other finds the lock held or nothing."""
    queue = Queue.objects.create(slug="q", name="Q", sla_minutes=5)
    overdue = timezone.now() - timedelta(minutes=1)
    requests = [pending_request(queue, due_at=overdue) for _ in range(10)]
    monkeypatch.setattr("runs.tasks.run_step.apply_async", lambda *a, **k: None)

    handled = in_threads(3, tasks.approvals_expire)

    assert sum(handled) == 10
    assert Decision.objects.filter(kind=DecisionKind.EXPIRE).count() == 10
    assert {r.pk for r in requests} == set(Decision.objects.values_list("request_id", flat=True))


# --- the schedule --------------------------------------------------------------------------


def test_beat_runs_both_sweeps_every_sweep_interval() -> None:
    from agentdesk.celery import app

    schedule = settings.CELERY_BEAT_SCHEDULE
    assert schedule["approvals-expire"] == {
        "task": "reviews.tasks.approvals_expire",
        "schedule": 30.0,
        "options": {"expires": 30.0},
    }
    assert schedule["approvals-remind"] == {
        "task": "reviews.tasks.approvals_remind",
        "schedule": 30.0,
        "options": {"expires": 30.0},
    }
    app.loader.import_default_modules()
    assert {"reviews.tasks.approvals_expire", "reviews.tasks.approvals_remind"} <= set(app.tasks)
