"""The SLA clock: overdue requests escalate along their queue's chain or take its outcome.

A request decided by the clock closes like one a person decided
(reviews.services.deciding._complete), with ``SLA`` as the actor's label.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from audit.log import audit_record
from audit.models import AuditVerb
from reviews.models import (
    ApprovalRequest,
    Decision,
    DecisionKind,
    ExpiryOutcome,
    RequestOutcome,
    RequestState,
)
from reviews.services.deciding import SLA, _complete, _decision_create, _file_candidate, _move
from reviews.services.opening import _agent_sla_minutes

log = logging.getLogger(__name__)


def approvals_expire_overdue(*, limit: int = 200) -> list[Decision]:
    """Escalate or decide requests past their due time; return the decisions it made.

    Safe on several beat hosts at once: each request is locked and re-checked, and a
    request another sweep (or a reviewer deciding right now) holds is skipped
    (``skip_locked``); the next sweep sees it again if it is still pending.
    """
    handled: list[Decision] = []
    now = timezone.now()
    ids = list(
        ApprovalRequest.objects.filter(state=RequestState.PENDING, due_at__lt=now)
        .order_by("due_at")
        .values_list("pk", flat=True)[:limit]
    )
    for request_id in ids:
        with transaction.atomic():
            request = (
                ApprovalRequest.objects.select_for_update(skip_locked=True, of=("self", "run"))
                .select_related("queue", "run", "queue__escalate_to")
                .filter(pk=request_id, state=RequestState.PENDING, due_at__lt=now)
                .first()
            )
            if request is None:
                continue
            handled.append(_expire(request))
    return handled


def _expire(request: ApprovalRequest) -> Decision:
    """Escalate an overdue request to its queue's next queue, or apply the expiry outcome.

    A queue it already passed through does not take it again: escalation chains that loop
    (A → B → A) end in the expiry outcome instead of circling forever.
    """
    queue = request.queue
    target = queue.escalate_to
    visited = set(
        request.decisions.filter(kind=DecisionKind.ESCALATE).values_list("from_queue", flat=True)
    )
    # In its first queue the request was due after the agent's SLA, if its version set one.
    minutes = (None if visited else _agent_sla_minutes(request.run)) or queue.sla_minutes
    reason = f"not decided within {minutes} minutes in {queue.name}"
    if target is not None and target.tier < request.required_tier:
        # A chain that leads down would lower the authority the request needs: it stays,
        # and takes its queue's expiry outcome.
        log.warning(
            "request %s: %s escalates to %s, below the tier it needs (%s); not moved",
            request.pk,
            queue.slug,
            target.slug,
            request.required_tier,
        )
        target = None
    if target is not None and target.pk not in visited:
        decision = _decision_create(
            request=request,
            kind=DecisionKind.ESCALATE,
            args_hash=request.args_hash,
            reason=reason,
            from_queue=queue,
            to_queue=target,
        )
        _move(request, target, actor=None, reason=reason)
        return decision
    approve = queue.expiry_outcome == ExpiryOutcome.APPROVE
    decision = _decision_create(
        request=request,
        kind=DecisionKind.EXPIRE,
        args_hash=request.args_hash,
        reason=reason,
        from_queue=queue,
    )
    if not approve:
        request.feedback = (
            f"No reviewer decided in time ({reason})."
            if request.is_run_escalation
            else f"No reviewer approved this call in time ({reason}). Do not retry it."
        )
    audit_record(
        actor=None,
        actor_label=SLA,
        verb=AuditVerb.REQUEST_EXPIRED,
        object_type="approval_request",
        object_id=str(request.pk),
        after={"outcome": queue.expiry_outcome, "reason": reason},
        trace_id=request.run.trace_id,
    )
    _complete(
        request,
        RequestState.EXPIRED,
        outcome=RequestOutcome.EXPIRED_APPROVED if approve else RequestOutcome.EXPIRED_REJECTED,
        actor=None,
    )
    if not request.is_run_escalation:
        # The default that ran is a correction nobody made: curators see it and decide.
        _file_candidate(request, decision)
    return decision


def approval_is_granted(request: ApprovalRequest) -> bool:
    """Whether the worker may execute the request's arguments."""
    return (
        request.state == RequestState.APPROVED or request.outcome == RequestOutcome.EXPIRED_APPROVED
    )
