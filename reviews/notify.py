"""Telling people about the SLA clock: reminders by email, and a signed webhook.

Three things happen here, each safe on several beat hosts at once:

1. ``approvals_remind_due`` finds pending requests whose reminder time (due time minus the
   queue's ``remind_minutes``) has come, marks each one reminded with a compare-and-set
   ``UPDATE ... WHERE reminded_at IS NULL`` and, once that commits, mails everyone who may
   decide in its queue and enqueues a ``request.due_soon`` webhook. Only the sweep whose
   update changed the row sends, so each request is reminded once per queue it waits in
   (an escalation clears ``reminded_at``). The mark commits before the mail goes out: a
   process that dies in between loses that reminder, never sends it twice.
2. ``approvals_expire_announced`` runs the SLA sweep of reviews.services.expiry and announces each
   escalation or expiry it made (``request.escalated``, ``request.expired``): the service
   returns exactly the decisions this sweep committed, so each is announced once even when
   two beat hosts tick together.
3. Each event goes to the webhook in its own Celery task (reviews.webhook: signed with
   HMAC-SHA256 over the exact body bytes, retried with backoff), so a receiver that is
   down never holds up a sweep.

Secrets never reach a log line: not the webhook secret, and not the webhook URL either
(chat tools put their tokens in it).
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from guardian.shortcuts import get_users_with_perms

from audit.log import audit_record
from audit.models import AuditVerb
from reviews.models import (
    ApprovalRequest,
    Decision,
    DecisionKind,
    ExpiryOutcome,
    Queue,
    RequestOutcome,
    RequestState,
)
from reviews.services.expiry import approvals_expire_overdue
from reviews.webhook import webhook_enqueue

log = logging.getLogger(__name__)

SUMMARY_MAX = 160


# --- who and what ----------------------------------------------------------------------------


def request_url(request_id: int) -> str:
    """The request's page in the inbox, for people following a link from mail or chat."""
    return f"{settings.AGENTDESK_BASE_URL}/inbox/requests/{request_id}/"


def queue_deciders(queue: Queue) -> QuerySet[User]:
    """Active users who may decide in the queue (directly or through a group), with a mail."""
    users = get_users_with_perms(queue, only_with_perms_in=["decide_queue"], with_group_users=True)
    assert isinstance(users, QuerySet)  # attach_perms=False: a queryset of users
    return users.filter(is_active=True).exclude(email="").order_by("pk")


def arguments_summary(arguments: dict[str, Any], *, limit: int = SUMMARY_MAX) -> str:
    """One line: ``name=value`` pairs as JSON, so newlines in model output stay escaped."""
    line = ", ".join(
        f"{name}={json.dumps(value, ensure_ascii=False, default=str)}"
        for name, value in arguments.items()
    )
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _when(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M %Z")


# --- reminders -------------------------------------------------------------------------------


def approvals_remind_due(*, limit: int = 200) -> list[int]:
    """Mark and remind the pending requests whose reminder time has come; their ids.

    A request is due for its reminder when ``due_at - queue.remind_minutes <= now <
    due_at``: an overdue request is the expiry sweep's, and ``remind_minutes = 0`` turns
    reminders off for a queue.
    """
    now = timezone.now()
    # One condition per distinct reminder interval (queues share a few): portable to
    # SQLite, which cannot multiply an interval in SQL, and served by the pending index.
    windows = Q()
    for minutes in (
        Queue.objects.filter(remind_minutes__gt=0)
        .values_list("remind_minutes", flat=True)
        .distinct()
    ):
        windows |= Q(queue__remind_minutes=minutes, due_at__lte=now + timedelta(minutes=minutes))
    if not windows:
        return []
    due = list(
        ApprovalRequest.objects.filter(
            windows, state=RequestState.PENDING, reminded_at__isnull=True, due_at__gt=now
        )
        .order_by("due_at", "pk")
        .values_list("pk", "due_at")[:limit]
    )
    reminded = []
    for request_id, due_at in due:
        with transaction.atomic():
            # Compare-and-set: of two sweeps, one changes the row. ``due_at`` in the condition
            # leaves alone a request that was escalated (and given a new due time) meanwhile.
            won = ApprovalRequest.objects.filter(
                pk=request_id,
                state=RequestState.PENDING,
                reminded_at__isnull=True,
                due_at=due_at,
            ).update(reminded_at=now)
            if not won:
                continue
            request = ApprovalRequest.objects.select_related("queue", "run").get(pk=request_id)
            audit_record(
                actor=None,
                actor_label="sla",
                verb=AuditVerb.REQUEST_REMINDED,
                object_type="approval_request",
                object_id=str(request_id),
                after={
                    "queue": request.queue.slug,
                    "due_at": due_at.isoformat(),
                    "remind_minutes": request.queue.remind_minutes,
                },
                trace_id=request.run.trace_id,
            )
            # Each on its own: a mail server that is down does not cost the webhook.
            if settings.AGENTDESK_REVIEW_WEBHOOK_URL:
                payload = event_payload("request.due_soon", request, queue=request.queue)
                transaction.on_commit(partial(webhook_enqueue, payload), robust=True)
            transaction.on_commit(partial(reminder_mail_send, request_id), robust=True)
        reminded.append(request_id)
    return reminded


def reminder_mail_send(request_id: int) -> int:
    """Mail the reminder of one request to each decider of its queue; how many were sent.

    One message per person, so nobody learns who else reviews the queue.
    """
    request = ApprovalRequest.objects.select_related("queue__escalate_to").get(pk=request_id)
    queue = request.queue
    recipients = list(queue_deciders(queue).values_list("email", flat=True))
    if not recipients:
        log.warning(
            "request %s is due soon, but nobody with a mail may decide in %s",
            request_id,
            queue.slug,
        )
        return 0
    minutes = max(0, round((request.due_at - timezone.now()).total_seconds() / 60))
    # A request without a tool is a run waiting for a person as a whole (no call to judge).
    what = request.tool or "a run that needs a person"
    subject = f"Due in {minutes} min: {what} in {queue.name}"
    body = "\n".join(
        [
            f"A request in the queue {queue.name} is due {_when(request.due_at)} "
            f"(in {minutes} minutes).",
            "",
            f"Agent:     {request.agent_name}",
            f"Tool:      {request.tool} ({request.risk})" if request.tool else "Tool:      none",
            f"Arguments: {arguments_summary(request.arguments) or '-'}",
            f"Due:       {_when(request.due_at)}",
            "",
            f"Decide: {request_url(request_id)}",
            "",
            _after_due(queue),
        ]
    )
    messages = [EmailMessage(subject=subject, body=body, to=[address]) for address in recipients]
    sent = get_connection(fail_silently=False).send_messages(messages) or 0
    log.info("reminded %s deciders of request %s in %s", sent, request_id, queue.slug)
    return sent


def _after_due(queue: Queue) -> str:
    if queue.escalate_to is not None:
        return f"If nobody decides by then, it moves to {queue.escalate_to.name}."
    if queue.expiry_outcome == ExpiryOutcome.APPROVE:
        return "If nobody decides by then, it is approved as proposed."
    return "If nobody decides by then, it is rejected and the agent is told so."


# --- the expiry sweep, announced -----------------------------------------------------------


def approvals_expire_announced(*, limit: int = 200) -> int:
    """Run the SLA sweep and announce each escalation and expiry it made; how many it made."""
    decisions = approvals_expire_overdue(limit=limit)
    if decisions and settings.AGENTDESK_REVIEW_WEBHOOK_URL:
        sla_decisions_announce(decision_ids=[decision.pk for decision in decisions])
    return len(decisions)


def sla_decisions_announce(*, decision_ids: list[int]) -> int:
    """Enqueue a webhook for each of these decisions of the SLA clock."""
    decisions = (
        Decision.objects.filter(
            pk__in=decision_ids,
            decided_by__isnull=True,
            kind__in=[DecisionKind.ESCALATE, DecisionKind.EXPIRE],
        )
        .select_related("request", "from_queue", "to_queue")
        .order_by("pk")
    )
    count = 0
    for decision in decisions:
        request = decision.request
        if decision.kind == DecisionKind.ESCALATE and decision.to_queue is not None:
            payload = event_payload(
                "request.escalated",
                request,
                queue=decision.to_queue,
                from_queue=decision.from_queue.slug if decision.from_queue else None,
                reason=decision.reason,
            )
        else:
            payload = event_payload(
                "request.expired",
                request,
                queue=decision.from_queue or request.queue,
                outcome=(
                    ExpiryOutcome.APPROVE
                    if request.outcome == RequestOutcome.EXPIRED_APPROVED
                    else ExpiryOutcome.REJECT
                ),
                reason=decision.reason,
            )
        webhook_enqueue(payload)
        count += 1
    return count


# --- the webhook's events (reviews.webhook sends them) -----------------------------------


def event_payload(
    event: str, request: ApprovalRequest, *, queue: Queue, **extra: Any
) -> dict[str, Any]:
    """The JSON of one event. ``event_id`` stays the same across retries, for deduplication."""
    return {
        "event": event,
        "event_id": uuid.uuid4().hex,
        "request_id": request.pk,
        "queue": queue.slug,
        "agent": request.agent_name,
        "tool": request.tool,
        "risk": request.risk,
        "due_at": request.due_at.isoformat(),
        "url": request_url(request.pk),
        **extra,
    }
