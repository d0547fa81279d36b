"""Why a decision is refused: the refusals every decision raises, and separation of duties.

Shared by the single decisions (reviews.services.deciding) and the bulk one
(reviews.services.bulk): a refusal saves nothing, and a refusal for separation of duties
is audited after its transaction rolled back (``_duty_audited``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from audit.log import audit_record
from audit.models import AuditVerb
from reviews.models import ApprovalRequest, DecisionKind


class DecisionRefused(Exception):
    """A decision that cannot be taken; nothing was saved. ``message`` says why."""

    def __init__(self, message: str, *, field_errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field_errors = field_errors or {}


class AlreadyDecided(DecisionRefused):
    """Someone else decided first; ``request`` is the decided request."""

    def __init__(self, request: ApprovalRequest) -> None:
        who = request.decisions.exclude(kind=DecisionKind.ESCALATE).last()
        by = who.decided_by.get_username() if who and who.decided_by else "the SLA clock"
        when = (
            timezone.localtime(request.decided_at).strftime("%H:%M:%S")
            if request.decided_at
            else ""
        )
        super().__init__(f"Already {request.outcome.replace('_', ' ')} by {by} at {when}.")
        self.request = request


class DutyRefused(DecisionRefused):
    """Separation of duties (invariant 14): this person may not take this decision.

    Audited as ``request.decision_refused`` (``_duty_audited``); nothing else changes.
    ``rule``: "submitter" (their own run) or "second_approval" (they approved already).
    """

    def __init__(self, message: str, *, request: ApprovalRequest, rule: str) -> None:
        super().__init__(message)
        self.request_id = request.pk
        self.trace_id = request.run.trace_id
        self.rule = rule


P = ParamSpec("P")
R = TypeVar("R")


def _duty_audited(kind: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Record a decision refused for separation of duties, after its transaction rolled back.

    The refusal is raised inside the decision's transaction (which undoes whatever it
    had begun); its audit event is written here, in a transaction of its own, so that
    it stays.
    """

    def wrap(decide: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(decide)
        def audited(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return decide(*args, **kwargs)
            except DutyRefused as exc:
                with transaction.atomic():
                    audit_record(
                        actor=kwargs["user"],  # type: ignore[arg-type]
                        verb=AuditVerb.REQUEST_DECISION_REFUSED,
                        object_type="approval_request",
                        object_id=str(exc.request_id),
                        after={"decision": str(kind), "rule": exc.rule, "reason": exc.message},
                        trace_id=exc.trace_id,
                    )
                raise

        return audited

    return wrap


def decider_barrier(*, request: ApprovalRequest, user: Any) -> str:
    """Why ``user``, whose permissions let them decide ``request``, still may not; "" if not.

    Nobody decides a request of a run they submitted, unless its queue lets submitters
    decide; never a request that needs more than one approver (its approvers are
    distinct people and none of them submitted the run). Escalating is not deciding:
    it only moves the request to other people, so a submitter may do it.
    """
    submitter = request.run.submitted_by_id
    if submitter is None or submitter != getattr(user, "pk", None):
        return ""
    if request.approvals_required > 1:
        return (
            "You submitted this run: a request that needs several approvers is decided by "
            "people other than the run's submitter. Escalate it, or ask another reviewer."
        )
    if not request.queue.submitter_may_decide:
        return (
            f"You submitted this run: in {request.queue.name} someone else decides its "
            "requests. Escalate it, or ask another reviewer."
        )
    return ""


def _refuse_own_run(request: ApprovalRequest, user: User) -> None:
    """DutyRefused where ``decider_barrier`` names a reason; call after ``_locked_pending``."""
    barrier = decider_barrier(request=request, user=user)
    if barrier:
        raise DutyRefused(barrier, request=request, rule="submitter")
