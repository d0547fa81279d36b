"""Reminders by mail and the signed review webhook, received by a loopback HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core import mail
from django.utils import timezone
from freezegun import freeze_time
from guardian.shortcuts import assign_perm

from agentdesk.celery import app
from audit.models import AuditEvent
from reviews import notify, tasks, webhook
from reviews.models import ApprovalRequest, DecisionKind, Queue, RequestState
from tests.reviews.test_sla import in_threads, pending_request

SECRET = "test-webhook-secret-0123456789"


# --- a webhook receiver on loopback ----------------------------------------------------------


@dataclass
class Receiver:
    """Answers POSTs with the next status of ``statuses`` (the last one repeats)."""

    statuses: list[int] = field(default_factory=lambda: [200])
    hits: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.hits]


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    state = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                state.hits.append((dict(self.headers.items()), body))
                status = state.statuses[min(len(state.hits), len(state.statuses)) - 1]
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/agentdesk?token=chat-token"
    settings.AGENTDESK_REVIEW_WEBHOOK_URL = state.url
    settings.AGENTDESK_REVIEW_WEBHOOK_SECRET = SECRET
    settings.AGENTDESK_REVIEW_WEBHOOK_TIMEOUT_S = 5.0
    # The webhook task runs in this process, its retries at once (eager: no countdown).
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield state
    app.conf.task_always_eager = eager
    server.shutdown()
    server.server_close()


# --- people --------------------------------------------------------------------------------


@pytest.fixture
def queue(db: None) -> Queue:
    return Queue.objects.create(slug="refunds", name="Refunds", sla_minutes=30, remind_minutes=10)


@pytest.fixture
def deciders(queue: Queue) -> dict[str, User]:
    """Alice decides directly, Bob through a group; the others must get no mail."""
    leads = Group.objects.create(name="refund-leads")
    people = {
        name: User.objects.create_user(name, email=email, is_active=active)
        for name, email, active in [
            ("alice", "alice@example.com", True),
            ("bob", "bob@example.com", True),
            ("carol", "", True),  # may decide, has no mail
            ("victor", "victor@example.com", True),  # may only look
            ("dave", "dave@example.com", False),  # left the company
            ("oscar", "oscar@example.com", True),  # another queue
        ]
    }
    people["bob"].groups.add(leads)
    assign_perm("reviews.decide_queue", leads, queue)
    for name in ("alice", "carol", "dave"):
        assign_perm("reviews.decide_queue", people[name], queue)
    for name in ("alice", "bob", "carol", "victor"):
        assign_perm("reviews.view_queue", people[name], queue)
    other = Queue.objects.create(slug="other", name="Other")
    assign_perm("reviews.decide_queue", people["oscar"], other)
    return people


def _remind_at(request: ApprovalRequest) -> Any:
    return request.due_at - timedelta(minutes=request.queue.remind_minutes)


# --- reminders -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_reminder_is_mailed_once_to_the_deciders_with_a_mail(
    queue: Queue, deciders: dict[str, User], django_capture_on_commit_callbacks: Any
) -> None:
    request = pending_request(
        queue,
        arguments={"order_id": "SO-1002", "amount": "29.00", "reason": "line one\nline two"},
    )
    now = _remind_at(request) + timedelta(seconds=1)

    with freeze_time(now), django_capture_on_commit_callbacks(execute=True):
        assert tasks.approvals_remind() == 1
    with freeze_time(now + timedelta(minutes=1)), django_capture_on_commit_callbacks(execute=True):
        assert tasks.approvals_remind() == 0

    assert sorted(m.to[0] for m in mail.outbox) == ["alice@example.com", "bob@example.com"]
    assert [len(m.to) for m in mail.outbox] == [1, 1]
    message = mail.outbox[0]
    assert message.subject == "Due in 10 min: issue_refund in Refunds"
    assert "Tool:      issue_refund (irreversible)" in message.body
    assert (
        # In the order PostgreSQL's jsonb keeps the keys, as the inbox shows them.
        'Arguments: amount="29.00", reason="line one\\nline two", order_id="SO-1002"'
        in message.body
    )
    assert f"Due:       {request.due_at:%Y-%m-%d %H:%M} UTC" in message.body
    assert f"Decide: http://127.0.0.1:8000/inbox/requests/{request.pk}/" in message.body
    assert "it is rejected and the agent is told so" in message.body
    request.refresh_from_db()
    assert request.reminded_at == now
    event = AuditEvent.objects.get(verb="request.reminded")
    assert (event.object_id, event.actor_label) == (str(request.pk), "sla")


@pytest.mark.django_db
def test_no_reminder_before_its_time_nor_for_decided_or_overdue_requests(
    queue: Queue, deciders: dict[str, User], reviewer: User
) -> None:
    early = pending_request(queue)
    decided = pending_request(queue, due_at=early.due_at)
    decided.state = RequestState.APPROVED
    decided.save()
    overdue = pending_request(queue, due_at=timezone.now() - timedelta(seconds=1))

    with freeze_time(_remind_at(early) - timedelta(seconds=1)):
        assert notify.approvals_remind_due() == []
    with freeze_time(overdue.due_at + timedelta(seconds=1)):
        assert notify.approvals_remind_due() == []

    assert mail.outbox == []
    assert ApprovalRequest.objects.filter(reminded_at__isnull=False).count() == 0


@pytest.mark.django_db
def test_each_queue_has_its_own_reminder_time_and_a_zero_turns_it_off(
    queue: Queue, deciders: dict[str, User], django_capture_on_commit_callbacks: Any
) -> None:
    quiet = Queue.objects.create(slug="quiet", name="Quiet", sla_minutes=30, remind_minutes=0)
    eager = Queue.objects.create(slug="eager", name="Eager", sla_minutes=30, remind_minutes=25)
    due = timezone.now() + timedelta(minutes=30)
    requests = {q.slug: pending_request(q, due_at=due) for q in (queue, quiet, eager)}

    with freeze_time(due - timedelta(minutes=20)), django_capture_on_commit_callbacks(execute=True):
        assert notify.approvals_remind_due() == [requests["eager"].pk]
    with freeze_time(due - timedelta(minutes=5)), django_capture_on_commit_callbacks(execute=True):
        assert notify.approvals_remind_due() == [requests["refunds"].pk]


@pytest.mark.django_db
def test_an_escalated_request_is_reminded_again_in_its_new_queue(
    queue: Queue, deciders: dict[str, User], django_capture_on_commit_callbacks: Any
) -> None:
    senior = Queue.objects.create(slug="senior", name="Senior", sla_minutes=60, remind_minutes=15)
    assign_perm("reviews.decide_queue", deciders["victor"], senior)
    queue.escalate_to = senior
    queue.save()
    request = pending_request(queue)

    with freeze_time(_remind_at(request)), django_capture_on_commit_callbacks(execute=True):
        assert notify.approvals_remind_due() == [request.pk]
    swept = request.due_at + timedelta(seconds=1)
    with freeze_time(swept), django_capture_on_commit_callbacks(execute=True):
        assert tasks.approvals_expire() == 1
    request.refresh_from_db()
    assert (request.queue, request.reminded_at) == (senior, None)
    with (
        freeze_time(swept + timedelta(minutes=45)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert notify.approvals_remind_due() == [request.pk]

    assert [m.to[0] for m in mail.outbox] == [
        "alice@example.com",
        "bob@example.com",
        "victor@example.com",
    ]
    assert "it moves to Senior" in mail.outbox[0].body


@pytest.mark.django_db(transaction=True)
def test_concurrent_reminder_sweeps_remind_each_request_once() -> None:
    queue = Queue.objects.create(slug="q", name="Q", sla_minutes=30, remind_minutes=10)
    alice = User.objects.create_user("alice", email="alice@example.com")
    assign_perm("reviews.decide_queue", alice, queue)
    soon = timezone.now() + timedelta(minutes=5)
    requests = [pending_request(queue, due_at=soon) for _ in range(12)]

    reminded = in_threads(4, notify.approvals_remind_due)

    assert sorted(pk for ids in reminded for pk in ids) == sorted(r.pk for r in requests)
    assert len(mail.outbox) == 12
    assert AuditEvent.objects.filter(verb="request.reminded").count() == 12


# --- the webhook ---------------------------------------------------------------------------


def _verify(headers: dict[str, str], body: bytes) -> None:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Agentdesk-Signature"], expected)
    assert headers["X-Agentdesk-Timestamp"] == str(json.loads(body)["timestamp"])
    assert headers["Content-Type"] == "application/json"


@pytest.mark.django_db
def test_a_reminder_sends_a_signed_webhook(
    queue: Queue,
    deciders: dict[str, User],
    receiver: Receiver,
    django_capture_on_commit_callbacks: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = pending_request(queue)
    now = _remind_at(request)

    with freeze_time(now), django_capture_on_commit_callbacks(execute=True):
        assert tasks.approvals_remind() == 1

    [(headers, body)] = receiver.hits
    _verify(headers, body)
    payload = json.loads(body)
    assert payload == {
        "event": "request.due_soon",
        "event_id": payload["event_id"],
        "request_id": request.pk,
        "queue": "refunds",
        "agent": "support",
        "tool": "issue_refund",
        "risk": "irreversible",
        "due_at": request.due_at.isoformat(),
        "url": f"http://127.0.0.1:8000/inbox/requests/{request.pk}/",
        "timestamp": int(now.timestamp()),
    }
    assert len(payload["event_id"]) == 32
    assert len(mail.outbox) == 2
    assert SECRET not in caplog.text


@pytest.mark.django_db
def test_a_failing_webhook_is_retried_with_the_same_event(
    queue: Queue,
    deciders: dict[str, User],
    receiver: Receiver,
    django_capture_on_commit_callbacks: Any,
) -> None:
    receiver.statuses = [500, 503, 200]
    request = pending_request(queue)

    with freeze_time(_remind_at(request)), django_capture_on_commit_callbacks(execute=True):
        assert tasks.approvals_remind() == 1

    assert len(receiver.hits) == 3
    for headers, body in receiver.hits:
        _verify(headers, body)
    assert len({b["event_id"] for b in receiver.bodies()}) == 1
    assert len(mail.outbox) == 2


@pytest.mark.django_db
def test_a_webhook_that_keeps_failing_gives_up_and_never_breaks_the_sweep(
    queue: Queue,
    deciders: dict[str, User],
    receiver: Receiver,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver.statuses = [500]
    settings.AGENTDESK_REVIEW_WEBHOOK_RETRIES = 2
    first = pending_request(queue)
    second = pending_request(queue, due_at=first.due_at + timedelta(seconds=30))

    with (
        caplog.at_level(logging.INFO),
        freeze_time(_remind_at(second)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert tasks.approvals_remind() == 2

    assert len(receiver.hits) == 6  # two events, three attempts each
    assert len(mail.outbox) == 4
    assert ApprovalRequest.objects.filter(reminded_at__isnull=True).count() == 0
    gave_up = [r for r in caplog.records if "gave up" in r.getMessage()]
    assert [r.levelno for r in gave_up] == [logging.ERROR, logging.ERROR]
    assert "request.due_soon: HTTP 500" in gave_up[0].getMessage()
    assert SECRET not in caplog.text
    assert "chat-token" not in caplog.text


@pytest.mark.django_db
def test_a_refused_webhook_is_not_retried(
    queue: Queue, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.statuses = [410]
    request = pending_request(queue)
    payload = notify.event_payload("request.due_soon", request, queue=queue)

    tasks.review_webhook_send.delay(payload)

    assert len(receiver.hits) == 1
    assert "review webhook refused request.due_soon: HTTP 410" in caplog.text


def test_an_unreachable_webhook_is_a_retryable_failure_without_the_url(settings: Any) -> None:
    settings.AGENTDESK_REVIEW_WEBHOOK_URL = "http://127.0.0.1:9/secret-token"  # discard port
    settings.AGENTDESK_REVIEW_WEBHOOK_SECRET = SECRET

    with pytest.raises(webhook.WebhookFailed) as failed:
        webhook.webhook_post({"event": "request.due_soon", "request_id": 1})

    assert str(failed.value) == "request.due_soon: URLError"


@pytest.mark.django_db
def test_the_sla_sweep_announces_escalations_and_expiries_once(
    queue: Queue,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    monkeypatch.setattr("runs.tasks.run_step.apply_async", lambda *a, **k: None)
    senior = Queue.objects.create(slug="senior", name="Senior", sla_minutes=60)
    queue.escalate_to = senior
    queue.save()
    alone = Queue.objects.create(slug="alone", name="Alone", expiry_outcome="approve")
    overdue = timezone.now() - timedelta(seconds=1)
    moving = pending_request(queue, due_at=overdue)
    ending = pending_request(alone, due_at=overdue - timedelta(seconds=1))
    not_yet = pending_request(queue)

    with freeze_time(timezone.now()) as frozen, django_capture_on_commit_callbacks(execute=True):
        assert tasks.approvals_expire() == 2
        assert tasks.approvals_expire() == 0

    moving.refresh_from_db()
    bodies = sorted(receiver.bodies(), key=lambda b: b["request_id"])
    for headers, body in receiver.hits:
        _verify(headers, body)
    assert [(b["event"], b["request_id"]) for b in bodies] == [
        ("request.escalated", moving.pk),
        ("request.expired", ending.pk),
    ]
    assert bodies[0]["queue"] == "senior"
    assert bodies[0]["from_queue"] == "refunds"
    assert bodies[0]["due_at"] == moving.due_at.isoformat()
    assert bodies[0]["reason"] == "not decided within 30 minutes in Refunds"
    assert bodies[1]["queue"] == "alone"
    assert bodies[1]["outcome"] == "approve"
    assert bodies[1]["timestamp"] == int(frozen().timestamp())
    not_yet.refresh_from_db()
    assert not_yet.decisions.count() == 0
    assert moving.decisions.get().kind == DecisionKind.ESCALATE


@pytest.mark.django_db
def test_no_webhook_is_sent_when_none_is_configured(
    queue: Queue,
    deciders: dict[str, User],
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    request = pending_request(queue)
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(tasks.review_webhook_send, "delay", sent.append)

    with freeze_time(_remind_at(request)), django_capture_on_commit_callbacks(execute=True):
        assert tasks.approvals_remind() == 1

    assert sent == []
    assert len(mail.outbox) == 2
