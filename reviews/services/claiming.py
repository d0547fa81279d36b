"""Claiming a pending request: an advisory mark that a reviewer is on it."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from audit.log import audit_record
from audit.models import AuditVerb
from reviews.broadcast import queue_changed
from reviews.models import ApprovalRequest

CLAIM_MINUTES = 5


def approval_claim(*, request_id: int, user: User) -> ApprovalRequest:
    """Claim a pending request for CLAIM_MINUTES, unless someone else holds a live claim.

    Claims are advisory: they tell others who is on it; anyone allowed may still decide.
    Claiming one request releases the user's claims on any others.
    """
    now = timezone.now()
    with transaction.atomic():
        request = ApprovalRequest.objects.select_for_update().get(pk=request_id)
        if not request.is_pending:
            return request
        held = request.claimed_until is not None and request.claimed_until > now
        if held and request.claimed_by_id not in (None, user.pk):
            return request
        request.claimed_by = user
        request.claimed_until = now + timedelta(minutes=CLAIM_MINUTES)
        request.save(update_fields=["claimed_by", "claimed_until"])
        # A reviewer is on one request at a time: opening the next one frees the last.
        released = list(
            ApprovalRequest.objects.filter(claimed_by=user, claimed_until__gt=now)
            .exclude(pk=request.pk)
            .values_list("pk", "queue_id")
        )
        if released:
            ApprovalRequest.objects.filter(pk__in=[pk for pk, _ in released]).update(
                claimed_until=None
            )
            for pk, queue_id in released:
                queue_changed(queue_id=queue_id, request_id=pk, event="released")
        if not held:
            audit_record(
                actor=user,
                verb=AuditVerb.REQUEST_CLAIMED,
                object_type="approval_request",
                object_id=str(request.pk),
                after={"claimed_until": request.claimed_until.isoformat()},
                trace_id=request.run.trace_id,
            )
            queue_changed(queue_id=request.queue_id, request_id=request.pk, event="claimed")
    return request
