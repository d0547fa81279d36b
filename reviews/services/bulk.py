"""Deciding several requests at once: a bulk approval, all or nothing."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction

from reviews.models import ApprovalRequest, DecisionKind, RequestOutcome
from reviews.services.deciding import Outcome, _add_approval, _after_approval
from reviews.services.refusals import (
    AlreadyDecided,
    DecisionRefused,
    _duty_audited,
    _refuse_own_run,
)


class BulkRefused(DecisionRefused):
    pass


@_duty_audited(DecisionKind.APPROVE)
def approval_bulk_approve(
    *, request_ids: list[int], user: User, seen_hashes: dict[int, str]
) -> list[Outcome]:
    """Approve several low-risk requests of one tool under one rule, all or nothing.

    Refused when they mix tools or rules, when one is irreversible or needs more than one
    approver, or when one was decided or edited meanwhile.
    """
    if not request_ids:
        raise BulkRefused("Select at least one request.")
    with transaction.atomic():
        requests = list(
            ApprovalRequest.objects.select_for_update(of=("self", "run"))
            .select_related("queue", "run")
            .filter(pk__in=request_ids)
            .order_by("pk")
        )
        if len(requests) != len(set(request_ids)):
            raise BulkRefused("Some of the selected requests do not exist.")
        if len({(r.tool, r.rule) for r in requests}) != 1:
            raise BulkRefused("Bulk approval takes requests of one tool under one rule only.")
        for request in requests:
            if (
                request.is_run_escalation
                or request.risk == "irreversible"
                or request.approvals_required > 1
            ):
                raise BulkRefused(
                    "Bulk approval is for low-risk requests: irreversible calls and "
                    "two-person rules are decided one by one."
                )
            if not request.is_pending:
                raise AlreadyDecided(request)
            if seen_hashes.get(request.pk) != request.args_hash:
                raise BulkRefused(f"Request {request.pk} changed since you saw it.")
            _refuse_own_run(request, user)
        return [
            _after_approval(
                request,
                _add_approval(request, user, DecisionKind.APPROVE, None, "bulk approval"),
                outcome=RequestOutcome.APPROVED,
            )
            for request in requests
        ]
